"""Scoring many recordings: a folder or a list of files in, one row per file out.

A file that cannot be read or classified gets its message in the `error` column and the run goes
on; nothing here stops at a bad file. Files are scored by a few threads at once (one per core):
decoding, Whisper's encoder (CTranslate2), the speaker embedding and the model all run outside
Python's lock, so two threads keep two cores busy, while each keeps to one thread of its own.
No UI code: the command line adds the progress bar.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .calibration import CSV_COLUMNS, Calibration
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
    """The label, its probabilities, how often answers as sure were right in the checkpoint's
    cross-validation on new speakers and on a new corpus (empty without its table), the words the
    model read, and the words its words gate set aside (`ser_demo.words_gate`: the voice answered alone)."""
    return ["file", "label", *labels, *CSV_COLUMNS, "transcript", "words_set_aside", "error"]


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def predict_rows(recognizer: EmotionRecognizer, files: Iterable[Path], *, modality: str = "both",
                 max_seconds: Optional[float] = 60.0, workers: Optional[int] = None,
                 read_all_words: bool = False) -> Iterator[list]:
    """One row per file, in `csv_header` order and in the order of `files`, as each is done;
    `workers` files at once (default: one per core). `read_all_words` passes the words gate."""
    import torch
    from threadpoolctl import threadpool_limits

    labels, workers = recognizer.labels, max(1, workers or default_workers())
    threads = torch.get_num_threads()
    # One short clip is too little work to share out between threads: handing it over costs more
    # than it saves, and idle BLAS threads spin. Per file, with numpy's BLAS on 2 threads, the
    # 40-band and 80-band mel products (GE2E, Whisper) took 16 ms of CPU each instead of 1-2 ms
    # (same numbers). The cores are used by scoring files side by side instead.
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1), ThreadPoolExecutor(workers, thread_name_prefix="predict-rows") as pool:
            yield from _in_order(pool, files, lambda path: _row(recognizer, path, modality, max_seconds, labels,
                                                                read_all_words), ahead=2 * workers)
    finally:
        torch.set_num_threads(threads)


def _in_order(pool: ThreadPoolExecutor, files: Iterable[Path], score, ahead: int) -> Iterator[list]:
    """score(file) for every file on the pool, results in the files' order; at most `ahead`
    files are in flight, so a long list costs no memory."""
    pending: deque = deque()
    for path in files:
        pending.append(pool.submit(score, path))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _row(recognizer, path, modality, max_seconds, labels, read_all_words=False) -> list:
    from .ingest import AudioInputError
    from .utterance import PredictionError

    try:
        p = recognizer.predict(str(path), modality=modality, max_seconds=max_seconds, read_all_words=read_all_words)
    except (AudioInputError, PredictionError, OSError) as err:
        return _failed(path, labels, str(err))
    except Exception as err:  # e.g. Whisper failing on one file: report it, score the rest
        return _failed(path, labels, f"{type(err).__name__}: {err}")
    return [str(path), p.label, *[f"{p.probabilities[label]:.4f}" for label in labels],
            *Calibration.columns(p.calibration), p.transcript or "", p.words_set_aside or "", ""]


def _failed(path, labels, message: str) -> list:
    return [str(path), "", *[""] * (len(labels) + len(CSV_COLUMNS)), "", "", message]
