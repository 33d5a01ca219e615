"""Training samples for the bimodal model: natural pairs, label-matched pairs, modality dropout.

What this is, and what it is not
--------------------------------
MSCNN-SPU-ATT (Peng et al. 2021) is trained on IEMOCAP, where each utterance's audio comes with
*its own* transcript and both carry the emotion. Corpora like that (IEMOCAP, or a CSV manifest of
a paired corpus) train the paper's way with :func:`natural_pairs`: audio and transcript of the
same utterance.

The corpora available here do not pair audio with an emotional transcript: RAVDESS, TESS, CREMA-D
and EmoDB read fixed, emotionally neutral scripts, and GoEmotions is text without audio. To still
train both branches, :class:`LabelMatchedPairing` pairs each audio clip of class y with a text of
class y drawn from a separate text corpus, re-drawn every epoch (seeded, so that an epoch's pairs
depend only on (seed, epoch)). The pair shares a label and nothing else: the model cannot learn
how words and voice interact within one utterance, only that each modality alone predicts the
class. Results from such training are not comparable with the paper's numbers, and a report must
say which pairing was used.

Modality dropout (:class:`ModalityDropout`) blanks the transcript (``text=""``) or removes the
audio (``audio_path=None``) for configurable fractions of samples, never both for one sample, so
that one checkpoint serves audio alone, text alone, or both at inference.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from train.datasets import TextSample, Utterance


@dataclass(frozen=True)
class BimodalSample:
    audio_path: Path | None  # None: audio dropped (or a text-only item)
    text: str  # "": transcript dropped
    label: str
    speaker: str
    corpus: str  # where the audio came from
    utterance_id: str
    text_corpus: str  # where the text came from: the same corpus (natural pair) or another one
    # False where the words say nothing about this clip's class (an acted corpus's neutral script,
    # a neutral sentence paired with any class): the trainer may then ask the words to leave the
    # voice's answer alone (TrainSettings.consistency).
    text_carries_label: bool = True


# What that term may train (TrainSettings.consistency_trains): the whole model; the words and the
# layers after the fusion; or only what the answer from the audio alone does not depend on.
CONSISTENCY_TRAINS = ("all", "fusion", "words")


def _epoch_rng(purpose: str, seed: int, epoch: int) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, stable across runs and PYTHONHASHSEED.
    return random.Random(f"{purpose}:{seed}:{epoch}")


@dataclass(frozen=True)
class ModalityDropout:
    """Per sample and epoch: drop the text with probability p_text, else the audio with p_audio."""

    p_text: float = 0.0
    p_audio: float = 0.0

    def __post_init__(self):
        if not (0.0 <= self.p_text and 0.0 <= self.p_audio and self.p_text + self.p_audio <= 1.0):
            raise ValueError("need 0 <= p_text, p_audio and p_text + p_audio <= 1 (never drop both)")

    def apply(self, samples: Sequence[BimodalSample], *, seed: int, epoch: int) -> list[BimodalSample]:
        rng = _epoch_rng("dropout", seed, epoch)
        out = []
        for sample in samples:
            draw = rng.random()  # one draw per sample keeps the two drops mutually exclusive
            if draw < self.p_text and sample.audio_path is not None:
                sample = replace(sample, text="")
            elif self.p_text <= draw < self.p_text + self.p_audio and sample.text:
                sample = replace(sample, audio_path=None)
            out.append(sample)
        return out


def natural_pairs(
    utterances: Sequence[Utterance],
    *,
    epoch: int = 0,
    seed: int = 0,
    dropout: ModalityDropout = ModalityDropout(),
) -> list[BimodalSample]:
    """The paper's way: each utterance's audio with its own transcript (IEMOCAP, manifests)."""
    samples = [pair(u, u.transcript or "", u.corpus) for u in utterances]
    return dropout.apply(samples, seed=seed, epoch=epoch)


def pair(utterance: Utterance, text: str, text_corpus: str, carries_label: bool = True) -> BimodalSample:
    """The utterance's audio, label and speaker with `text` (its own, or another corpus's)."""
    return BimodalSample(
        audio_path=utterance.audio_path,
        text=text,
        label=utterance.label,
        speaker=utterance.speaker,
        corpus=utterance.corpus,
        utterance_id=utterance.utterance_id,
        text_corpus=text_corpus,
        text_carries_label=carries_label,
    )


def class_text_pairs(utterances: Sequence[Utterance], texts: Sequence[TextSample], seed: int,
                     own_class: bool) -> list[BimodalSample]:
    """Each clip with a text of its own class (`own_class`) or of another class, drawn at random
    (seeded) from `texts`: how much words that do carry an emotion move the voice. A text of the
    clip's own class carries its label, so this measures the text branch, never what a user gets."""
    rng = random.Random(f"class-texts:{seed}:{own_class}")
    by_label: dict[str, list[TextSample]] = {}
    for t in texts:
        by_label.setdefault(t.label, []).append(t)
    missing = sorted({u.label for u in utterances} - set(by_label))
    if missing or len(by_label) < 2:
        raise ValueError(f"texts of the clips' classes are needed (missing: {', '.join(missing) or 'a second class'})")
    samples = []
    for u in utterances:
        label = u.label if own_class else rng.choice(sorted(k for k in by_label if k != u.label))
        text = rng.choice(by_label[label])
        samples.append(pair(u, text.text, text.corpus, carries_label=own_class))
    return samples


