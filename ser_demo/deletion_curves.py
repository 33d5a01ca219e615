"""Deletion and sufficiency curves: how faithful an explanation's ranking is, on one utterance.

An explanation ranks the inputs (words, or windows of audio) by importance. It is *faithful* if the
model really depends on what it ranks first. The standard measures (Samek et al. 2017; ERASER,
DeYoung et al. 2020) remove units in the ranked order and watch p(predicted class):

- deletion curve: p(target) after removing the k top-ranked units, k = 0 .. n;
- comprehensiveness (AOPC): the mean drop p(all) - p(without the top k) over k = 1 .. n; the
  larger, the better the ranking found what the answer rests on;
- sufficiency: the mean drop p(all) - p(only the top k) over k = 0 .. n-1; the smaller, the more
  the top-ranked units carry the answer on their own.
Both lie in [p(all) - 1, p(all)]. A ranking is compared with random orders (averaged over
several seeded permutations, in pairs with their reverse): an explanation no better than random explains nothing.

Words are ranked by attention (summed over the context vectors), by leave-one-word-out influence
and, for the corpus table, by gradient x input; audio windows by occlusion. Removing a word can
mean deleting it (the sentence gets shorter: word sequences the model never saw) or masking it
with the unknown-word vector (zero, what every out-of-vocabulary word becomes in training and at
inference; the sentence keeps its length). Masking is the default and `removal` says which one a
result used. Audio windows are masked with the normalised-feature baseline 0 (the average
training frame, as occlusion does) or cut out.

All variants of one utterance run batched through the model's own forward pass, `chunk` at a time
(bounded memory); the audio statistics are computed once and shared by every word variant.
No UI code here: `faithfulness` measures the page's explanations with these curves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .hidden_audio import AUDIO_STREAMS, audio_frames, hidden_audio_statistics, hidden_streams
from .model import MSCNN_SPU_ATT

REMOVALS = ("mask", "delete")
# Names of the orders, as tables and plots show them.
ATTENTION, LEAVE_ONE_OUT, GRADIENT, OCCLUSION, RANDOM = "attention", "leave-one-out", "gradient", "occlusion", "random"


@dataclass
class DeletionCurves:
    """p(target) as the top-ranked units of each order are removed (deletion) or kept alone."""

    unit: str  # "word" or "window"
    removal: str  # "mask" or "delete"
    target: int  # the class whose probability is followed (the model's answer on the full input)
    n_units: int
    steps: np.ndarray  # (S,) numbers of units, 0 .. n_units (all of them for words)
    deletion: dict = field(default_factory=dict)  # order -> (S,) p(target) without its top steps[i] units
    kept: dict = field(default_factory=dict)  # order -> (S,) p(target) with only its top steps[i] units
    orders: dict = field(default_factory=dict)  # order -> unit indices, most important first
    scores: dict = field(default_factory=dict)  # order -> (n_units,) importance of each unit
    permutations: int = 0  # random orders averaged into deletion["random"]
    without_all: Optional[np.ndarray] = None  # (n_labels,) probabilities with every unit removed
    unit_seconds: Optional[float] = None  # window length (audio)

    @property
    def base(self) -> float:
        return float(next(iter(self.deletion.values()))[0])

    def aopc(self, order: str) -> float:
        """Comprehensiveness: mean drop of p(target) over k = 1 .. n units removed."""
        return float(np.mean(self.base - self.deletion[order][1:]))

    def sufficiency(self, order: str) -> float:
        """Mean drop of p(target) when only the top k units are kept, k = 0 .. n-1."""
        return float(np.mean(self.base - self.kept[order][:-1]))

    def drop(self, order: str, k: int) -> float:
        """p(all) - p(without the top k units of `order`); k must be one of `steps`."""
        where = np.flatnonzero(self.steps == k)
        if not len(where):
            raise ValueError(f"{k} units is not a measured step ({self.steps.tolist()})")
        return float(self.base - self.deletion[order][where[0]])

    @property
    def label_changes(self) -> bool:
        """Does removing every unit change the model's answer?"""
        return self.without_all is not None and int(np.argmax(self.without_all)) != self.target

    def to_dict(self) -> dict:
        def rounded(x):
            return np.round(np.asarray(x, dtype=np.float64), 5).tolist()

        return {
            "unit": self.unit, "removal": self.removal, "n_units": self.n_units,
            "steps": self.steps.tolist(), "random_permutations": self.permutations,
            "deletion": {k: rounded(v) for k, v in self.deletion.items()},
            "kept": {k: rounded(v) for k, v in self.kept.items()},
            "aopc": {k: round(self.aopc(k), 5) for k in self.deletion},
            "sufficiency": {k: round(self.sufficiency(k), 5) for k in self.kept},
        }


