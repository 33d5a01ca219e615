"""Cutting a long recording into utterances the model can classify one at a time.

The model is utterance-level (it pools over a whole clip), so a recording of several minutes is
first split where people pause:

- voice-activity detection finds the pauses: runs of frames above the recording's noise floor
  (`ingest.active_frames`, the same test that rejects silent uploads), short pauses bridged;
- with speech recognition, Whisper transcribes the utterances found so, and its own segments
  (about a sentence each) cut them further, each part keeping its words: one utterance at a time
  where the model's encoder pass serves Whisper's decoder too or Whisper fits its window to the
  utterance (faster-whisper), else (a Whisper that pads every window to 30 s) consecutive
  utterances together, one of Whisper's windows at a time (`transcription_windows`), their words
  shared out by time (`phrases_by_piece`). Whisper's word times drift over silence and over
  repeated sentences, so pauses are taken from the audio rather than from them.

Pieces too short to classify are merged into the nearest neighbour, pieces too long are split,
and the gaps become "silence" segments so that the segments tile the whole recording.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .transcript import Phrase, Word
from .audio import SAMPLE_RATE
from .ingest import FRAME_SECONDS, HOP_SECONDS, active_frames

MIN_PAUSE_SECONDS = 0.4  # a quieter stretch at least this long ends an utterance
MIN_SPEECH_SECONDS = 0.15  # shorter bursts of energy are clicks or breaths, not speech
MIN_SEGMENT_SECONDS = 1.0  # shorter utterances are merged into a neighbour (too little to classify)
MAX_MERGE_GAP_SECONDS = 2.0  # ... unless the neighbour is further away than this
MAX_SEGMENT_SECONDS = 12.0  # longer stretches of speech are split (one label per ~sentence)
MIN_SILENCE_SECONDS = 0.5  # shorter gaps are shared between the neighbours, not labelled silence
WINDOW_SECONDS = 28.0  # audio handed to Whisper at once (its window is 30 s)
MAX_WORD_DRIFT_SECONDS = 1.0  # a word further than this from every utterance was heard in a silence


@dataclass
class Piece:
    """A stretch of speech, in seconds from the start of the recording, with its words if any."""

    start: float
    end: float
    words: list = field(default_factory=list)  # transcript.Word, times relative to the recording

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words).strip()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges where `mask` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def voice_activity(audio: np.ndarray, rate: int = SAMPLE_RATE) -> list[Piece]:
    """Stretches of speech found by energy, pauses shorter than MIN_PAUSE_SECONDS bridged."""
    active = active_frames(audio, rate)
    pieces: list[Piece] = []
    for first, last in _runs(active):
        start, end = first * HOP_SECONDS, (last - 1) * HOP_SECONDS + FRAME_SECONDS
        if pieces and start - pieces[-1].end < MIN_PAUSE_SECONDS:
            pieces[-1].end = end
        else:
            pieces.append(Piece(start, end))
    duration = len(audio) / rate
    return [Piece(p.start, min(p.end, duration)) for p in pieces if p.duration >= MIN_SPEECH_SECONDS]


def split_at_phrases(piece: Piece, phrases: list) -> list[Piece]:
    """A stretch of speech cut where Whisper ended a segment (transcript.Phrase, times from the start of
    the recording): sentences said without a pause between them still get a label each. Cuts
    fall midway between one segment's last word and the next one's first; each part keeps its
    segment's words."""
    phrases = [p for p in phrases if p.text.strip()]
    if not phrases:
        return [Piece(piece.start, piece.end)]
    edges = [piece.start]
    for before, after in zip(phrases[:-1], phrases[1:]):
        end = before.words[-1].end if before.words else before.end
        start = after.words[0].start if after.words else after.start
        edges.append(min(max((end + start) / 2, edges[-1]), piece.end))
    edges.append(piece.end)
    parts = [Piece(start, end, list(phrase.words) or [Word(phrase.text.strip(), start, end)])
             for phrase, start, end in zip(phrases, edges[:-1], edges[1:])]
    return merge_short(parts, max_gap=float("inf"))


def split_long(pieces: list[Piece], max_seconds: float = MAX_SEGMENT_SECONDS) -> list[Piece]:
    """Cut pieces longer than `max_seconds` into equal parts; words go to the part holding
    their middle."""
    out: list[Piece] = []
    for piece in pieces:
        parts = int(np.ceil(piece.duration / max_seconds)) if piece.duration > max_seconds else 1
        bounds = np.linspace(piece.start, piece.end, parts + 1)
        for start, end in zip(bounds[:-1], bounds[1:]):
            words = [w for w in piece.words if start <= (w.start + w.end) / 2 < end or (end == piece.end and (w.start + w.end) / 2 >= end)]
            out.append(Piece(float(start), float(end), words))
    return out


