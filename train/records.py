"""What every corpus adapter returns: labelled items and a report of what it kept and dropped.

Audio corpora (train/audio_corpora.py, train/datasets.py) yield :class:`Utterance`, text corpora
(train/text_corpora.py) yield :class:`TextSample`; both are mapped onto the paper's four classes
(``LABELS``). Every loader returns ``(items, LoadReport)``, so that nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LABELS = ("angry", "happy", "sad", "neutral")


@dataclass(frozen=True)
class Utterance:
    audio_path: Path | None  # None: a text-only item (e.g. a manifest row without audio)
    transcript: str | None  # the corpus's own transcript; None when the corpus has none
    label: str  # one of LABELS
    speaker: str  # unique across the corpus, e.g. "Ses01F", "ravdess_01"
    corpus: str
    utterance_id: str
    session: str | None = None  # IEMOCAP session ("Ses01"), for leave-one-session-out
    # The transcript is Whisper's and Whisper was unsure of it (ser_demo.transcript.is_unsure): scores
    # read it only without the voice, as the app does (train.transcripts.words_read_with_the_voice).
    unsure_words: bool = False


@dataclass
class TextSample:
    text: str
    label: str  # one of LABELS
    corpus: str


@dataclass
class LoadReport:
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    corpus: str = ""

    @property
    def total(self) -> int:
        return self.kept + sum(self.dropped.values())

    def __str__(self) -> str:
        dropped = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.dropped.items()))
        return f"{self.corpus or 'corpus'}: kept {self.kept} of {self.total}" + (
            f" (dropped {dropped})" if dropped else ""
        )


class Tally:
    """Counts kept items and dropped ones by reason while a loader walks a corpus."""

    def __init__(self, corpus: str):
        self.corpus = corpus
        self.kept = 0
        self.dropped: dict[str, int] = {}

    def keep(self) -> None:
        self.kept += 1

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def report(self) -> LoadReport:
        return LoadReport(kept=self.kept, dropped=dict(sorted(self.dropped.items())), corpus=self.corpus)
