"""Time audio ingestion and Whisper transcription on this machine (a benchmark, not a test).

    python bench/bench_asr.py                      # offline default + openai-whisper tiny.en
    python bench/bench_asr.py --repeats 7 --asr faster-whisper=/path/to/ct2-model

Prints the median wall time over --repeats runs (after one warm-up) for a 5 s and a 30 s
clip of espeak-ng speech (and, for transcription, the CPU time, which other work on the
machine barely changes), then the process's peak resident memory. faster-whisper is timed with
its window fitted to the clip (the default), then with Whisper's 30 s window. Target: the offline
default transcribes the 5 s clip in under 0.6 s on 2 CPU cores.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ser_demo.asr import TranscriptionUnavailable, load_transcriber  # noqa: E402
from ser_demo.audio import SAMPLE_RATE  # noqa: E402
from ser_demo.ingest import load_audio  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
PARAGRAPH = (
    "I am so happy to see you again after all these years. My brother bought a new car last "
    "week, and we drove it to the sea on Sunday. The children played in the garden until dinner "
    "was ready. Thank you very much for your help this morning. I really love listening to music "
    "in the evening, when the house is quiet and the day's work is done."
)
DEFAULT_ASR = ["faster-whisper=", "openai-whisper=tiny.en"]  # "=": the backend's default model


def speech_clip(seconds: float) -> np.ndarray:
    """`seconds` of speech at 16 kHz: espeak-ng reading PARAGRAPH, or the test fixtures."""
    if shutil.which("espeak-ng"):
        wav = subprocess.run(["espeak-ng", "--stdout", PARAGRAPH], capture_output=True, check=True).stdout
        pieces = [load_audio(wav, max_seconds=None, normalize=False)]
    else:
        pieces = [load_audio(path, normalize=False) for path in sorted(FIXTURES.glob("*.flac"))]
    speech = np.concatenate(pieces)
    return np.resize(speech, int(seconds * SAMPLE_RATE)).astype(np.float32)  # repeats if short


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time (all threads) of `fn()`.

    CPU time is nearly unaffected by other processes on the machine; wall time is not.
    """
    fn()  # warm-up: first-call costs (allocations, JIT) are not what a served request pays
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def ingestion_inputs(clip: np.ndarray, folder: Path) -> dict[str, object]:
    """The clip as the app receives it: an upload, a browser recording, a microphone array."""
    import soxr

    stereo_44k = soxr.resample(clip, SAMPLE_RATE, 44100)
    stereo_44k = np.round(np.stack([stereo_44k, stereo_44k], axis=1) * 32767 * 0.9).astype(np.int16)
    wav = folder / "upload-44k-stereo.wav"
    sf.write(wav, stereo_44k, 44100)
    mic = soxr.resample(clip, SAMPLE_RATE, 48000)
    inputs = {
        "wav 44.1k stereo file": wav,
        "gradio (48k, int16)": (48000, np.round(mic * 32767 * 0.9).astype(np.int16)),
    }
    if shutil.which("ffmpeg"):
        webm = folder / "browser-48k.webm"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-ar", "48000", "-c:a", "libopus",
             str(webm)],
            check=True,
        )
        inputs["webm/opus file (ffmpeg)"] = webm
    return inputs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 30.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--asr", nargs="+", default=DEFAULT_ASR, metavar="BACKEND=MODEL",
        help="backends and models to time; an empty MODEL means the backend's default",
    )
    args = parser.parse_args()

    print(f"CPU cores: {os.cpu_count()}, repeats: {args.repeats} (median after one warm-up)")
    # other work on the machine slows every figure below; the load average shows how much
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    # ser_demo/__init__ imports torch (the emotion model), which every ser_demo process pays
    print(f"peak memory after imports: {peak_memory_mib():.0f} MiB")
    clips = {seconds: speech_clip(seconds) for seconds in args.seconds}

    with tempfile.TemporaryDirectory() as folder:
        print("\ningestion -> float32 mono 16 kHz")
        for seconds, clip in clips.items():
            for name, source in ingestion_inputs(clip, Path(folder)).items():
                took, _ = median_seconds(lambda: load_audio(source, max_seconds=None), args.repeats)
                print(f"  {seconds:4.0f} s clip  {name:26s} {took * 1000:8.1f} ms")
    print(f"  peak memory so far: {peak_memory_mib():.0f} MiB")

    print("\ntranscription")
    for spec in args.asr:
        backend, _, model = spec.partition("=")
        try:
            start = time.perf_counter()
            transcriber = load_transcriber(backend, model or None)
            loaded = time.perf_counter() - start
        except TranscriptionUnavailable as error:
            print(f"  {backend} {model or '(default)'}: {error}")
            continue
        print(f"  {backend} {transcriber.model_name}: loaded in {loaded:.2f} s")
        fitted = getattr(transcriber, "window_padding", None)  # faster-whisper: then the 30 s window too
        for padding in [fitted, None] if fitted is not None else [None]:
            if fitted is not None:
                transcriber.window_padding = padding
                print(f"  window: {'the clip + %g s' % padding if padding is not None else '30 s'}")
            for seconds, clip in clips.items():
                took, cpu = median_seconds(lambda: transcriber.transcribe(clip), args.repeats)
                words = len(transcriber.transcribe(clip).words)
                print(
                    f"  {seconds:4.0f} s clip  {took:6.2f} s wall  {cpu:6.2f} s CPU  "
                    f"({took / seconds:.3f} x real time, {words} words)"
                )
        if fitted is not None:
            transcriber.window_padding = fitted
        print(f"  peak memory so far: {peak_memory_mib():.0f} MiB")

    print(f"\npeak memory (max RSS of this process): {peak_memory_mib():.0f} MiB")


if __name__ == "__main__":
    main()
