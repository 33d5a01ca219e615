"""Time what the bundled checkpoint computes per recording (a benchmark, not a test).

    python bench/bench_features.py [--repeats 7]

For a 5 s clip of real speech (the committed espeak-ng fixture, looped): MFCCs, the Whisper
encoder pass the model reads (for a checkpoint that reads the 30 s window's output, that pass is
shared with ASR, and Whisper decoding from it is timed too), a full transcription, the GE2E
speaker embedding and the model's forward pass. Prints the median wall time and CPU time
over --repeats runs after one warm-up; CPU time barely moves when other work shares the machine.
Target (issue 8): the speaker embedding adds <= 100 ms to a 5 s clip on 2 cores.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_asr import median_seconds  # noqa: E402
from ser_demo import load_recognizer  # noqa: E402
from ser_demo.audio import SAMPLE_RATE, mfcc_features  # noqa: E402
from ser_demo.ingest import load_audio  # noqa: E402
from ser_demo.speaker import load_speaker_embedder  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "speech.wav"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    speech = load_audio(FIXTURE)
    clip = np.tile(speech, int(np.ceil(5 * SAMPLE_RATE / len(speech))))[: 5 * SAMPLE_RATE]
    recognizer = load_recognizer()
    transcriber, encoder = recognizer.transcriber, recognizer.encoder
    speaker = load_speaker_embedder(recognizer.config.speaker_model)
    encoded = encoder.encode(clip) if encoder is not None else None
    stages = {
        "MFCC + deltas": lambda: mfcc_features(clip),
        "speaker embedding (GE2E)": lambda: speaker.embed(clip),
        "model forward (both modalities)": lambda: recognizer.forward(recognizer.prepare(clip, "this is a test", "both", encoded)),
        "Whisper transcription, full": lambda: transcriber.transcribe(clip),
    }
    if encoder is not None and encoder.shares_with_decoder:
        stages["Whisper encoder pass (shared)"] = lambda: encoder.encode(clip)
        stages["Whisper decoding from that pass"] = lambda: transcriber.transcribe(clip, encoded=encoded)
    elif encoder is not None:  # e.g. block 2 of each clip alone: Whisper's decoder needs its own window pass
        what = f"context {encoder.context}" + (f", block {encoder.layer}" if encoder.layer is not None else "")
        stages[f"the model's encoder pass ({what})"] = lambda: encoder.encode(clip)
    print(f"5 s clip, {args.repeats} repeats, median wall / CPU time:")
    for name, fn in stages.items():
        wall, cpu = median_seconds(fn, args.repeats)
        print(f"  {name:48s} {1000 * wall:7.1f} ms wall  {1000 * cpu:7.1f} ms CPU")


if __name__ == "__main__":
    main()
