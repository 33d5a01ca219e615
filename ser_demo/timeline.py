"""Emotion over time: a recording of up to several minutes as a sequence of labelled utterances
and a smoothed probability curve.

    from ser_demo import load_recognizer
    from ser_demo.timeline import timeline
    result = timeline(load_recognizer(), "interview.flac")
    for segment in result.segments:
        print(segment.start, segment.end, segment.label, segment.text)

The recording is ingested by the same rules and messages as a single clip (`ingest.load_audio`),
with its own, larger duration limit and without trimming (times stay those of the file). It is
cut into utterances (`segments`: at pauses found by voice activity, and where there is speech
recognition further at Whisper's segments, each with its words), and each utterance is classified with its own
audio and its own words through the recognizer's stages, exactly as `predict` classifies a clip.
Stretches without speech are labelled "silence" and never classified. No UI code here.

Whisper hears each utterance alone, so each gets its own words: a checkpoint whose encoder reads
Whisper's padded 30 s window (context "window") makes one pass per utterance, and Whisper decodes
from that same pass; otherwise faster-whisper encodes a window fitted to the utterance (about half
a 30 s window's cost for a short one, `asr.FITTED_WINDOW_PADDING_SECONDS`). A transcriber that
always pads to 30 s (openai-whisper) transcribes the utterances together instead, one window per
~28 s of speech, and each utterance gets the words heard during it; Whisper's word times drift
within a long window, so a last word may land in the next utterance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .transcript import UNSURE_LOG_PROBABILITY, Phrase
from .audio import SAMPLE_RATE
from .calibration import CSV_COLUMNS, Calibration
from .ingest import TRIM_PADDING_SECONDS, AudioInputError, load_audio, speech_bounds
from .recognizer import EmotionRecognizer
from .segments import (Piece, merge_short, phrases_by_piece, split_at_phrases, split_long, tile,
                       transcription_windows, voice_activity)
from .utterance import PredictionError

TIMELINE_MAX_SECONDS = 600.0  # a single clip stops at 30 s; a timeline takes minutes
CURVE_STEP_SECONDS = 0.1
SMOOTHING_SECONDS = 0.5  # standard deviation of the Gaussian that smooths the curve
SILENCE = "silence"
CSV_FIELDS = ("start", "end", "kind", "label")  # then one probability column per label, then text

_OWN = object()  # timeline(transcriber=...) default: the recognizer's own transcriber


@dataclass
class Segment:
    start: float  # seconds from the start of the recording
    end: float
    label: str  # one of the model's labels, or "silence"
    probabilities: Optional[dict[str, float]] = None  # None for silence
    text: str = ""
    words: list = field(default_factory=list)  # transcript.Word, times from the start of the recording
    calibration: Optional[dict] = None  # how often answers as sure were right in cross-validation
    words_set_aside: bool = False  # `text` carried no emotion the text branch was sure of: the voice answered alone

    @property
    def kind(self) -> str:
        return SILENCE if self.probabilities is None else "speech"

    def to_dict(self) -> dict:
        return {
            "start": round(self.start, 3), "end": round(self.end, 3), "kind": self.kind, "label": self.label,
            "probabilities": self.probabilities, "calibration": self.calibration, "text": self.text,
            "words_set_aside": self.words_set_aside,
            "words": [{"text": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words],
        }


@dataclass
class Timeline:
    duration: float
    labels: tuple
    modality: str
    segmentation: str  # "asr" (Whisper's segments) or "voice activity"
    segments: list[Segment]
    times: np.ndarray  # (T,) centres of the curve's steps, seconds
    curve: np.ndarray  # (T, n_labels) smoothed probabilities; NaN where there is no speech
    timings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    waveform: Optional[np.ndarray] = field(default=None, repr=False)  # the ingested recording, 16 kHz

    @property
    def transcript(self) -> str:
        return " ".join(s.text for s in self.segments if s.text).strip()

    def to_dict(self) -> dict:
        """JSON-ready: the command line's --json and the app's /timeline API."""
        curve = np.round(self.curve.astype(np.float64), 4)
        return {
            "duration": round(self.duration, 3),
            "labels": list(self.labels),
            "modality": self.modality,
            "segmentation": self.segmentation,
            "transcript": self.transcript,
            "segments": [s.to_dict() for s in self.segments],
            "curve": {
                "step": CURVE_STEP_SECONDS,
                "times": np.round(self.times, 3).tolist(),
                "probabilities": {
                    label: [None if np.isnan(v) else float(v) for v in curve[:, j]] for j, label in enumerate(self.labels)
                },
            },
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "notes": self.notes,
        }

    def csv_header(self) -> list[str]:
        return [*CSV_FIELDS, *self.labels, *CSV_COLUMNS, "text", "words_set_aside"]

    def csv_rows(self) -> list[list]:
        """One row per segment, in `csv_header` order; silence has empty probabilities."""
        rows = []
        for s in self.segments:
            probabilities = [f"{s.probabilities[label]:.4f}" if s.probabilities else "" for label in self.labels]
            rows.append([f"{s.start:.2f}", f"{s.end:.2f}", s.kind, s.label, *probabilities,
                         *Calibration.columns(s.calibration), s.text, "yes" if s.words_set_aside else ""])
        return rows


def timeline(
    recognizer: EmotionRecognizer,
    recording,
    sample_rate: Optional[int] = None,
    *,
    modality: str = "both",
    max_seconds: Optional[float] = TIMELINE_MAX_SECONDS,
    transcriber=_OWN,
    asr_unavailable: Optional[str] = None,
    progress: Optional[Callable[[float, str], None]] = None,
    read_all_words: bool = False,
) -> Timeline:
    """Segments with labels and a smoothed curve for `recording` (a path, file bytes, a Gradio
    (rate, array) pair, or an array with `sample_rate`). Whisper (`transcriber`, by default the
    recognizer's own) finds the utterances and their words when the text branch is used; audio-only
    requests, and any request without Whisper, are cut by voice activity. `progress(fraction,
    message)` is called as the work advances. `read_all_words` reads every utterance's words with
    its voice, past the checkpoint's words gate (`ser_demo.words_gate`), as `predict` does. Raises
    AudioInputError / PredictionError with a message for the user."""
    report = progress or (lambda fraction, message: None)
    use_audio, use_text = recognizer.branches(modality)
    transcriber = recognizer.transcriber if transcriber is _OWN else transcriber
    timings, notes = {}, []
    start = time.perf_counter()
    report(0.0, "reading the recording")
    # Not trimmed: the segments' times must be the recording's own.
    waveform = load_audio(recording, sample_rate, max_seconds=max_seconds)
    duration = len(waveform) / SAMPLE_RATE
    timings["ingest"] = time.perf_counter() - start

    asr = use_text and transcriber is not None
    if use_text and not asr:
        if not use_audio:
            raise PredictionError(
                "a text-only timeline needs speech recognition, which is not available"
                + (f" ({asr_unavailable})" if asr_unavailable else "") + ": choose audio + text or audio only"
            )
        notes.append("speech recognition is not available"
                     + (f" ({asr_unavailable})" if asr_unavailable else "")
                     + ": the text branch saw no words")
    # Utterances are cut at pauses before Whisper runs, so that one encoder pass per utterance
    # serves both its transcription and the model where it can (see `classify`).
    spans = tile(merge_short(split_long(merge_short(voice_activity(waveform)))), duration)
    pieces = [piece for _, _, piece in spans if piece is not None]
    segments, unknown, work, done = [], {}, {"unclassified": 0}, -1
    heard, first = None, 0.0  # Whisper's segments per utterance, when it transcribed them apart
    if asr and not (recognizer.shares_encoder_with(transcriber) or getattr(transcriber, "fits_window", False)):
        heard, first = transcribe_in_windows(transcriber, waveform, pieces, work, report), 0.5
    for i, (begin, end, piece) in enumerate(spans):
        if piece is not None:
            done += 1
            report(first + (1 - first) * done / len(pieces), f"utterance {done + 1} of {len(pieces)}")
        # An utterance may reach into the silence beside it for the soft onset and decay that
        # trimming keeps around a clip (silences are >= 0.5 s: no other speech is in reach).
        lo = spans[i - 1][0] if i > 0 and spans[i - 1][2] is None else begin
        hi = spans[i + 1][1] if i + 1 < len(spans) and spans[i + 1][2] is None else end
        segments += classify(recognizer, waveform, begin, end, piece, modality, unknown, work,
                             transcriber if asr and heard is None else None, reach=(lo, hi),
                             phrases=None if heard is None or piece is None else heard[done],
                             read_all_words=read_all_words)
    unclassified, unsure, set_aside = work.pop("unclassified"), work.pop("unsure", 0), work.pop("set aside", 0)
    timings.update(work)
    if unclassified:
        notes.append(f"{unclassified} of {unclassified + sum(s.kind == 'speech' for s in segments)} utterances "
                     f"held too little speech to classify: labelled {SILENCE}")
    if unsure:
        notes.append(f"Whisper was unsure of the words it heard in {unsure} utterance{'s' * (unsure > 1)} (mean log-probability "
                     f"below {UNSURE_LOG_PROBABILITY:.1f}; Whisper tiny.en knows English only): they were left out, "
                     "and the voice answered alone")
    config = recognizer.config
    if set_aside:
        notes.append(f"the words of {set_aside} utterance{'s' * (set_aside > 1)} carry no emotion the text branch is sure of "
                     f"({config.words_gate_rule}): they were set aside, "
                     "and the voice answered alone")
    elif read_all_words and asr and use_audio and config.words_gate is not None:
        notes.append("every utterance's words were read with its voice, as asked: the words gate (set aside when "
                     f"{config.words_gate_rule}) was off")
    if unknown:
        notes.append("words without a GloVe vector (the model sees zeros for them): " + ", ".join(unknown))
    times, curve = probability_curve(segments, duration, recognizer.labels)
    timings["total"] = time.perf_counter() - start
    report(1.0, "done")
    return Timeline(duration, tuple(recognizer.labels), modality, "asr" if asr else "voice activity", segments,
                    times, curve, timings, notes, waveform)


def transcribe_in_windows(transcriber, waveform: np.ndarray, pieces: list[Piece], work: dict,
                          report: Callable[[float, str], None]) -> list[list]:
    """Whisper's segments (recording times) heard during each of `pieces`, from one transcription
    per group of utterances that fits Whisper's window; progress runs from 0 to 0.5."""
    heard = []
    windows = transcription_windows(pieces, padding=TRIM_PADDING_SECONDS)
    for k, group in enumerate(windows):
        report(0.5 * k / len(windows), f"speech recognition, window {k + 1} of {len(windows)}")
        first = int(max(0.0, group[0].start - TRIM_PADDING_SECONDS) * SAMPLE_RATE)
        last = int((group[-1].end + TRIM_PADDING_SECONDS) * SAMPLE_RATE)
        t = time.perf_counter()
        result = transcriber.transcribe(waveform[first:last])
        work["asr"] = work.get("asr", 0.0) + time.perf_counter() - t
        found = result.phrases or [Phrase(result.text, 0.0, (min(last, len(waveform)) - first) / SAMPLE_RATE, result.words)]
        heard += phrases_by_piece([p.shifted(first / SAMPLE_RATE) for p in found], group)
    return heard


def classify(recognizer: EmotionRecognizer, waveform: np.ndarray, begin: float, end: float,
             piece: Optional[Piece], modality: str, unknown: dict, work: dict, transcriber=None,
             reach: Optional[tuple[float, float]] = None, phrases: Optional[list] = None,
             read_all_words: bool = False) -> list[Segment]:
    """One span of the timeline: silence as it is, speech through the recognizer's own stages
    (listen -> prepare -> forward) with its own audio and its own words, as `predict` classifies
    a clip. With a `transcriber`, Whisper decodes the words from the encoder pass that the model
    reads; or `phrases` are what Whisper heard during it (recording times). Where Whisper's
    segments cut the utterance further (sentences without a pause between them), each part is
    classified alone, with its own pass and its segment's words. `work` gathers seconds per
    stage; `reach` bounds the audio around the speech that listen may trim (default: the span
    itself); `read_all_words` passes the words gate, as in `listen`."""
    if piece is None:
        return [Segment(begin, end, SILENCE)]
    use_audio, use_text = recognizer.branches(modality)
    if phrases and use_audio and recognizer.leaves_out(_words_of(phrases)):
        work["unsure"] = work.get("unsure", 0) + 1  # the voice answers alone, as `listen` does for one clip
        phrases = []
    if phrases is not None:
        parts = split_at_phrases(piece, phrases)
        if len(parts) > 1:
            return split(recognizer, waveform, begin, end, parts, modality, unknown, work, read_all_words)
        piece = parts[0]
    # A little audio around the speech, as ingestion keeps around trimmed clips; listen trims it.
    lo, hi = reach or (begin, end)
    first = int(max(lo, piece.start - TRIM_PADDING_SECONDS) * SAMPLE_RATE)
    last = int(min(hi, piece.end + TRIM_PADDING_SECONDS) * SAMPLE_RATE)
    audio, text = waveform[first:last], piece.text if use_text else ""
    try:
        heard = recognizer.listen(audio, SAMPLE_RATE, text, modality, max_seconds=None, transcriber=transcriber,
                                  read_all_words=read_all_words)
        for stage, seconds in heard.timings.items():  # ingest (of the utterance: trimming), encoder, asr
            stage = "trim" if stage == "ingest" else stage
            work[stage] = work.get(stage, 0.0) + seconds
        work["unsure"] = work.get("unsure", 0) + bool(heard.unsure_words)
        work["set aside"] = work.get("set aside", 0) + bool(heard.words_set_aside)
        if transcriber is not None:
            offset = (first + speech_bounds(audio)[0]) / SAMPLE_RATE  # Whisper's times are the trimmed clip's
            parts = split_at_phrases(piece, [p.shifted(offset) for p in heard.phrases])
            if len(parts) > 1:
                return split(recognizer, waveform, begin, end, parts, modality, unknown, work, read_all_words)
            piece, text = parts[0], heard.transcript or heard.words_set_aside
        t = time.perf_counter()
        inputs = recognizer.prepare(heard.waveform_for_model, heard.transcript, modality, heard.encoded)
        probabilities, _ = recognizer.forward(inputs)
        work["classify"] = work.get("classify", 0.0) + time.perf_counter() - t
    except (AudioInputError, PredictionError):  # no speech left after trimming, or no words for text only
        work["unclassified"] += 1
        return [Segment(begin, end, SILENCE, None, text, piece.words)]
    unknown.update(dict.fromkeys(inputs.tokens.unknown_words))
    labels = recognizer.labels
    calibration = recognizer.calibration_record(modality, inputs.has_audio, float(np.max(probabilities)))
    return [Segment(begin, end, labels[int(np.argmax(probabilities))],
                    {label: float(p) for label, p in zip(labels, probabilities)}, text, piece.words, calibration,
                    words_set_aside=bool(heard.words_set_aside))]


def _words_of(phrases: list) -> list:
    return [w for phrase in phrases for w in phrase.words]


def split(recognizer: EmotionRecognizer, waveform: np.ndarray, begin: float, end: float, parts: list[Piece],
          modality: str, unknown: dict, work: dict, read_all_words: bool = False) -> list[Segment]:
    """The span [begin, end) cut into `parts`, each classified alone with its own words."""
    edges = [begin, *(part.start for part in parts[1:]), end]
    return [segment for part, b, e in zip(parts, edges[:-1], edges[1:])
            for segment in classify(recognizer, waveform, b, e, part, modality, unknown, work,
                                    read_all_words=read_all_words)]


def probability_curve(segments: list[Segment], duration: float, labels, step: float = CURVE_STEP_SECONDS,
                      smoothing: float = SMOOTHING_SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's probabilities held over its span, then smoothed by a Gaussian over the
    speech only (silence neither pulls the curve down nor gets a value: NaN there)."""
    times = (np.arange(max(1, int(np.ceil(duration / step)))) + 0.5) * step
    raw = np.full((len(times), len(labels)), np.nan)
    for s in segments:
        if s.probabilities is not None:
            raw[(times >= s.start) & (times < s.end)] = [s.probabilities[label] for label in labels]
    speech = ~np.isnan(raw[:, 0])
    radius = int(np.ceil(3 * smoothing / step))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) * step / smoothing) ** 2)
    weight = np.convolve(speech.astype(np.float64), kernel, mode="same")
    curve = np.full_like(raw, np.nan)
    for j in range(len(labels)):
        total = np.convolve(np.where(speech, raw[:, j], 0.0), kernel, mode="same")
        curve[speech, j] = total[speech] / weight[speech]
    return times, curve
