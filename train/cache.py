"""On-disk cache of per-utterance features, so that every epoch and every fold reuses them.

An entry is keyed by what determines the features and nothing else: the audio file's *content*
(SHA-256, so a renamed or copied file still hits, and an edited one misses) plus the feature
parameters (a dict, serialised as sorted JSON). Entries are float32 ``.npy`` files, written to a
temporary file and moved into place with ``os.replace`` so that an interrupted run never leaves a
half-written entry under a real key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

_HASH_CHUNK_BYTES = 1 << 20

# (resolved path, size, mtime_ns) -> sha256; hashing every file once per process is enough.
_file_hash_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, hex. Memoised per process on (path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _file_hash_memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
                digest.update(chunk)
        _file_hash_memo[memo_key] = digest.hexdigest()
    return _file_hash_memo[memo_key]


def params_fingerprint(params: Mapping[str, Any]) -> str:
    """Canonical JSON of the parameters: key order never changes the key."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


class FeatureCache:
    """Features of audio files, stored as float32 arrays under ``cache_dir``."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0

    def key(self, audio_path: str | os.PathLike, params: Mapping[str, Any]) -> str:
        material = file_sha256(audio_path) + "\n" + params_fingerprint(params)
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def entry_path(self, key: str) -> Path:
        # Two-level fan-out keeps directories small on corpora of tens of thousands of clips.
        return self.cache_dir / key[:2] / f"{key}.npy"

    def get_or_compute(
        self,
        audio_path: str | os.PathLike,
        params: Mapping[str, Any],
        compute_fn: Callable[[Path], np.ndarray],
    ) -> np.ndarray:
        """Cached features of ``audio_path``; on a miss, ``compute_fn(audio_path)`` makes them.

        A hit never calls ``compute_fn``. An unreadable entry (truncated by a crash of some other
        writer, or corrupted) counts as a miss and is rewritten.
        """
        entry = self.entry_path(self.key(audio_path, params))
        if entry.exists():
            try:
                features = np.load(entry, allow_pickle=False)
                self.hits += 1
                return features
            except (ValueError, OSError, EOFError):
                pass  # damaged entry: recompute and overwrite below
        self.misses += 1
        features = np.asarray(compute_fn(Path(audio_path)), dtype=np.float32)
        self._write_atomically(entry, features)
        return features

    @staticmethod
    def _write_atomically(entry: Path, features: np.ndarray) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=entry.parent, prefix=entry.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, features, allow_pickle=False)
            os.replace(tmp_name, entry)  # atomic on POSIX: readers see the old file or the new one
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
