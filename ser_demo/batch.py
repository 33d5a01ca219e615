"""Scoring many recordings: a folder or a list of files in, one row per file out.

A file that cannot be read or classified gets its message in the `error` column and the run goes
on; nothing here stops at a bad file. No UI code: the command line adds the progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

from .recognizer import EmotionRecognizer

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".webm", ".m4a")


def audio_files(paths: Iterable[str]) -> list[Path]:
    """The files to score: each folder replaced by the audio files under it (sorted, by suffix);
    files named explicitly are kept whatever their suffix, so a bad one is reported, not skipped."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(path)
    return files


def csv_header(labels) -> list[str]:
    return ["file", "label", *labels, "transcript", "error"]


def predict_rows(recognizer: EmotionRecognizer, files: Iterable[Path], *, modality: str = "both",
                 max_seconds: Optional[float] = 60.0) -> Iterator[list]:
    """One row per file, in `csv_header` order, as each file is done."""
    import torch

    labels = recognizer.labels
    threads = torch.get_num_threads()
    # One short clip at a time is too little work to share out: handing it between threads costs
    # more than it saves (2.3 -> 10.2 files/s on the 2-core machine with one thread).
    torch.set_num_threads(1)
    try:
        yield from _rows(recognizer, files, modality, max_seconds, labels)
    finally:
        torch.set_num_threads(threads)


def _rows(recognizer, files, modality, max_seconds, labels) -> Iterator[list]:
    from .ingest import AudioInputError
    from .recognizer import PredictionError

    for path in files:
        try:
            p = recognizer.predict(str(path), modality=modality, max_seconds=max_seconds)
        except (AudioInputError, PredictionError, OSError) as err:
            yield [str(path), "", *[""] * len(labels), "", str(err)]
            continue
        except Exception as err:  # e.g. Whisper failing on one file: report it, score the rest
            yield [str(path), "", *[""] * len(labels), "", f"{type(err).__name__}: {err}"]
            continue
        yield [str(path), p.label, *[f"{p.probabilities[label]:.4f}" for label in labels], p.transcript or "", ""]