def text_samples(texts: Sequence[TextSample], split: str = "") -> list[BimodalSample]:
    """Texts alone (no audio): how a text corpus trains or tests the text branch."""
    return [
        BimodalSample(audio_path=None, text=t.text, label=t.label, speaker="", corpus=t.corpus,
                      utterance_id=f"{t.corpus}-{split}-{i}" if split else f"{t.corpus}-{i}", text_corpus=t.corpus)
        for i, t in enumerate(texts)
    ]


class LabelMatchedPairing:
    """Pairs audio clips with texts of the same label from another corpus, anew each epoch.

    Within an epoch, each class's texts are used without replacement (shuffled, then cycled when
    there are more clips than texts), so a small text pool is spread evenly over the clips.

    `own_words`: the fraction of clips that keep their own transcript instead (drawn anew each
    epoch). Acted corpora read neutral scripts, so these samples teach the model what real use
    looks like: words that say nothing, and a voice that decides. Without them, a model that only
    ever saw label-carrying text follows the words, and "Kids are talking by the door" pulls every
    angry voice to neutral. `neutral_words`: the fraction of clips, of every class, paired with a
    neutral text of the text corpora instead: the same lesson with thousands of everyday
    sentences rather than a corpus's few scripts, so that unseen neutral wording (Whisper's words
    for a sentence no corpus read) does not pull an emotional voice to neutral either.
    `extra_texts`: text-only samples added per epoch (class-balanced), so the text branch reads
    more of the text corpora than there are clips.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        texts: Sequence[TextSample],
        *,
        seed: int = 0,
        dropout: ModalityDropout = ModalityDropout(),
        own_words: float = 0.0,
        extra_texts: int = 0,
        neutral_words: float = 0.0,
    ):
        self.utterances = list(utterances)
        self.seed = seed
        self.dropout = dropout
        self.own_words = own_words
        self.neutral_words = neutral_words
        self.extra_texts = extra_texts
        self.texts_by_label: dict[str, list[TextSample]] = {}
        for text in texts:
            self.texts_by_label.setdefault(text.label, []).append(text)
        missing = sorted({u.label for u in self.utterances} - set(self.texts_by_label))
        if missing:
            raise ValueError(f"no texts for audio labels {missing}: cannot pair them")
        if neutral_words and "neutral" not in self.texts_by_label:
            raise ValueError("neutral_words needs neutral texts in the text corpora")

    def text_indices(self, epoch: int) -> list[int]:
        """For each utterance, the index of its text within texts_by_label[its label]."""
        rng = _epoch_rng("pairing", self.seed, epoch)
        decks: dict[str, list[int]] = {}
        indices = []
        for utterance in self.utterances:
            deck = decks.setdefault(utterance.label, [])
            if not deck:  # (re)shuffle the class's texts when its deck runs out
                deck.extend(range(len(self.texts_by_label[utterance.label])))
                rng.shuffle(deck)
            indices.append(deck.pop())
        return indices

    def epoch(self, epoch: int) -> list[BimodalSample]:
        """This epoch's samples, in the order of the utterances; same (seed, epoch), same samples."""
        samples = []
        rng = _epoch_rng("own-words", self.seed, epoch)
        neutral_rng = _epoch_rng("neutral-words", self.seed, epoch)
        for utterance, text_index in zip(self.utterances, self.text_indices(epoch)):
            if rng.random() < self.own_words and utterance.audio_path is not None:
                samples.append(pair(utterance, utterance.transcript or "", utterance.corpus, carries_label=False))
                continue
            if self.neutral_words and neutral_rng.random() < self.neutral_words and utterance.audio_path is not None:
                text = neutral_rng.choice(self.texts_by_label["neutral"])
                samples.append(pair(utterance, text.text, text.corpus, carries_label=False))
                continue
            text = self.texts_by_label[utterance.label][text_index]
            samples.append(pair(utterance, text.text, text.corpus))
        return self.dropout.apply(samples, seed=self.seed, epoch=epoch) + self.text_only(epoch)

    def text_only(self, epoch: int) -> list[BimodalSample]:
        """`extra_texts` text-only samples, the same number from each class."""
        rng = _epoch_rng("extra-texts", self.seed, epoch)
        labels = sorted(self.texts_by_label)
        out = []
        for i in range(self.extra_texts):
            label = labels[i % len(labels)]
            text = rng.choice(self.texts_by_label[label])
            out.append(BimodalSample(None, text.text, label, "", text.corpus, f"text-{epoch}-{i}", text.corpus))
        return out
