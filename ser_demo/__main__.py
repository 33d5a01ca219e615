"""Command line: `python -m ser_demo predict FILE [--transcript TEXT] [--checkpoint DIR_OR_REPO]`.

Prints one JSON object: label, probabilities, transcript, tokens, attention, timings, ...
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_demo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify the emotion of one recording")
    predict.add_argument("file", help="audio file (wav, flac, ogg, mp3, webm)")
    predict.add_argument("--transcript", default=None, help="what was said; omitted = Whisper transcribes")
    predict.add_argument("--checkpoint", default=None, help="folder or Hub repo id (default: bundled)")
    predict.add_argument("--modality", choices=("both", "audio", "text"), default="both")
    predict.add_argument("--asr", default="default", help="ASR backend, or 'none' to skip Whisper")
    predict.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)

    from . import load_recognizer
    from .ingest import AudioInputError
    from .recognizer import PredictionError, default_checkpoint

    if args.checkpoint is None and default_checkpoint() is None:
        parser.error("--checkpoint is required: no bundled checkpoint was found")
    asr = None if args.asr == "none" or args.transcript is not None else args.asr
    try:
        recognizer = load_recognizer(args.checkpoint, asr=asr)
        prediction = recognizer.predict(
            args.file, transcript=args.transcript, modality=args.modality, max_seconds=args.max_seconds
        )
    except (AudioInputError, PredictionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # e.g. transcription unavailable: say it in one line, no traceback
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(prediction.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
