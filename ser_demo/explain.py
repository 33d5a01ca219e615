"""How MSCNN-SPU-ATT reached its answer, beyond the raw attention weights.

Attention weights are not explanations by themselves (Jain & Wallace 2019; Wiegreffe & Pinter
2019): a word can carry much weight and still not change the answer, or little weight and change
it through the text SPU or SWEM. So next to the weights this module measures what the model does:

- leave-one-word-out: the predicted class's probability with each word removed from the
  transcript (all variants in one batched forward pass; the audio branch is run once and shared);
- uniform attention: the prediction with every context vector's attention spread evenly over the
  words, i.e. S_j = mean_k h_k, which shows how much the learned weighting matters;
- audio relevance over time: occlusion of short windows of audio frames (replaced by the
  normalised-feature baseline 0, the training set's average frame; every front-end the model
  reads, MFCCs and Whisper encoder states, is occluded over the same seconds) batched in one
  pass, or gradient x input on the normalised features (one forward and one backward pass).

The whole pipeline the app runs around these explanations is `analysis.analyze`.

The model's own forward pass serves every variant: its keyword options share the audio
statistics between transcripts of one recording and replace attention by uniform weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .hidden_audio import AUDIO_STREAMS, audio_frames, hidden_audio_statistics, hidden_streams
from .model import MSCNN_SPU_ATT
from .recognizer import EmotionRecognizer
from .utterance import ModelInputs

RELEVANCE_METHODS = ("occlusion", "gradient", "none")
# Variants are run in chunks of at most this many word positions / audio frames per forward
# pass, so an explanation's memory does not grow with the square of the input's length.
WORDS_PER_PASS = 4_096
FRAMES_PER_PASS = 16_384


def _expand(x: Optional[Tensor], batch: int) -> Optional[Tensor]:
    if x is None or x.shape[0] == batch:
        return x
    return x.expand(batch, *x.shape[1:])


# --- explanations ----------------------------------------------------------------------------


@dataclass
class Explanation:
    """Everything the page draws about one utterance, as plain arrays."""

    labels: tuple
    probabilities: np.ndarray  # (n_labels,)
    target: int  # index of the predicted class; every influence below is about this class
    tokens: list[str]
    known: list[bool]
    statistics: tuple  # names of the context vectors / audio SPU statistics
    kernel_sizes: tuple
    audio_statistics: Optional[np.ndarray] = None  # (Ka, n_stats, F)
    attention: Optional[np.ndarray] = None  # (n_stats, Tw)
    # leave-one-word-out: p(target) with all words minus p(target) without word i; > 0: the word
    # pushed towards the predicted class
    word_influence: Optional[np.ndarray] = None  # (Tw,)
    without_word: Optional[np.ndarray] = None  # (Tw, n_labels) probabilities without word i
    uniform_probabilities: Optional[np.ndarray] = None  # (n_labels,)
    # audio relevance: > 0 where the frames pushed towards the predicted class
    relevance_method: str = "none"
    frame_relevance: Optional[np.ndarray] = None  # (frames,)
    windows: Optional[np.ndarray] = None  # (n, 2) start and end in seconds (occlusion)
    window_relevance: Optional[np.ndarray] = None  # (n,) drop of p(target) when occluded
    frame_seconds: float = 0.01
    timings: dict = field(default_factory=dict)
    # A checkpoint with a statistics head mixes two answers into `probabilities` (the head's with
    # weight head_share); every explanation above is of that mixture, where only the network's
    # part depends on the words and on the hidden audio (the head reads the whole clip's statistics).
    network_probabilities: Optional[np.ndarray] = None  # (n_labels,) MSCNN-SPU-ATT's own answer
    head_probabilities: Optional[np.ndarray] = None  # (n_labels,) the statistics head's
    head_share: float = 0.0

    @property
    def label(self) -> str:
        return self.labels[self.target]

    @property
    def uniform_label(self) -> Optional[str]:
        if self.uniform_probabilities is None:
            return None
        return self.labels[int(np.argmax(self.uniform_probabilities))]

    def to_dict(self) -> dict:
        def rounded(x):
            return None if x is None else np.round(np.asarray(x, dtype=np.float64), 5).tolist()

        return {
            "label": self.label,
            "probabilities": {k: float(p) for k, p in zip(self.labels, self.probabilities)},
            "tokens": self.tokens,
            "unknown_tokens": [t for t, k in zip(self.tokens, self.known) if not k],
            "attention": (
                {s: rounded(self.attention[j]) for j, s in enumerate(self.statistics)}
                if self.attention is not None else {}
            ),
            "word_influence": rounded(self.word_influence),
            **({"network_probabilities": dict(zip(self.labels, map(float, self.network_probabilities))),
                "head_probabilities": dict(zip(self.labels, map(float, self.head_probabilities))),
                "head_share": self.head_share} if self.head_probabilities is not None else {}),
            "uniform_attention_probabilities": (
                {k: float(p) for k, p in zip(self.labels, self.uniform_probabilities)}
                if self.uniform_probabilities is not None else None
            ),
            "audio_relevance": {
                "method": self.relevance_method,
                "windows": rounded(self.windows),
                "window_relevance": rounded(self.window_relevance),
            },
        }


def _probs(logits: Tensor) -> np.ndarray:
    return logits.softmax(-1).detach().cpu().numpy()


@torch.no_grad()
def leave_one_word_out(
    model: MSCNN_SPU_ATT, batch: dict, audio_statistics: Optional[Tensor] = None, *,
    uniform_attention: bool = False, words_per_pass: int = WORDS_PER_PASS,
) -> Optional[np.ndarray]:
    """(Tw, n_labels) probabilities with word i removed. The Tw variants are batched, as many per
    forward pass as fit in `words_per_pass` word positions (memory O(Tw), not O(Tw^2)).

    The audio statistics do not depend on the words: pass them to skip the audio MSCNN."""
    if not model.config.use_text or "words" not in batch:
        return None
    n = int(batch["word_lengths"][0])
    if n == 0:
        return None
    words = batch["words"][0, :n]  # (Tw, D)
    width = max(n - 1, 1)  # a (1, D) zero row of length 0 stands for the empty sentence
    inputs = {k: v for k, v in batch.items() if k not in ("words", "word_lengths")}
    if audio_statistics is None and model.config.use_audio and any(name in batch for name, _, _ in AUDIO_STREAMS):
        audio_statistics = model(**batch).audio_statistics  # once, not once per chunk
    if audio_statistics is not None:
        for name, lengths, _ in AUDIO_STREAMS:
            inputs.pop(name, None)
            inputs.pop(lengths, None)
    chunk = max(1, words_per_pass // width)
    probabilities = []
    for first in range(0, n, chunk):
        rows = range(first, min(first + chunk, n))
        variants = torch.zeros(len(rows), width, words.shape[1], dtype=words.dtype, device=words.device)
        for row, i in enumerate(rows):
            variants[row, : n - 1] = torch.cat([words[:i], words[i + 1:]])
        out = model(**inputs, words=variants, word_lengths=torch.full((len(rows),), n - 1, device=words.device),
                    audio_statistics=audio_statistics, uniform_attention=uniform_attention)
        probabilities.append(_probs(out.logits))
    return np.concatenate(probabilities)


def occlusion_windows(frames: int, frame_seconds: float, window_seconds: float = 0.25,
                      max_windows: int = 40) -> list[tuple[int, int]]:
    """Non-overlapping windows of about `window_seconds` (longer for long clips, so that at most
    `max_windows` variants are run) as (first frame, end frame) pairs covering every frame."""
    if frames <= 0:
        return []
    size = max(1, int(round(window_seconds / frame_seconds)), -(-frames // max_windows))
    return [(s, min(s + size, frames)) for s in range(0, frames, size)]


@torch.no_grad()
def occlusion_relevance(
    model: MSCNN_SPU_ATT, batch: dict, target: int, base_probability: float,
    windows: Sequence[tuple[int, int]], *, frames_per_pass: int = FRAMES_PER_PASS,
) -> np.ndarray:
    """Drop of p(target) when each window (in 10 ms frames) of the normalised audio features is
    set to 0 (the average training frame), in every front-end at once. The hidden variants'
    audio statistics come from `hidden_audio` (only the convolution outputs next to the window
    are recomputed), equal to running the model on the occluded features. Variants are batched,
    as many per forward pass as fit in `frames_per_pass` frames, so memory does not grow with the
    clip's length times the number of windows."""
    audio_inputs = {key for name, lengths, _ in AUDIO_STREAMS for key in (name, lengths)}
    others = {k: v for k, v in batch.items() if k not in audio_inputs}
    padded = max([batch[name].shape[-1] * rate for name, _, rate in AUDIO_STREAMS if name in batch] or [1])
    chunk = max(1, frames_per_pass // max(padded, 1))
    drops = []
    for first in range(0, len(windows) if audio_frames(batch) else 0, chunk):
        part = windows[first:first + chunk]
        keep = np.ones((len(part), len(windows)), dtype=bool)
        keep[np.arange(len(part)), np.arange(first, first + len(part))] = False
        statistics = hidden_audio_statistics(model, hidden_streams(batch, windows, keep))
        out = model(**{k: _expand(v, len(part)) for k, v in others.items()}, audio_statistics=statistics)
        drops.append(base_probability - _probs(out.logits)[:, target])
    return np.concatenate(drops) if drops else np.zeros(0)


def gradient_x_input(model: MSCNN_SPU_ATT, batch: dict, target: int) -> np.ndarray:
    """Per 10 ms frame, the sum over features of d p(target) / d x * x, x the normalised audio
    features of every front-end (an encoder state's share is split over its two frames): a
    first-order estimate of the change in p(target) when a frame is set to the baseline 0.

    The model is shared by concurrent requests: the gradient is taken with respect to the inputs
    only (no parameter's .grad is written) and the model's train/eval mode is never touched."""
    names = [(name, rate) for name, _, rate in AUDIO_STREAMS if name in batch]
    inputs = dict(batch)
    for name, _ in names:
        inputs[name] = batch[name].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(**inputs)
        grads = torch.autograd.grad(out.logits.softmax(-1)[0, target], [inputs[name] for name, _ in names])
    frames = audio_frames(batch)
    relevance = np.zeros(frames, np.float32)
    for (name, rate), grad in zip(names, grads):
        per_frame = np.repeat((grad * inputs[name].detach())[0].sum(0).cpu().numpy() / rate, rate)[:frames]
        relevance[: len(per_frame)] += per_frame
    return relevance


def explain(
    recognizer: EmotionRecognizer,
    inputs: ModelInputs,
    *,
    relevance: str = "occlusion",
    window_seconds: float = 0.25,
    words: bool = True,
    uniform: bool = True,
) -> Explanation:
    """Run the model on `inputs` (from `recognizer.prepare`) and explain its answer.

    relevance: "occlusion" (default), "gradient" (gradient x input) or "none".
    words / uniform: compute the leave-one-word-out influences / the uniform-attention prediction.
    """
    if relevance not in RELEVANCE_METHODS:
        raise ValueError(f"relevance must be one of {RELEVANCE_METHODS}, got {relevance!r}")
    model, c = recognizer.model, recognizer.config
    batch = inputs.batch
    timings = {}
    start = time.perf_counter()
    with torch.no_grad():
        base = model(**batch)
    probs = _probs(base.logits)[0]
    target = int(probs.argmax())
    timings["model"] = time.perf_counter() - start
    has_audio = inputs.has_audio
    has_words = bool(inputs.tokens.words)
    frame_seconds = recognizer.feature_params.hop_length / recognizer.feature_params.sample_rate
    explanation = Explanation(
        labels=tuple(c.labels),
        probabilities=probs,
        target=target,
        tokens=list(inputs.tokens.words),
        known=list(inputs.tokens.known),
        statistics=tuple(c.audio_statistics),
        kernel_sizes=tuple(c.audio_kernels),
        audio_statistics=base.audio_statistics[0].cpu().numpy() if has_audio else None,
        attention=base.attention[0].cpu().numpy() if base.attention is not None and has_words else None,
        frame_seconds=frame_seconds,
    )
    if base.head_logits is not None and has_audio:
        explanation.network_probabilities = _probs(base.network_logits)[0]
        explanation.head_probabilities = _probs(base.head_logits)[0]
        explanation.head_share = c.statistics_head["share"]

    start = time.perf_counter()
    if words and has_words:
        shared = base.audio_statistics if c.use_audio else None
        explanation.without_word = leave_one_word_out(model, batch, shared)
        explanation.word_influence = probs[target] - explanation.without_word[:, target]
    if uniform and c.attends and has_words and has_audio:
        with torch.no_grad():
            uniform_out = model(**batch, uniform_attention=True)
        explanation.uniform_probabilities = _probs(uniform_out.logits)[0]
    timings["words"] = time.perf_counter() - start

    start = time.perf_counter()
    if relevance != "none" and has_audio:
        frames = audio_frames(batch)
        explanation.relevance_method = relevance
        if relevance == "occlusion":
            windows = occlusion_windows(frames, frame_seconds, window_seconds)
            drops = occlusion_relevance(model, batch, target, float(probs[target]), windows)
            per_frame = np.zeros(frames, np.float32)
            for (a, b), d in zip(windows, drops):
                per_frame[a:b] = d
            explanation.windows = np.asarray(windows, dtype=np.float64) * frame_seconds
            explanation.window_relevance = drops
            explanation.frame_relevance = per_frame
        else:
            explanation.frame_relevance = gradient_x_input(model, batch, target)
    timings["audio"] = time.perf_counter() - start
    explanation.timings = timings
    return explanation
