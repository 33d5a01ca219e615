"""One utterance on its way through `recognizer.EmotionRecognizer`, as plain data, and the checks on it.

What `listen` heard (`Heard`: the audio and the words), what the audio branch reads of it
(`AudioFeatures`), the model's batch of one (`ModelInputs`, shared with `explain`), the answer
(`Prediction`); the refusals a user reads (`PredictionError`, the transcript limits) and the note on
words GloVe lacks. Kept apart from the recognizer so that its callers can name these without the
pipeline's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .text import Tokens, tokenize


class PredictionError(ValueError):
    """A request the model cannot answer (e.g. text-only with no words); the message says why."""


# The longest transcript read by default. Explaining costs grow with the square of the words
# (leave-one-word-out), so a longer one is refused before any model work; a library user may
# raise the limits on the recognizer (`recognizer.max_transcript_words = 500`, None = no limit).
MAX_TRANSCRIPT_WORDS = 100
MAX_TRANSCRIPT_CHARACTERS = 1_000


def check_transcript_length(transcript: str, max_words: Optional[int], max_characters: Optional[int],
                            heard_by: str = "") -> None:
    """Raise PredictionError when `transcript` passes either limit (None: no limit). Characters
    are counted first, so a hostile 100,000-character text is refused without being tokenised.
    Words are the tokens the model reads ("can't" is two)."""
    what = f"The transcript{heard_by}"
    advice = "Record a shorter clip or type a shorter transcript." if heard_by else "Shorten it."
    if max_characters is not None and len(transcript) > max_characters:
        raise PredictionError(f"{what} is too long ({len(transcript):,} characters); the maximum is "
                              f"{max_characters:,} characters. {advice}")
    if max_words is not None and (words := len(tokenize(transcript))) > max_words:
        raise PredictionError(f"{what} is too long ({words:,} words); the maximum is {max_words:,} words. {advice}")


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]
    modality: str
    transcript: Optional[str]
    tokens: list[str]
    known: list[bool]  # False where GloVe has no vector for the token (zero vector used)
    mfcc: Optional[np.ndarray]  # (96, frames), before normalisation
    frame_seconds: float  # hop between MFCC frames
    kernel_sizes: tuple  # per row of audio_statistics: (front-end, kernel size)
    statistics: tuple  # names of the audio SPU statistics, e.g. ("max", "avg", "std")
    audio_statistics: Optional[np.ndarray]  # (Ka, n_stats, n_filters)
    attention: dict[str, list[float]]  # audio statistic -> weight of every token
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    words: list = field(default_factory=list)  # ASR word timestamps, when the ASR gave them
    notes: list[str] = field(default_factory=list)  # what the user should know (unknown words, ...)
    encoder_states: Optional[np.ndarray] = None  # (384, states) Whisper encoder, before normalisation
    # With a statistics head (ser_demo.statistics_head), `probabilities` mixes these two answers:
    network_probabilities: Optional[dict[str, float]] = None  # MSCNN-SPU-ATT's own
    head_probabilities: Optional[dict[str, float]] = None  # the linear head's, on clip statistics
    # how often answers as sure as this one were right in the checkpoint's cross-validation (calibration.py)
    calibration: Optional[dict] = None
    words_set_aside: Optional[str] = None  # words the words gate left out: the voice answered alone

    def to_dict(self) -> dict:
        """JSON-ready summary (the command line prints it)."""
        spu = None
        if self.audio_statistics is not None:
            spu = {
                f"{frontend}_kernel_{k}": {s: self.audio_statistics[i, j].tolist() for j, s in enumerate(self.statistics)}
                for i, (frontend, k) in enumerate(self.kernel_sizes)
            }
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            **({"network_probabilities": self.network_probabilities, "head_probabilities": self.head_probabilities}
               if self.head_probabilities is not None else {}),
            "modality": self.modality,
            "transcript": self.transcript,
            "words_set_aside": self.words_set_aside,
            "tokens": self.tokens,
            "unknown_tokens": [t for t, k in zip(self.tokens, self.known) if not k],
            "attention": self.attention,
            "audio_spu": spu,
            "mfcc_shape": list(self.mfcc.shape) if self.mfcc is not None else None,
            "encoder_states_shape": list(self.encoder_states.shape) if self.encoder_states is not None else None,
            "words": [vars(w) if hasattr(w, "__dict__") else w for w in self.words],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "notes": self.notes,
            "calibration": self.calibration,
        }


@dataclass
class ModelInputs:
    """One utterance, ready for the model (a batch of one) - shared with the explanation module."""

    mfcc: Optional[np.ndarray]  # raw (96, frames); None when the model reads no MFCCs
    tokens: Tokens
    batch: dict[str, torch.Tensor]
    encoder_states: Optional[np.ndarray] = None  # raw (384, states) when it reads Whisper's encoder

    @property
    def has_audio(self) -> bool:
        return any(x is not None and x.shape[1] > 0 for x in (self.mfcc, self.encoder_states))


@dataclass
class AudioFeatures:
    """What the audio branch reads of one waveform. None of it depends on the words, so it can
    be computed while Whisper transcribes."""

    mfcc: Optional[np.ndarray] = None  # raw (96, frames); None when the model reads no MFCCs
    encoded: object = None  # ser_demo.encoder.Encoded, when the model reads Whisper encoder states
    speaker: Optional[np.ndarray] = None  # speaker embedding, when the model uses one
    statistics: Optional[np.ndarray] = None  # the clip vector of the checkpoint's statistics head, if any


@dataclass
class Heard:
    """What `EmotionRecognizer.listen` got from a request: the audio and the words."""

    waveform: Optional[np.ndarray] = None  # float32 16 kHz mono, trimmed; None without audio
    transcript: str = ""  # what the text branch reads ("" for none)
    source: str = "none"  # "typed", "asr" or "none"
    words: list = field(default_factory=list)  # ASR word timestamps
    phrases: list = field(default_factory=list)  # Whisper's segments (transcript.Phrase), when it ran
    encoded: object = None  # ser_demo.encoder.Encoded: the model's encoder pass (shared with ASR in context "window")
    features: Optional[AudioFeatures] = None  # listen(features=True): computed while Whisper transcribed
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    audio_used: bool = True  # False when the audio was read only for Whisper (text-only mode)
    unsure_words: str = ""  # Whisper's words left out as unsure (transcript.is_unsure); the model read none
    words_set_aside: str = ""  # words the text branch alone was not sure of (words_gate); the voice answered alone

    @property
    def waveform_for_model(self) -> Optional[np.ndarray]:
        return self.waveform if self.audio_used else None


def unknown_words_note(tokens: Tokens) -> str:
    return "words without a GloVe vector (the model sees zeros for them): " + ", ".join(
        dict.fromkeys(tokens.unknown_words)
    )