def ranking(scores: np.ndarray) -> np.ndarray:
    """Unit indices by decreasing score; ties keep their order in the utterance."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b between two importance scores of the same units; None below 2 units or
    when one of them ranks nothing (all scores equal)."""
    from scipy.stats import kendalltau

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(kendalltau(a, b).statistic)


def measured_steps(n: int, max_points: Optional[int] = None) -> np.ndarray:
    """0 .. n, or about `max_points` evenly spaced of them (always with 0, 1, 2 and n)."""
    if max_points is None or n <= max_points:
        return np.arange(n + 1)
    spaced = np.round(np.linspace(0, n, max_points + 1)).astype(int)
    return np.unique(np.concatenate([spaced, [0, 1, 2, n]]))


def _curve_masks(order: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep-masks (S, n) without the first steps[i] units of `order`, and with only them."""
    n = len(order)
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    removed = rank[None, :] < steps[:, None]
    return ~removed, removed


def _curves(keep_probabilities, orders: dict, steps: np.ndarray, permutations: np.ndarray, target: int,
            sufficiency: bool = True):
    """Run every deletion (and sufficiency) variant, each distinct one once, and read p back."""
    masks, slots = [], []
    for order in [*orders.values(), *permutations]:
        without, only = _curve_masks(order, steps)
        masks += [without, only] if sufficiency else [without]
    per_order = 2 if sufficiency else 1
    everything_removed = np.zeros((1, masks[0].shape[1]), dtype=bool)
    masks = np.concatenate(masks + [everything_removed])
    unique, inverse = np.unique(masks, axis=0, return_inverse=True)
    probabilities = keep_probabilities(unique)[inverse.reshape(-1)]  # (M, n_labels)
    p = probabilities[:-1, target].reshape(-1, per_order, len(steps))
    deletion = {name: p[i, 0] for i, name in enumerate(orders)}
    kept = {name: p[i, 1] for i, name in enumerate(orders)} if sufficiency else {}
    if len(permutations):
        deletion[RANDOM] = p[len(orders):, 0].mean(0)
        if sufficiency:
            kept[RANDOM] = p[len(orders):, 1].mean(0)
    return deletion, kept, probabilities[-1]


def _random_orders(n: int, permutations: int, seed: int) -> np.ndarray:
    """Seeded random orders, each followed by its reverse: keeping only the top k of an order
    removes the top n - k of its reverse, so on symmetric steps (all of 0..n, as for words) the
    sufficiency variants repeat deletion variants and run once. Every order is still uniformly
    random, so their mean is an unbiased estimate of the random baseline."""
    rng = np.random.default_rng(seed)
    orders = []
    while len(orders) < permutations:
        order = rng.permutation(n)
        orders += [order, order[::-1]]
    return np.stack(orders[:permutations]) if permutations else np.zeros((0, n), int)


def _run(model: MSCNN_SPU_ATT, fixed: dict, varied: dict, chunk: int) -> np.ndarray:
    """Probabilities of every variant: `varied` tensors have one row per variant, `fixed` one row
    shared by all (expanded, never copied). `chunk` variants per forward pass."""
    n = next(iter(varied.values())).shape[0]
    out = []
    with torch.no_grad():
        for first in range(0, n, chunk):
            part = {k: v[first:first + chunk] for k, v in varied.items()}
            rows = next(iter(part.values())).shape[0]
            shared = {k: v if not isinstance(v, Tensor) or v.shape[0] != 1 or k == "audio_statistics"
                      else v.expand(rows, *v.shape[1:]) for k, v in fixed.items()}
            statistics = part.pop("audio_statistics", shared.pop("audio_statistics", None))
            logits = model(**shared, **part, audio_statistics=statistics).logits
            out.append(logits.softmax(-1).cpu().numpy())
    return np.concatenate(out)


# --- words -----------------------------------------------------------------------------------


def word_variants(words: Tensor, keep: np.ndarray, removal: str) -> tuple[Tensor, Tensor]:
    """(V, width, D) word vectors and (V,) lengths for keep-masks (V, n): removed words deleted
    (the kept ones close up, in their order) or masked with the unknown-word vector (zero)."""
    keep_t = torch.as_tensor(keep, device=words.device)
    if removal == "mask":
        return words[None] * keep_t[..., None].to(words.dtype), torch.full((len(keep),), words.shape[0], device=words.device)
    lengths = keep_t.sum(1)
    variants = torch.zeros(len(keep), max(int(lengths.max()) if len(keep) else 0, 1), words.shape[1], dtype=words.dtype,
                           device=words.device)
    for row, kept in enumerate(keep_t):
        variants[row, : int(lengths[row])] = words[kept]
    return variants, lengths


def _word_runner(model: MSCNN_SPU_ATT, batch: dict, removal: str, audio_statistics: Optional[Tensor], chunk: int):
    n = int(batch["word_lengths"][0])
    words = batch["words"][0, :n]
    fixed = {k: v for k, v in batch.items() if k not in ("words", "word_lengths")}
    if audio_statistics is not None:
        fixed["audio_statistics"] = audio_statistics

    def probabilities(keep: np.ndarray) -> np.ndarray:
        variants, lengths = word_variants(words, keep, removal)
        return _run(model, fixed, {"words": variants, "word_lengths": lengths}, chunk)

    return probabilities


def word_gradient(model: MSCNN_SPU_ATT, batch: dict, target: int) -> Optional[np.ndarray]:
    """Gradient x input per word: sum over the vector of d p(target) / d w * w, a first-order
    estimate of the drop when the word is masked (w -> the zero, unknown-word vector). The
    gradient is taken for the input only (torch.autograd.grad), so the model's parameters are
    never written and concurrent requests cannot mix their gradients."""
    if "words" not in batch or int(batch["word_lengths"][0]) == 0:
        return None
    n = int(batch["word_lengths"][0])
    words = batch["words"].clone().requires_grad_(True)
    inputs = {k: v for k, v in batch.items() if k != "words"}
    with torch.enable_grad():
        p = model(words=words, **inputs).logits.softmax(-1)[0, target]
        (grad,) = torch.autograd.grad(p, words)
    return (grad * words.detach())[0, :n].sum(-1).cpu().numpy()


def word_deletion_curves(
    model: MSCNN_SPU_ATT,
    batch: dict,
    target: int,
    *,
    attention: Optional[np.ndarray] = None,
    influence: Optional[np.ndarray] = None,
    gradient: Optional[np.ndarray] = None,
    removal: str = "mask",
    permutations: int = 10,
    seed: int = 0,
    audio_statistics: Optional[Tensor] = None,
    chunk: int = 256,
    max_points: Optional[int] = None,
) -> Optional[DeletionCurves]:
    """Deletion and sufficiency curves over the words of one utterance (a batch of one).

    attention: (n_stats, Tw) weights, ranked by their sum over the context vectors; influence:
    leave-one-word-out drops of p(target) under the same `removal` (computed when None);
    gradient: per-word scores (optional); max_points bounds the numbers of words measured (long
    transcripts). None when there are no words."""
    if removal not in REMOVALS:
        raise ValueError(f"removal must be one of {REMOVALS}, got {removal!r}")
    if not model.config.use_text or "words" not in batch or int(batch["word_lengths"][0]) == 0:
        return None
    n = int(batch["word_lengths"][0])
    if audio_statistics is None and model.config.use_audio and audio_frames(batch):
        with torch.no_grad():
            audio_statistics = model(**batch).audio_statistics[:1]
    probabilities = _word_runner(model, batch, removal, audio_statistics, chunk)
    base = probabilities(np.ones((1, n), dtype=bool))[0, target]
    if influence is None:
        influence = base - probabilities(~np.eye(n, dtype=bool))[:, target]
    scores = {}
    if attention is not None:
        scores[ATTENTION] = np.asarray(attention, dtype=np.float64)[:, :n].sum(0)
    scores[LEAVE_ONE_OUT] = np.asarray(influence, dtype=np.float64)
    if gradient is not None:
        scores[GRADIENT] = np.asarray(gradient, dtype=np.float64)
    orders = {name: ranking(s) for name, s in scores.items()}
    steps = measured_steps(n, max_points)
    deletion, kept, without_all = _curves(probabilities, orders, steps, _random_orders(n, permutations, seed), target)
    return DeletionCurves("word", removal, target, n, steps, deletion, kept, orders, scores, permutations, without_all)


# --- audio windows ---------------------------------------------------------------------------


def frame_variants(batch: dict, windows: Sequence[tuple[int, int]], keep: np.ndarray, removal: str) -> dict:
    """Audio inputs for keep-masks (V, n_windows) over windows of 10 ms frames, in every
    front-end of the batch (MFCCs; Whisper encoder states, two frames each, as occlusion does:
    a state goes when any of its frames does): removed windows set to the baseline 0 (mask) or
    cut out (delete). Returns {features: (V, C, T), lengths: (V,)} per front-end."""
    varied = {}
    lengths_names = {name: lengths_name for name, lengths_name, _ in AUDIO_STREAMS}
    for name, (x, kept) in hidden_streams(batch, windows, keep).items():
        lengths_name, steps = lengths_names[name], x.shape[-1]
        if removal == "mask":
            varied[name] = x[None] * kept[:, None, :].to(x.dtype)
            varied[lengths_name] = torch.full((len(keep),), steps, device=x.device)
            continue
        lengths = kept.sum(1)
        variants = torch.zeros(len(keep), x.shape[0], max(int(lengths.max()), 1), dtype=x.dtype, device=x.device)
        for row in range(len(keep)):
            variants[row, :, : int(lengths[row])] = x[:, kept[row]]
        varied[name], varied[lengths_name] = variants, lengths
    return varied


def window_deletion_curves(
    model: MSCNN_SPU_ATT,
    batch: dict,
    target: int,
    windows: Sequence[tuple[int, int]],
    relevance: np.ndarray,
    *,
    removal: str = "mask",
    permutations: int = 2,
    max_points: Optional[int] = 4,
    seed: int = 0,
    frame_seconds: float = 0.01,
    chunk: int = 16,
    sufficiency: bool = True,
    local: bool = True,
) -> Optional[DeletionCurves]:
    """Deletion (and with `sufficiency`, keep-only) curves over audio windows ((first, end)
    frames), ranked by `relevance` (e.g. the occlusion drops) against random orders. Long
    recordings are measured at about `max_points` numbers of windows, which bounds the cost.
    Masked variants get their audio statistics from `hidden_audio` (only the convolution outputs
    next to a hidden window are recomputed; `local=False` runs the whole audio branch per variant,
    the reference it equals)."""
    if removal not in REMOVALS:
        raise ValueError(f"removal must be one of {REMOVALS}, got {removal!r}")
    if not model.config.use_audio or not len(windows) or audio_frames(batch) == 0:
        return None
    windows = [(int(a), int(b)) for a, b in windows]
    streams = {key for name, lengths, _ in AUDIO_STREAMS for key in (name, lengths)}
    fixed = {k: v for k, v in batch.items() if k not in streams}

    def probabilities(keep: np.ndarray) -> np.ndarray:
        if removal == "mask" and local:
            statistics = hidden_audio_statistics(model, hidden_streams(batch, windows, keep))
            return _run(model, fixed, {"audio_statistics": statistics}, max(chunk, 256))
        return _run(model, fixed, frame_variants(batch, windows, keep, removal), chunk)

    n = len(windows)
    scores = {OCCLUSION: np.asarray(relevance, dtype=np.float64)}
    orders = {OCCLUSION: ranking(scores[OCCLUSION])}
    steps = measured_steps(n, max_points)
    deletion, kept, without_all = _curves(probabilities, orders, steps, _random_orders(n, permutations, seed), target,
                                          sufficiency)
    size = max(b - a for a, b in windows) * frame_seconds
    return DeletionCurves("window", removal, target, n, steps, deletion, kept, orders, scores, permutations,
                          without_all, unit_seconds=size)
