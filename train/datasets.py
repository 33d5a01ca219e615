"""Corpora by name (:func:`load_corpus`), and the CSV manifest for any corpus without an adapter.

Every loader returns ``(items, LoadReport)``: the items mapped onto the paper's four classes
(``LABELS``), and a report of how many were kept and how many were dropped, by reason (an
emotion outside the four, a file name that does not parse, a missing audio file). Nothing is
dropped silently. Audio corpora in their own release layouts live in train/audio_corpora.py, text
corpora in train/text_corpora.py; :func:`load_corpus` finds either kind by name. Transcripts are
the corpus's own ("ground truth"); the paper's ASR setting replaces them with train/transcripts.py.

Data preparation only: no features, no model, no audio read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable

from train.audio_corpora import load_crema_d, load_emodb, load_iemocap, load_ravdess, load_savee, load_tess
from train.records import LABELS, LoadReport, Tally, TextSample, Utterance
from train.text_corpora import TEXT_CORPORA, load_dailydialog, load_goemotions, load_isear
from train.transcripts import transcripts_for, with_transcripts

__all__ = [  # the records and the text loaders are used from here too
    "LABELS", "LoadReport", "TextSample", "Utterance", "load_corpus", "load_dailydialog", "load_goemotions",
    "load_isear", "transcripts_for", "with_transcripts",
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# CSV manifest, for any other corpus: audio_path,transcript,label,speaker[,utterance_id,session]
# --------------------------------------------------------------------------------------------

# Common spellings of the four classes in other corpora's label sets.
LABEL_ALIASES = {
    "angry": "angry", "anger": "angry", "ang": "angry",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "neutral": "neutral", "neu": "neutral",
}  # fmt: skip
MANIFEST_COLUMNS = ("audio_path", "transcript", "label", "speaker")


def load_manifest(
    path: str | os.PathLike, *, corpus: str | None = None, require_audio: bool = True
) -> tuple[list[Utterance], LoadReport]:
    """A CSV with columns audio_path,transcript,label,speaker (optional utterance_id, session).

    Relative audio paths are resolved against the CSV's folder. An empty audio_path makes a
    text-only utterance; an empty transcript is None. Labels go through LABEL_ALIASES.
    """
    csv_path = Path(path)
    corpus = corpus or csv_path.stem
    tally = Tally(corpus)
    utterances = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing columns {missing}; expected {MANIFEST_COLUMNS}")
        for row_number, row in enumerate(reader, start=2):
            label = LABEL_ALIASES.get((row["label"] or "").strip().lower())
            if label is None:
                tally.drop((row["label"] or "").strip().lower() or "empty_label")
                continue
            audio_path = None
            if (row["audio_path"] or "").strip():
                audio_path = Path(row["audio_path"].strip())
                if not audio_path.is_absolute():
                    audio_path = csv_path.parent / audio_path
                if require_audio and not audio_path.exists():
                    tally.drop("missing_audio")
                    continue
            transcript = (row["transcript"] or "").strip() or None
            tally.keep()
            utterances.append(
                Utterance(
                    audio_path=audio_path,
                    transcript=transcript,
                    label=label,
                    speaker=(row["speaker"] or "").strip() or "unknown",
                    corpus=corpus,
                    utterance_id=(row.get("utterance_id") or "").strip() or f"{corpus}_{row_number}",
                    session=(row.get("session") or "").strip() or None,
                )
            )
    return utterances, tally.report()


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

AUDIO_CORPORA: dict[str, Callable[..., tuple[list[Utterance], LoadReport]]] = {
    "iemocap": load_iemocap,
    "ravdess": load_ravdess,
    "tess": load_tess,
    "crema-d": load_crema_d,
    "emodb": load_emodb,
    "savee": load_savee,
    "manifest": load_manifest,
}


def load_corpus(name: str, path: str | os.PathLike, **options: Any) -> tuple[list, LoadReport]:
    """Load a corpus by registry name (audio or text), e.g. ``load_corpus("ravdess", root)``."""
    key = name.lower().replace("_", "-")
    key = {"cremad": "crema-d", "emo-db": "emodb", "daily-dialog": "dailydialog"}.get(key, key)
    loader = AUDIO_CORPORA.get(key) or TEXT_CORPORA.get(key)
    if loader is None:
        known = sorted({*AUDIO_CORPORA, *TEXT_CORPORA})
        raise KeyError(f"unknown corpus {name!r}; known: {', '.join(known)}")
    return loader(path, **options)


def load_speakers(name: str, path: str | os.PathLike, speakers: str | None = None,
                  strict: bool = True) -> tuple[list, LoadReport]:
    """An audio corpus's clips, only those of `speakers` (comma-separated, e.g. the test speakers
    of a cv fold's model: voices it never heard) when given. SystemExit names the speakers without
    clips here: any of them (`strict`), or all of them (the others may be another corpus's)."""
    utterances, report = load_corpus(name, path)
    utterances = [u for u in utterances if u.audio_path is not None]
    if speakers:
        wanted = set(speakers.split(","))
        missing = wanted - {u.speaker for u in utterances}
        if missing and (strict or missing == wanted):
            raise SystemExit(f"--speakers: no clips of {', '.join(sorted(missing))} in {path}")
        utterances = [u for u in utterances if u.speaker in wanted]
    return utterances, report
