"""Benchmark of emotion over time: `python bench/bench_timeline.py [--live-seconds 120] [--minutes 5]
[--files 100] [--whisper-files 20] [--workers 1 2] [--only live|long|batch|stages] [--checkpoint DIR]`.

Prints
  - live: a microphone stream fed in real time (0.5 s chunks at 48 kHz, as the browser sends
    them) to the app's LiveTimeline with Whisper transcribing beside it: for each chart point, the
    delay between the moment the audio it describes had been spoken and the moment the point
    was ready; median, 95th percentile and maximum, over the first and the last 30 s (a growing
    lag would show as a larger last-30-s figure). Target: every point <= 1 s.
  - long: `timeline()` with Whisper on a 5-minute recording (real SAVEE, RAVDESS and TESS
    clips joined with pauses when ../shared/data is there, else the committed sentences; see
    `sentences` and --speech), seconds and fraction of real time. Target: <= 60 s (0.2 x real time).
  - batch: `python -m ser_demo predict FOLDER --modality audio`'s loop over 5-second files,
    files per second, without Whisper and (on fewer files) with it. Target: >= 20 files/s.
Network and browser time are not included in the live figure (the browser test shows the chart
does update while speaking). Each figure comes with the CPU time it took (all threads of this
process) and the machine's load average, since the machine is shared; the encoder passes are
counted (Whisper's windows, padded to 30 s or fitted to an utterance, and the passes over a clip
alone of a checkpoint with encoder context "clip"), and `stages` prints where one file's time goes. `--checkpoint DIR` (else $SER_CHECKPOINT, else the bundled one)
chooses the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = ROOT.parent / "shared" / "data"
RATE = 16000


def load() -> str:
    return "load average %.1f" % os.getloadavg()[0]


class Clock:
    """Wall and CPU seconds (all threads of this process) since it was made."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def count_encoder_passes(recognizer):
    """A fresh `EncoderPassCounter` on the recognizer's Whisper, or None without one."""
    from ser_demo.encoder import EncoderPassCounter

    whisper = recognizer.encoder.whisper if recognizer.encoder is not None else None
    return None if whisper is None else EncoderPassCounter.install(whisper)


def passes(counter) -> str:
    """The passes a fresh counter saw, for the figure's line ("" without Whisper)."""
    if counter is None:
        return ""
    return (f", encoder passes: {counter.windows} over a Whisper window (30 s, or fitted), "
            f"{counter.clips} over a clip alone")


def sentences(speech: str = "varied") -> list:
    """Real speech clips (float32 16 kHz) from ../shared/data when it is there, else the committed
    sentences. "varied": SAVEE's many sentences shuffled with RAVDESS and TESS clips, as someone
    talking seldom says the same sentence twice in a row. "repeated": RAVDESS actors 01-04 (two
    sentences between them) then TESS, the same words over and over; whole Whisper windows of one
    repeated sentence pass its compression-ratio check for a decoding loop, so each is decoded
    again at every fallback temperature (5 times the CPU on the timeline's 28 s windows)."""
    import random

    import numpy as np
    import soundfile as sf

    paths = sorted(SHARED.glob("ravdess/Actor_0[1-4]/*.flac")) + sorted(SHARED.glob("tess/*/*.wav"))[::40]
    if speech == "varied":
        paths += sorted(SHARED.glob("savee/*.flac"))
        random.Random(0).shuffle(paths)
    paths = paths or sorted((ROOT / "tests" / "fixtures").glob("*.flac")) + [ROOT / "tests" / "fixtures" / "speech.wav"]
    return [sf.read(p, dtype="float32")[0].astype(np.float32) for p in paths]


def recording(seconds: float, pause: float = 0.8, speech: str = "varied"):
    import numpy as np

    clips, parts, total, i = sentences(speech), [], 0, 0
    gap = np.zeros(int(pause * RATE), np.float32)
    while total < seconds * RATE:
        parts += [clips[i % len(clips)], gap]
        total += len(clips[i % len(clips)]) + len(gap)
        i += 1
    return np.concatenate(parts)[: int(seconds * RATE)]