def merge_short(pieces: list[Piece], min_seconds: float = MIN_SEGMENT_SECONDS,
                max_gap: float = MAX_MERGE_GAP_SECONDS) -> list[Piece]:
    """Merge each piece shorter than `min_seconds` into its nearer neighbour (if that one is
    within `max_gap`), shortest first, until none can be merged."""
    pieces = [Piece(p.start, p.end, list(p.words)) for p in sorted(pieces, key=lambda p: p.start)]
    while len(pieces) > 1:
        candidates = []
        for i, piece in enumerate(pieces):
            if piece.duration >= min_seconds:
                continue
            gaps = [(piece.start - pieces[i - 1].end, i - 1) if i > 0 else None,
                    (pieces[i + 1].start - piece.end, i + 1) if i + 1 < len(pieces) else None]
            gap, neighbour = min(g for g in gaps if g is not None)
            if gap <= max_gap:
                candidates.append((piece.duration, i, neighbour))
        if not candidates:
            break
        _, i, j = min(candidates)
        a, b = sorted((i, j))
        pieces[a] = Piece(pieces[a].start, max(pieces[a].end, pieces[b].end), pieces[a].words + pieces[b].words)
        del pieces[b]
    return pieces


def tile(pieces: list[Piece], duration: float, min_silence: float = MIN_SILENCE_SECONDS) -> list[tuple[float, float, Piece | None]]:
    """(start, end, piece or None for silence) covering [0, duration] without gaps or overlaps:
    gaps of at least `min_silence` become silence, shorter ones are split between neighbours."""
    spans: list[list] = []
    previous_end = 0.0
    for piece in pieces:
        gap = piece.start - previous_end
        if gap >= min_silence:
            spans.append([previous_end, piece.start, None])
            spans.append([piece.start, piece.end, piece])
        elif spans:
            middle = previous_end + gap / 2
            spans[-1][1] = middle
            spans.append([middle, piece.end, piece])
        else:
            spans.append([0.0, piece.end, piece])
        previous_end = piece.end
    if not spans:
        return [(0.0, duration, None)]
    if duration - previous_end >= min_silence:
        spans.append([previous_end, duration, None])
    else:
        spans[-1][1] = duration
    return [(float(s), float(e), p) for s, e, p in spans if e > s]


def transcription_windows(pieces: list[Piece], window_seconds: float = WINDOW_SECONDS,
                          padding: float = 0.0) -> list[list[Piece]]:
    """Consecutive utterances grouped so that each group, from its first start to its last end
    with `padding` on both sides, fits in one of Whisper's windows: each group is transcribed at
    once, and no utterance (at most MAX_SEGMENT_SECONDS) is cut between two windows."""
    groups: list[list[Piece]] = []
    for piece in pieces:
        if groups and piece.end - groups[-1][0].start + 2 * padding <= window_seconds:
            groups[-1].append(piece)
        else:
            groups.append([piece])
    return groups


def phrases_by_piece(phrases: list, pieces: list[Piece], max_drift: float = MAX_WORD_DRIFT_SECONDS) -> list[list]:
    """Whisper's segments (transcript.Phrase, recording times) shared out among `pieces`: each word goes
    to the utterance that holds its middle, else to the nearest one within `max_drift` (else it
    was heard in a silence and is dropped); a segment spanning a pause becomes one phrase in each
    utterance it reaches. Returns one list of phrases per piece."""
    out: list[list] = [[] for _ in pieces]
    for phrase in phrases:
        words = phrase.words or ([Word(phrase.text.strip(), phrase.start, phrase.end)] if phrase.text.strip() else [])
        mine: dict[int, list] = {}
        for word in words:
            middle = (word.start + word.end) / 2
            distance, i = min((max(p.start - middle, middle - p.end, 0.0), i) for i, p in enumerate(pieces))
            if distance <= max_drift:
                mine.setdefault(i, []).append(word)
        for i, mine_words in sorted(mine.items()):
            out[i].append(Phrase(" ".join(w.text for w in mine_words), mine_words[0].start, mine_words[-1].end, mine_words))
    return out
