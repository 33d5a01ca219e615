"""The words gate (not in the paper): the words move the voice's answer only when they carry an
emotion that the text branch, reading them alone, is sure of.

Most of what people say carries no emotion in its words, and an acted corpus's script ("Kids are
talking by the door") none at all; the fused model still reads such words, and in cross-validation
they changed a few of the voice's answers, more of them to wrong than to right. So a checkpoint
may set `ModelConfig.words_gate`: the least probability that the text branch, given the words and
no audio, must put on a label, and `words_gate_labels`: the labels that count (None: any). Below
it the words are set aside and the voice answers alone, everywhere the voice is read (the app, the
timeline, `train cv` and `train evaluate`); at or above it the model reads voice and words
together, as the paper does. A pass of the text branch alone costs about 2 ms. Without audio (text
only) the words are always read.

The bundled checkpoint sets 0.5 on angry, happy and sad (README, "A gate for words that carry no
emotion"): counting any label let through sentences the text branch was sure were neutral, and
those pulled emotional voices to neutral; neutral wording is no evidence of a neutral voice.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def check_words_gate(threshold: Optional[float], gate_labels: Optional[Sequence[str]] = None,
                     labels: Sequence[str] = ()) -> None:
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 < threshold < 1.0):
        raise ValueError(f"words_gate must be a probability between 0 and 1 (e.g. 0.5) or null, got {threshold!r}")
    if gate_labels is None:
        return
    if threshold is None:
        raise ValueError("words_gate_labels needs words_gate: the probability that those labels must reach")
    if not gate_labels or len(set(gate_labels)) != len(gate_labels) or set(gate_labels) - set(labels):
        raise ValueError(f"words_gate_labels must be distinct labels of this checkpoint {tuple(labels)}, got {gate_labels!r}")


def words_are_read(text_alone: np.ndarray, threshold: Optional[float], labels: Sequence[str] = (),
                   gate_labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Per row of `text_alone` ((n, n_labels) probabilities of the text branch given the words and no
    audio, columns in the order of `labels`), whether the words are read with the voice: when the
    text branch puts at least `threshold` on one label (one of `gate_labels` if given); always
    without a gate."""
    text_alone = np.atleast_2d(text_alone)
    if threshold is None:
        return np.ones(len(text_alone), dtype=bool)
    if gate_labels is not None:
        text_alone = text_alone[:, label_columns(labels, gate_labels)]
    return text_alone.max(-1) >= threshold


def label_columns(labels: Sequence[str], names: Sequence[str]) -> list[int]:
    """The columns of `names` in probabilities ordered as `labels`."""
    return [list(labels).index(name) for name in names]


def gate_rule(threshold: float, gate_labels: Optional[Sequence[str]] = None) -> str:
    """The gate's rule in words, for cards, logs and notes: when the words are set aside."""
    counted = "its answer" if gate_labels is None else f"each of {listed(gate_labels, 'and')}"
    return f"the text branch, reading the words alone, gives less than {100 * threshold:.0f} % to {counted}"


def listed(names: Sequence[str], last: str) -> str:
    """("angry", "happy", "sad"), "or" -> "angry, happy or sad"."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


def set_aside_note(words: str, text_alone: np.ndarray, labels: Sequence[str], threshold: float,
                   gate_labels: Optional[Sequence[str]] = None) -> str:
    """What the page says when the gate sets the words aside."""
    best = int(np.argmax(text_alone))
    surest = f"{labels[best]} at {100 * float(text_alone[best]):.0f} %"
    if gate_labels is None:
        why = f"read alone, its surest answer is {surest}, under this checkpoint's {100 * threshold:.0f} %"
    else:
        top = max(label_columns(labels, gate_labels), key=lambda j: text_alone[j])
        why = (f"read alone, it gives {listed(gate_labels, 'or')} at most {100 * float(text_alone[top]):.0f} % "
               f"({labels[top]}), under this checkpoint's {100 * threshold:.0f} %; its surest answer is {surest}")
    return (f'the words "{words}" carry no emotion the text branch is sure of ({why}): '
            "the voice answers alone (choose text only to see what the words say)")