def bench_live(recognizer, transcriber, seconds: float) -> None:
    import numpy as np
    import soxr

    from ser_demo.live import LiveTimeline
    from timeline_tab import POINT_WAIT

    mic = (soxr.resample(recording(seconds, pause=1.2), RATE, 48000) * 20000).astype(np.int16)
    chunk = 24000  # 0.5 s at 48 kHz, what Gradio's stream_every=0.5 delivers
    warm_up = LiveTimeline(recognizer, None)  # one-off set-up (librosa's compiled kernels), as the app's start-up does
    for k in range(0, 6 * 48000, chunk):
        warm_up.feed(mic[k:k + chunk], 48000, wait=POINT_WAIT)
    warm_up.finish()
    counter = count_encoder_passes(recognizer)
    live = LiveTimeline(recognizer, transcriber, max_seconds=seconds + 1)
    lags, clock = [], Clock()
    start = clock.wall
    for k in range(0, len(mic), chunk):
        arrives = start + (k + chunk) / 48000  # the chunk is complete in the browser at this moment
        time.sleep(max(0.0, arrives - time.perf_counter()))
        for point in live.feed(mic[k:k + chunk], 48000, wait=POINT_WAIT):  # as the app's handler calls it
            lags.append((point.time, time.perf_counter() - (start + point.time)))
    live.finish(timeout=60)
    wall, cpu = clock.seconds()
    first = [lag for t, lag in lags if t <= 30]
    last = [lag for t, lag in lags if t > seconds - 30]

    def stats(values):
        values = sorted(values)
        if not values:
            return "none"
        return (f"median {statistics.median(values) * 1000:.0f} ms, p95 {values[int(0.95 * (len(values) - 1))] * 1000:.0f} ms, "
                f"max {values[-1] * 1000:.0f} ms")

    print(f"live, {seconds:.0f} s stream, {len(lags)} points: all {stats([l for _, l in lags])}; "
          f"first 30 s {stats(first)}; last 30 s {stats(last)}; "
          f"{sum(l > 1.0 for _, l in lags)} points over 1 s; transcript {len(live.transcript.split())} words; "
          f"{cpu:.1f} s CPU in {wall:.1f} s{passes(counter)} ({load()})", flush=True)


def bench_long(recognizer, minutes: float, speech: str) -> None:
    from ser_demo.timeline import timeline

    audio = recording(minutes * 60, speech=speech)
    counter = count_encoder_passes(recognizer)
    calls, clock = [], Clock()
    result = timeline(recognizer, audio, RATE, modality="both", progress=lambda f, m: calls.append(f))
    wall, cpu = clock.seconds()
    spoken = [s for s in result.segments if s.kind == "speech"]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    print(f"long, {result.duration:.0f} s recording ({speech} sentences) with Whisper: {wall:.1f} s = {wall / result.duration:.3f} x real time, "
          f"{cpu:.1f} s CPU ({timings}); {len(spoken)} utterances{passes(counter)}, "
          f"{len(calls)} progress updates ({load()})", flush=True)


def bench_stages(recognizer, path: str, repeats: int = 5) -> None:
    """Where one file's time goes in `predict --modality audio`, stage by stage (CPU seconds)."""
    import torch
    from threadpoolctl import threadpool_limits

    from ser_demo.audio import mfcc_features
    from ser_demo.ingest import load_audio

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as predict_rows runs
    blas = threadpool_limits(1)
    audio = load_audio(path, trim_silence=True)
    encoded = recognizer.encoder.encode(audio) if recognizer.encoder is not None else None
    inputs = recognizer.prepare(audio, None, "audio", encoded)
    stages = {
        "decode + trim": lambda: load_audio(path, trim_silence=True),
        "Whisper encoder pass": (lambda: recognizer.encoder.encode(audio)) if encoded is not None else None,
        "MFCC": lambda: mfcc_features(audio, recognizer.feature_params),
        "speaker embedding": (lambda: recognizer.speaker_embedder.embed(audio)) if recognizer.speaker_embedder else None,
        "features -> batch (all of prepare)": lambda: recognizer.prepare(audio, None, "audio", encoded),
        "model forward": lambda: recognizer.forward(inputs),
    }
    figures = []
    for name, run in stages.items():
        if run is None:
            continue
        run()
        clock = Clock()
        for _ in range(repeats):
            run()
        wall, cpu = clock.seconds()
        figures.append(f"{name} {cpu / repeats * 1000:.0f} ms CPU ({wall / repeats * 1000:.0f} ms wall)")
    torch.set_num_threads(threads)
    blas.restore_original_limits()
    print(f"stages of one {len(audio) / RATE:.1f} s file, --modality audio: " + "; ".join(figures) + f" ({load()})", flush=True)


