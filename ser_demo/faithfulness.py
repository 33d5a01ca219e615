"""Is attention an explanation here? The faithfulness of one analysis's explanations, as the page shows it.

`measure` runs the deletion curves (`deletion_curves`) of an `explain.Explanation`: its words
ranked by attention and by leave-one-out influence (and gradient x input on request), its audio
windows by their relevance (occlusion, or gradient x input summed over windows of the occlusion
size). `describe_words` / `describe_windows` say what the curves show in plain sentences, for a
student. No UI code here: `charts.deletion_curves_svg` draws the curves, the app composes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .deletion_curves import (ATTENTION, LEAVE_ONE_OUT, OCCLUSION, RANDOM, DeletionCurves, window_deletion_curves,
                              word_deletion_curves, word_gradient)
from .explain import occlusion_windows
from .model import MSCNN_SPU_ATT


@dataclass
class Faithfulness:
    """What the page shows: deletion curves for the words and for the audio windows."""

    words: Optional[DeletionCurves] = None
    windows: Optional[DeletionCurves] = None

    def to_dict(self) -> dict:
        return {"words": self.words.to_dict() if self.words else None,
                "windows": self.windows.to_dict() if self.windows else None}


# --- one utterance, as the page shows it -----------------------------------------------------


def explained_windows(explanation) -> tuple[list, Optional[np.ndarray]]:
    """(first, end) frame windows and their relevance from an `explain.Explanation`: its occlusion
    windows, or its gradient x input summed over windows of the occlusion size."""
    e = explanation
    if e.frame_relevance is None:
        return [], None
    frames = len(e.frame_relevance)
    if e.windows is not None and e.window_relevance is not None:
        windows = [(int(round(a / e.frame_seconds)), min(int(round(b / e.frame_seconds)), frames)) for a, b in e.windows]
        return windows, np.asarray(e.window_relevance)
    windows = occlusion_windows(frames, e.frame_seconds)
    return windows, np.array([e.frame_relevance[a:b].sum() for a, b in windows])


def measure(model: MSCNN_SPU_ATT, batch: dict, explanation, *, removal: str = "mask", words: bool = True,
            word_permutations: int = 6, window_permutations: int = 2, gradient: bool = False,
            window_sufficiency: bool = False) -> Faithfulness:
    """Word and window curves for an `explain.Explanation` of `batch`: words ranked by its
    attention and by leave-one-out (and gradient x input with `gradient`), windows by its
    audio relevance. Every audio variant runs the audio branch again, so the page measures the
    windows' deletion curve only (`window_sufficiency` adds the keep-only curve)."""
    e = explanation
    result = Faithfulness()
    if words and e.tokens:
        device = next(model.parameters()).device
        statistics = torch.as_tensor(e.audio_statistics, device=device)[None] if e.audio_statistics is not None else None
        grad = word_gradient(model, batch, e.target) if gradient else None
        result.words = word_deletion_curves(
            model, batch, e.target, attention=e.attention, gradient=grad, removal=removal,
            permutations=word_permutations, audio_statistics=statistics, max_points=20)
    windows, relevance = explained_windows(e)
    if windows:
        result.windows = window_deletion_curves(
            model, batch, e.target, windows, relevance, removal="mask",
            permutations=window_permutations, frame_seconds=e.frame_seconds, sufficiency=window_sufficiency)
    return result


# --- in words, for a student -----------------------------------------------------------------


def _change(drop: float) -> str:
    return f"lowers it by {drop:.2f}" if drop >= 0 else f"raises it by {-drop:.2f}"


def describe_words(curves: Optional[DeletionCurves], label: str) -> str:
    """One plain sentence with the numbers, and one on what they mean."""
    if curves is None:
        return "No words to remove (audio only, or an empty transcript)."
    how = ("masked (replaced by the unknown-word vector, so the sentence keeps its length)"
           if curves.removal == "mask" else "deleted")
    if curves.n_units == 1:
        return (f"There is one word; removing it changes p({label}) from {curves.base:.2f} to "
                f"{curves.deletion[LEAVE_ONE_OUT][-1]:.2f}. With one word no ranking can be better than another.")
    k = min(2, curves.n_units)
    parts = []
    if ATTENTION in curves.deletion:
        parts.append(f"removing the {k} most-attended words {_change(curves.drop(ATTENTION, k))}")
    parts.append(f"removing the {k} words with the most leave-one-out influence {_change(curves.drop(LEAVE_ONE_OUT, k))}")
    if RANDOM in curves.deletion:
        parts.append(f"removing {k} random words {_change(curves.drop(RANDOM, k))} "
                     f"(average of {curves.permutations} random orders)")
    first = f"p({label}) is {curves.base:.2f} with every word; " + "; ".join(parts) + f". Words are {how}."
    areas = ", ".join(f"{name} {curves.aopc(name):.2f}" for name in curves.deletion)
    kept = ", ".join(f"{name} {curves.sufficiency(name):.2f}" for name in curves.kept)
    return (first + f" Averaged over 1 to {curves.n_units} words removed (AOPC): {areas}; lost when only the "
            f"top words are kept (sufficiency, lower is better): {kept}. "
            "If attention were a faithful explanation, removing the most-attended words would hurt the "
            "answer about as much as removing the most influential ones, and clearly more than random words.")


def describe_windows(curves: Optional[DeletionCurves], label: str) -> str:
    if curves is None:
        return "No audio windows to remove (text only, or the explanations are off)."
    k = min(2, curves.n_units)
    seconds = f" of {curves.unit_seconds:.2f} s" if curves.unit_seconds else ""
    first = (f"p({label}) is {curves.base:.2f} with all {curves.n_units} windows{seconds}; hiding the {k} windows "
             f"that occlusion marks as most important {_change(curves.drop(OCCLUSION, k))}")
    if RANDOM in curves.deletion:
        first += f", hiding {k} random windows {_change(curves.drop(RANDOM, k))} (average of {curves.permutations} random orders)"
    return (first + f". Averaged over the curve (AOPC): occlusion {curves.aopc(OCCLUSION):.2f}"
            + (f", random {curves.aopc(RANDOM):.2f}" if RANDOM in curves.deletion else "")
            + ". Hidden windows are set to the average training frame. A steeper fall for the occlusion "
            "order than for random means the green moments above really are the ones the answer rests on.")
