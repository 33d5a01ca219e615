"""Command line of ser_demo.

    python -m ser_demo predict FILE [--transcript TEXT]     one recording: JSON (label, probabilities, ...)
    python -m ser_demo predict FILE_OR_FOLDER ... [--csv OUT]   many: one row per file, progress bar
    python -m ser_demo timeline FILE [--json | --csv]        emotion over time, one row per utterance
"""

from __future__ import annotations

import argparse
import csv
import json
import sys


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="folder or Hub repo id (default: bundled)")
    parser.add_argument("--modality", choices=("both", "audio", "text"), default="both")
    parser.add_argument("--asr", default="default", help="ASR backend, or 'none' to skip Whisper")
    parser.add_argument("--read-all-words", action="store_true",
                        help="read the words with the voice even where the checkpoint's words gate would set them "
                             "aside (they carry no emotion its text branch is sure of)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_demo", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify the emotion of one recording, or of many")
    predict.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, webm) or folders")
    predict.add_argument("--transcript", default=None, help="what was said (one file only); omitted = Whisper transcribes")
    predict.add_argument("--csv", default=None, metavar="OUT", help="write one row per file to OUT ('-' = stdout)")
    predict.add_argument("--max-seconds", type=float, default=60.0)
    predict.add_argument("--workers", type=int, default=None, metavar="N",
                         help="files scored at once (default: one per CPU core)")
    predict.add_argument("--max-words", type=int, default=None,
                         help="longest transcript read, in words (default 100; 0 = no limit)")
    predict.add_argument("--max-characters", type=int, default=None,
                         help="longest transcript read, in characters (default 1000; 0 = no limit)")
    _common(predict)
    timeline = commands.add_parser("timeline", help="emotion over time in a long recording")
    timeline.add_argument("file", help="audio file (wav, flac, ogg, mp3, webm)")
    output = timeline.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the whole timeline as JSON")
    output.add_argument("--csv", action="store_true", help="print one CSV row per segment")
    timeline.add_argument("--max-seconds", type=float, default=None, help="longest recording accepted (default 600)")
    _common(timeline)
    args = parser.parse_args(argv)

    from . import load_recognizer
    from .ingest import AudioInputError
    from .recognizer import default_checkpoint
    from .utterance import MAX_TRANSCRIPT_CHARACTERS, MAX_TRANSCRIPT_WORDS, PredictionError, check_transcript_length

    if args.checkpoint is None and default_checkpoint() is None:
        parser.error("--checkpoint is required: no bundled checkpoint was found")
    batch = args.command == "predict" and (args.csv is not None or len(args.files) > 1 or _is_folder(args.files[0]))
    if batch and args.transcript is not None:
        parser.error("--transcript applies to one file; drop it to let Whisper transcribe each file")
    if getattr(args, "workers", None) is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    typed = args.command == "predict" and args.transcript is not None
    asr = None if args.asr == "none" or typed or args.modality == "audio" else args.asr
    given_words, given_characters = getattr(args, "max_words", None), getattr(args, "max_characters", None)
    max_words = MAX_TRANSCRIPT_WORDS if given_words is None else given_words or None
    max_characters = MAX_TRANSCRIPT_CHARACTERS if given_characters is None else given_characters or None
    try:
        if typed:  # before loading anything
            check_transcript_length(args.transcript, max_words, max_characters)
        recognizer = load_recognizer(args.checkpoint, asr=asr)
        recognizer.max_transcript_words, recognizer.max_transcript_characters = max_words, max_characters
        if batch:
            return _predict_many(recognizer, args)
        if args.command == "timeline":
            return _timeline(recognizer, args)
        prediction = recognizer.predict(
            args.files[0], transcript=args.transcript, modality=args.modality, max_seconds=args.max_seconds,
            read_all_words=args.read_all_words,
        )
    except (AudioInputError, PredictionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # e.g. transcription unavailable: say it in one line, no traceback
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(prediction.to_dict(), indent=2))
    return 0


def _is_folder(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_dir()


def _predict_many(recognizer, args) -> int:
    """One row per file, as CSV (to --csv OUT, else stdout); a progress bar on stderr. Returns 0
    when every file was scored, 3 when some were reported as errors in their rows."""
    from tqdm import tqdm

    from .batch import audio_files, csv_header, predict_rows

    files = audio_files(args.files)
    if not files:
        print("error: no audio files found in " + ", ".join(args.files), file=sys.stderr)
        return 2
    out = sys.stdout if args.csv in (None, "-") else open(args.csv, "w", newline="")
    failed = 0
    try:
        writer = csv.writer(out)
        writer.writerow(csv_header(recognizer.labels))
        rows = predict_rows(recognizer, files, modality=args.modality, max_seconds=args.max_seconds,
                            workers=args.workers, read_all_words=args.read_all_words)
        for row in tqdm(rows, total=len(files), unit="file", file=sys.stderr, disable=None):
            writer.writerow(row)
            failed += bool(row[-1])
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{len(files) - failed} of {len(files)} files scored" + (f", {failed} failed (see the error column)" if failed else ""),
          file=sys.stderr)
    return 3 if failed else 0


def _timeline(recognizer, args) -> int:
    from .timeline import TIMELINE_MAX_SECONDS, timeline

    result = timeline(recognizer, args.file, modality=args.modality,
                      max_seconds=args.max_seconds or TIMELINE_MAX_SECONDS, read_all_words=args.read_all_words)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.csv_header())
        writer.writerows(result.csv_rows())
    else:
        for row, segment in zip(result.csv_rows(), result.segments):
            share = f"{segment.probabilities[segment.label]:.0%}" if segment.probabilities else ""
            print(f"{row[0]:>8} - {row[1]:>8}  {segment.label:<8} {share:>4}  {segment.text}")
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
