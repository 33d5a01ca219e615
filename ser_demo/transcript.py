"""What Whisper heard: words with their times and Whisper's probability, phrases (its segments), a
transcript, and how sure Whisper was of them.

Every backend of `ser_demo.asr` returns a `Transcript`. tiny.en knows English only: for speech it
cannot follow (another language, noise) it writes fluent English words it is unsure of, which
`is_unsure` tells apart, so that the recognizer and the timeline leave them out.
"""

import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Word:
    text: str
    start: float  # seconds from the start of the audio
    end: float
    probability: float | None = None  # Whisper's probability of the word's tokens, when it gives one


def mean_log_probability(words) -> float | None:
    """Whisper's confidence in some words: the mean log-probability of those it scored."""
    scored = [max(w.probability, 1e-6) for w in words if w.probability is not None]
    return float(np.mean(np.log(scored))) if scored else None


@dataclass
class Phrase:
    """One of Whisper's segments: a stretch of speech it decoded as a unit (about a sentence)."""

    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)

    def shifted(self, seconds: float) -> "Phrase":
        """The same phrase with its times moved by `seconds` (clip times -> recording times)."""
        return Phrase(self.text, self.start + seconds, self.end + seconds,
                      [Word(w.text, w.start + seconds, w.end + seconds, w.probability) for w in self.words])


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)  # empty when the backend gives no timing
    language: str | None = None
    backend: str = ""
    model: str = ""
    phrases: list[Phrase] = field(default_factory=list)  # Whisper's segments, in order

    @property
    def log_probability(self) -> float | None:
        """Whisper's own confidence in the words (None without word timestamps)."""
        return mean_log_probability(self.words)


# tiny.en knows English only, and turns speech it cannot follow (another language, noise) into
# fluent English words it is unsure of. The threshold is the 5th percentile of the mean
# log-probability of Whisper's words over all 2,402 shared English clips with words (as the app
# hears them), rounded to one decimal with at most 5 % below: 3.6 % of them fall below it (RAVDESS
# 0.4 %, TESS 1.0 %, SAVEE's processed copies 22.7 %), and all 23 transcripts of espeak German,
# French and Spanish sentences (-0.85 at most). Such words move the voice's answers at random
# (README, *Words Whisper was unsure of*). Session 27 set -1.0 by the same rule on 632 clips.
UNSURE_LOG_PROBABILITY = -0.8


def is_unsure(words: list[Word]) -> bool:
    """Whether Whisper's own confidence in `words` (of a transcript, or of one utterance) is below
    UNSURE_LOG_PROBABILITY; words without a probability never are."""
    return is_unsure_confidence(mean_log_probability(words))


def is_unsure_confidence(log_probability: float | None) -> bool:
    """The same test on a mean log-probability already taken (None: nothing was scored)."""
    return log_probability is not None and log_probability < UNSURE_LOG_PROBABILITY


def unsure_words_note(transcript: "Transcript", read: bool) -> str:
    """The note that says so; `read`: whether the words are read anyway (text only)."""
    words = transcript.text if len(transcript.text) <= 80 else transcript.text[:77] + "..."
    return (f'Whisper was unsure of the words it heard ("{words}": mean log-probability of its words '
            f"{transcript.log_probability:.2f}, below {UNSURE_LOG_PROBABILITY:.1f}). Whisper tiny.en knows English only; "
            + ("text only reads them anyway." if read else
               "the words are left out and the answer reads the voice alone. Type what was said to use words."))


class RecentWords:
    """Whisper's word timestamps for the last `size` recordings, keyed by the audio's content.

    A re-run of the same recording with a typed or edited transcript (the transcript box is
    filled after the first run) skips Whisper; this keeps its word times so that the edited
    transcript can still be aligned to them. Bounded and thread-safe."""

    def __init__(self, size: int = 32):
        from collections import OrderedDict

        self.size = size
        self._words: "OrderedDict[str, list]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(audio: np.ndarray) -> str:
        import hashlib

        return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()

    def remember(self, audio: np.ndarray, words: list) -> None:
        key = self.key(audio)
        with self._lock:
            self._words[key] = list(words)
            self._words.move_to_end(key)
            while len(self._words) > self.size:
                self._words.popitem(last=False)

    def recall(self, audio: np.ndarray) -> list:
        """The words remembered for this recording ([] for one not transcribed lately)."""
        key = self.key(audio)
        with self._lock:
            if key in self._words:
                self._words.move_to_end(key)
            return list(self._words.get(key, []))
