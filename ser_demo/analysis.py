"""The whole pipeline the app runs on one utterance, stage by stage, with timings.

ingest -> ASR (only when the text branch needs words and none were typed; the audio features are
computed alongside it) -> the words' features -> model -> explanations (`explain`) -> their
deletion curves (`faithfulness`). `Analysis` holds every stage's result as plain data, Whisper's
word times aligned to the model's tokens (`align_tokens`). No UI code here: `plotting` draws an
`Analysis`, `app.py` composes.
"""

from __future__ import annotations

import difflib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from . import faithfulness  # faithfulness.measure is looked up per call (bench/bench_handler.py times it)
from .explain import Explanation, explain
from .faithfulness import Faithfulness
from .recognizer import EmotionRecognizer
from .text import tokenize
from .utterance import unknown_words_note


# --- words and their times -------------------------------------------------------------------


def align_tokens(tokens: Sequence[str], words: Sequence) -> list[Optional[tuple[float, float]]]:
    """Start and end (seconds) of every model token, from ASR word timestamps (objects with
    .text/.start/.end or dicts). An edited transcript is matched to the ASR words by sequence
    alignment, so the words that were kept keep their times; new words get None."""
    times: list[Optional[tuple[float, float]]] = [None] * len(tokens)
    asr_tokens, asr_times = [], []
    for w in words or []:
        text = w["text"] if isinstance(w, dict) else w.text
        start = w["start"] if isinstance(w, dict) else w.start
        end = w["end"] if isinstance(w, dict) else w.end
        for t in tokenize(text):
            asr_tokens.append(t)
            asr_times.append((float(start), float(end)))
    if not asr_tokens or not tokens:
        return times
    matcher = difflib.SequenceMatcher(a=list(tokens), b=asr_tokens, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for i in range(size):
            times[a + i] = asr_times[b + i]
    return times


# --- the whole pipeline, stage by stage ------------------------------------------------------


@dataclass
class Analysis:
    modality: str
    transcript: str  # what the text branch read ("" for none)
    transcript_source: str  # "typed", "asr" or "none"
    words: list  # ASR word timestamps (for a typed transcript: Whisper's, when it heard this recording before)
    token_times: list  # (start, end) or None per token
    duration: Optional[float]  # seconds of ingested audio
    mfcc: Optional[np.ndarray]  # (96, frames) raw
    explanation: Explanation
    timings: dict  # seconds: ingest, asr, features, model, explanations, faithfulness
    notes: list[str] = field(default_factory=list)
    encoder_states: Optional[np.ndarray] = None  # (384, states) raw, when the model reads Whisper's encoder
    encoder_layer: Optional[int] = None  # the encoder block those states come from (None: its output)
    faithfulness: Optional[Faithfulness] = None  # deletion curves of the explanations
    calibration: Optional[str] = None  # how often answers this sure were right in cross-validation
    words_set_aside: str = ""  # words the words gate left out (`words_gate`): the voice answered alone

    @property
    def label(self) -> str:
        return self.explanation.label

    @property
    def probabilities(self) -> dict[str, float]:
        e = self.explanation
        return {k: float(p) for k, p in zip(e.labels, e.probabilities)}

    def to_dict(self) -> dict:
        d = self.explanation.to_dict()
        d.update(
            modality=self.modality,
            transcript=self.transcript,
            transcript_source=self.transcript_source,
            words_set_aside=self.words_set_aside,
            duration_seconds=None if self.duration is None else round(self.duration, 4),
            words=[
                {"text": w.text, "start": w.start, "end": w.end} if not isinstance(w, dict) else w
                for w in self.words
            ],
            token_times=self.token_times,
            timings={k: round(v, 4) for k, v in self.timings.items()},
            notes=self.notes,
            faithfulness=self.faithfulness.to_dict() if self.faithfulness else None,
            calibration=self.calibration,
        )
        return d


def calibration_sentence(recognizer: EmotionRecognizer, has_audio: bool, modality: str, explanation) -> Optional[str]:
    """The checkpoint's cross-validation record for answers as sure as this one (audio answers only)."""
    table = recognizer.calibration_for(has_audio)
    return table.sentence(modality, float(explanation.probabilities[explanation.target])) if table else None


def analyze(
    recognizer: EmotionRecognizer,
    audio=None,
    transcript: Optional[str] = None,
    modality: str = "both",
    *,
    sample_rate: Optional[int] = None,
    transcriber=None,
    asr_unavailable: Optional[str] = None,
    max_seconds: Optional[float] = 30.0,
    explanations: bool = True,
    relevance: str = "occlusion",
    word_memory=None,
    alongside=None,
    while_measuring=None,
    read_all_words: bool = False,
) -> Analysis:
    """ingest -> ASR (only when the text branch needs words and none were typed), alongside it the
    audio features -> the words' features -> model -> explanations. Raises AudioInputError / PredictionError with a message for the user.

    transcriber: anything with .transcribe(float32 16 kHz) -> Transcript; None = no ASR, and
    `asr_unavailable` (the reason) is then reported in the notes when a transcript was needed.
    word_memory: a `transcript.RecentWords`; Whisper's words are kept there, and a typed transcript of
    a recording heard before is aligned to them.
    alongside(heard): work on the audio that needs no words, done while Whisper transcribes
    (`EmotionRecognizer.listen`). while_measuring(analysis): work on the finished analysis that
    needs no deletion curves (the page's figures), done while another thread measures them;
    `analysis.faithfulness` is filled in when both are done. read_all_words: read the words with the
    voice even where the checkpoint's words gate would set them aside (the paper's fusion)."""
    heard = recognizer.listen(audio, sample_rate, transcript, modality, max_seconds=max_seconds,
                              transcriber=transcriber, asr_unavailable=asr_unavailable, features=True,
                              alongside=alongside, read_all_words=read_all_words)
    timings, notes = heard.timings, heard.notes
    if word_memory is not None and heard.waveform is not None:
        if heard.source == "asr" and heard.words:
            word_memory.remember(heard.waveform, heard.words)
        elif heard.source == "typed":
            heard.words = word_memory.recall(heard.waveform)
    start = time.perf_counter()
    inputs = recognizer.prepare(heard.waveform_for_model, heard.transcript, modality, heard.encoded, heard.features)
    timings["features"] = time.perf_counter() - start
    explanation = explain(
        recognizer, inputs, relevance=relevance if explanations else "none",
        words=explanations, uniform=explanations,
    )
    timings["model"] = explanation.timings["model"]
    if explanations:
        timings["explanations"] = explanation.timings["words"] + explanation.timings["audio"]
    if inputs.tokens.unknown_words:
        notes.append(unknown_words_note(inputs.tokens))
    waveform = heard.waveform
    analysis = Analysis(
        modality=modality,
        transcript=heard.transcript,
        transcript_source=heard.source,
        words=heard.words,
        token_times=align_tokens(inputs.tokens.words, heard.words),
        duration=None if waveform is None else len(waveform) / recognizer.feature_params.sample_rate,
        mfcc=inputs.mfcc,
        encoder_states=inputs.encoder_states,
        encoder_layer=recognizer.config.encoder_layer,
        explanation=explanation,
        timings=timings,
        notes=notes,
        calibration=calibration_sentence(recognizer, inputs.has_audio, modality, explanation),
        words_set_aside=heard.words_set_aside,
    )
    if not explanations:
        if while_measuring is not None:
            while_measuring(analysis)
        return analysis

    def measure_faithfulness():
        start = time.perf_counter()
        result = faithfulness.measure(recognizer.model, inputs.batch, explanation)
        timings["faithfulness"] = time.perf_counter() - start
        return result

    if while_measuring is None:
        analysis.faithfulness = measure_faithfulness()
        return analysis
    # The deletion curves are forward passes (torch releases the GIL); the figures are mostly
    # Python: on two cores they overlap.
    with ThreadPoolExecutor(1, thread_name_prefix="faithfulness") as pool:
        measuring = pool.submit(measure_faithfulness)
        try:
            while_measuring(analysis)
        finally:
            analysis.faithfulness = measuring.result()
    return analysis