def bench_batch(recognizer, n_files: int, n_whisper: int, workers: list[int]) -> None:
    import numpy as np
    import soundfile as sf

    from ser_demo.batch import audio_files, predict_rows

    folder = Path(tempfile.mkdtemp(prefix="ser-bench-batch-"))
    clips, gap = sentences(), np.zeros(int(0.3 * RATE), np.float32)
    for i in range(n_files):  # five seconds of speech each (sentences 0.3 s apart): the most work a 5 s file holds
        parts, k = [], i
        while sum(map(len, parts)) < 5 * RATE:
            parts += [clips[k % len(clips)], gap]
            k += 7
        sf.write(folder / f"clip{i:04d}.wav", np.concatenate(parts)[: 5 * RATE], RATE, subtype="PCM_16")
    files = audio_files([str(folder)])
    list(predict_rows(recognizer, files[:3], modality="audio"))  # warm-up
    bench_stages(recognizer, str(files[0]))
    runs = [("audio", files, n) for n in workers] + [("both", files[:n_whisper], workers[-1])]
    for modality, subset, n in runs:
        if modality == "both" and (recognizer.transcriber is None or not subset):
            continue
        counter = count_encoder_passes(recognizer)  # counts this run alone
        clock = Clock()
        rows = list(predict_rows(recognizer, subset, modality=modality, workers=n))
        wall, cpu = clock.seconds()
        failed = sum(bool(r[-1]) for r in rows)
        what = "--modality audio (no Whisper)" if modality == "audio" else "--modality both (Whisper)"
        print(f"batch, {len(subset)} five-second files, {what}, {n} worker{'s' * (n > 1)}: {len(subset) / wall:.2f} files/s "
              f"({wall:.1f} s, {cpu:.1f} s CPU = {cpu / len(subset) * 1000:.0f} ms CPU per file, {failed} failed"
              f"{passes(counter)}) ({load()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live-seconds", type=float, default=120.0)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--whisper-files", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="batch: worker counts to time in turn (default: 1, then one per core)")
    parser.add_argument("--speech", choices=("varied", "repeated"), default="varied",
                        help="long: the recording's sentences (see `sentences`)")
    parser.add_argument("--checkpoint", default=None, help="folder (default: $SER_CHECKPOINT, else the bundled one)")
    parser.add_argument("--only", choices=("live", "long", "batch", "stages"), default=None)
    parser.add_argument("--full-window", action="store_true",
                        help="Whisper pads every window to 30 s, as before it fitted them: the timeline "
                             "then transcribes up to 28 s at a time")
    args = parser.parse_args()

    from ser_demo import load_recognizer

    recognizer = load_recognizer(args.checkpoint)
    if args.full_window and hasattr(recognizer.transcriber, "window_padding"):
        recognizer.transcriber.window_padding = None
    encoder = recognizer.encoder.context if recognizer.encoder is not None else "none"
    print(f"checkpoint {args.checkpoint or os.environ.get('SER_CHECKPOINT') or 'bundled'}: labels {recognizer.labels}, "
          f"Whisper encoder context {encoder}; Whisper's window "
          f"{'fitted' if getattr(recognizer.transcriber, 'fits_window', False) else '30 s'}; {os.cpu_count()} CPUs; {load()}",
          flush=True)
    if args.only == "stages":
        bench_stages(recognizer, str(ROOT / "tests" / "fixtures" / "speech.wav"))
    if args.only in (None, "batch"):
        from ser_demo.batch import default_workers

        bench_batch(recognizer, args.files, args.whisper_files, args.workers or sorted({1, default_workers()}))
    if args.only in (None, "long"):
        bench_long(recognizer, args.minutes, args.speech)
    if args.only in (None, "live"):
        bench_live(recognizer, recognizer.transcriber, args.live_seconds)


if __name__ == "__main__":
    main()
