"""Evaluation protocols (how utterances are split into train/dev/test) and the paper's metrics.

Protocols. Every :class:`Fold` is one training run and carries the name of the protocol that made
it, so that no number is ever reported without saying how it was measured.

* ``paper-10fold-cv`` (Peng et al. 2021, section 4.1): 10 folds stratified by label; fold i is the
  test set, fold (i + 1) mod 10 the dev set, the other 8 train (8/1/1). The whole experiment is
  repeated with 3 seeds (``PAPER_SEEDS``), giving 30 runs. Speakers are shared between train and
  test, so this measures a speaker-*dependent* accuracy.
* ``leave-one-session-out`` (IEMOCAP): session s is the test set, the next session the dev set,
  the other three train. Each split is run once per seed.
* ``speaker-independent-<k>group``: the speakers are shuffled (seeded) into k disjoint groups,
  corpus by corpus so that each corpus is spread over the groups; group i is the test set,
  group (i + 1) mod k the dev set, the rest train.
* ``leave-one-corpus-out`` (cross-corpus): every clip of one corpus is the test set; one speaker
  group of the other corpora is the dev set, the rest train. A new corpus brings new voices, a new
  room and microphone and new sentences at once, as a user's recording does; speaker-independent
  CV still trains on the test corpus's other speakers.

Metrics. Weighted accuracy (WA) is the overall accuracy. Unweighted accuracy (UA) is the mean of
the per-class *recalls* (never precision); a class absent from the truth has no recall and is left
out of the mean rather than counted as 0 or 1. The confusion matrix has truth in rows and
predictions in columns. ``summarize`` gives mean and sample standard deviation (n - 1) over all
folds and repeats of one protocol.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

from train.datasets import LABELS, Utterance

PAPER_PROTOCOL = "paper-10fold-cv"
LOSO_PROTOCOL = "leave-one-session-out"
CROSS_CORPUS_PROTOCOL = "leave-one-corpus-out"
PAPER_N_FOLDS = 10
PAPER_SEEDS = (0, 1, 2)  # "every experiment repeated 3 times"


@dataclass(frozen=True)
class Fold:
    protocol: str  # e.g. "paper-10fold-cv"; reports print it next to every number
    index: int  # which split of the protocol
    seed: int  # the repeat's seed: used for the split (CV) and for training
    train: tuple[int, ...]  # indices into the utterance list the folds were made from
    dev: tuple[int, ...]
    test: tuple[int, ...]
    test_group: str = ""  # what is held out, e.g. "Ses03" or "ravdess_04,ravdess_11"

    @property
    def name(self) -> str:
        return f"{self.protocol}/seed{self.seed}/fold{self.index}"


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def _rotating_folds(
    protocol: str, fold_of_item: Sequence[int], n_folds: int, seed: int, group_names: Sequence[str]
) -> list[Fold]:
    """Fold i tests on part i, develops on part (i + 1) mod n, trains on the rest."""
    folds = []
    for i in range(n_folds):
        dev_part = (i + 1) % n_folds
        train, dev, test = [], [], []
        for item, part in enumerate(fold_of_item):
            (test if part == i else dev if part == dev_part else train).append(item)
        folds.append(Fold(protocol, i, seed, tuple(train), tuple(dev), tuple(test), group_names[i]))
    return folds


def stratified_fold_assignment(labels: Sequence[Hashable], n_folds: int, seed: int) -> list[int]:
    """Part number (0..n_folds-1) of each item, so that every part has each class in proportion.

    Items of each class are shuffled and dealt round-robin; the dealing continues from one class
    to the next so that part sizes differ by at most one overall.
    """
    rng = random.Random(seed)
    fold_of_item = [0] * len(labels)
    next_part = 0
    for label in sorted(set(labels), key=str):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        for item in members:
            fold_of_item[item] = next_part
            next_part = (next_part + 1) % n_folds
    return fold_of_item


def paper_cross_validation(
    labels: Sequence[Hashable], *, n_folds: int = PAPER_N_FOLDS, seeds: Sequence[int] = PAPER_SEEDS
) -> list[Fold]:
    """The paper's protocol: stratified 10-fold CV with 8/1/1 folds, repeated once per seed."""
    if n_folds < 3:
        raise ValueError("train/dev/test folds need n_folds >= 3")
    folds = []
    for seed in seeds:
        assignment = stratified_fold_assignment(labels, n_folds, seed)
        folds += _rotating_folds(PAPER_PROTOCOL, assignment, n_folds, seed, [f"part{i}" for i in range(n_folds)])
    return folds


def leave_one_session_out(sessions: Sequence[str], *, seeds: Sequence[int] = PAPER_SEEDS) -> list[Fold]:
    """IEMOCAP: test on one session, develop on the next one (cyclically), train on the rest."""
    names = sorted(set(sessions))
    if len(names) < 3:
        raise ValueError(f"leave-one-session-out needs at least 3 sessions, got {names}")
    part_of_session = {name: i for i, name in enumerate(names)}
    assignment = [part_of_session[s] for s in sessions]
    return [fold for seed in seeds for fold in _rotating_folds(LOSO_PROTOCOL, assignment, len(names), seed, names)]


def _deal_order(n_groups: int) -> list[int]:
    """Groups in the order speakers are dealt to them: 0, 2, 4, 1, 3 for five groups. Two
    speakers dealt one after the other (a corpus with two voices, like TESS) then never land in
    neighbouring groups, which are one fold's test and dev sets: every fold trains on some of them."""
    stride = 2 if n_groups >= 5 and n_groups % 2 else 1
    return [(i * stride) % n_groups for i in range(n_groups)]


def speaker_groups(speakers: Sequence[str], n_groups: int, seed: int,
                   corpus_of: Mapping[str, str] | None = None) -> list[list[str]]:
    """Disjoint groups of speakers, sizes differing by <= 1: shuffled (seeded) and dealt
    round-robin. Given each speaker's corpus, the deal goes corpus by corpus (fewest speakers
    first), so every corpus is spread over the groups and its test rows exist in most folds."""
    names = sorted(set(speakers))
    if len(names) < 3:
        raise ValueError(
            f"speaker-independent train/dev/test needs at least 3 speakers, got {len(names)} ({names})"
        )
    if n_groups < 3:
        raise ValueError(f"train/dev/test by speaker needs at least 3 speaker groups, got {n_groups}")
    n_groups = min(n_groups, len(names))
    rng = random.Random(seed)
    if corpus_of is None:
        rng.shuffle(names)
    else:
        by_corpus: dict[str, list[str]] = {}
        for name in names:
            by_corpus.setdefault(corpus_of[name], []).append(name)
        names = []
        for corpus in sorted(by_corpus, key=lambda c: (len(by_corpus[c]), c)):
            rng.shuffle(by_corpus[corpus])
            names += by_corpus[corpus]
    order = _deal_order(n_groups)
    groups = [[] for _ in range(n_groups)]
    for i, name in enumerate(names):
        groups[order[i % n_groups]].append(name)
    return [sorted(g) for g in groups]


def speaker_independent_folds(
    speakers: Sequence[str], *, n_groups: int = 5, seeds: Sequence[int] = PAPER_SEEDS,
    corpora: Sequence[str] | None = None,
) -> list[Fold]:
    """Folds whose test, dev and train sets never share a speaker.

    Each seed draws its own grouping of speakers, like each repeat of the paper's CV draws its own
    partition. With fewer speakers than groups, every speaker is its own group. `corpora` (one per
    item) spreads each corpus's speakers over the groups (see `speaker_groups`).
    """
    corpus_of = dict(zip(speakers, corpora)) if corpora is not None else None
    folds = []
    for seed in seeds:
        groups = speaker_groups(speakers, n_groups, seed, corpus_of)
        group_of_speaker = {s: g for g, members in enumerate(groups) for s in members}
        assignment = [group_of_speaker[s] for s in speakers]
        protocol = f"speaker-independent-{len(groups)}group"
        folds += _rotating_folds(protocol, assignment, len(groups), seed, [",".join(g) for g in groups])
    return folds


def leave_one_corpus_out(
    corpora: Sequence[str], speakers: Sequence[str], *, n_speaker_groups: int = 5, seeds: Sequence[int] = PAPER_SEEDS,
) -> list[Fold]:
    """Cross-corpus folds: fold i tests on every clip of the i-th corpus (sorted by name). The
    other corpora's speakers are grouped as in `speaker_groups` (seeded, corpus by corpus); the
    first group is the dev set and the rest train, so no speaker is in two sets."""
    names = sorted(set(corpora))
    if len(names) < 2:
        raise ValueError(f"leave-one-corpus-out needs at least 2 corpora, got {names}")
    corpus_of = dict(zip(speakers, corpora))
    folds = []
    for seed in seeds:
        for i, held_out in enumerate(names):
            others = [s for s, c in zip(speakers, corpora) if c != held_out]
            dev_speakers = set(speaker_groups(others, n_speaker_groups, seed, corpus_of)[0])
            train, dev, test = [], [], []
            for item, (speaker, corpus) in enumerate(zip(speakers, corpora)):
                (test if corpus == held_out else dev if speaker in dev_speakers else train).append(item)
            folds.append(Fold(CROSS_CORPUS_PROTOCOL, i, seed, tuple(train), tuple(dev), tuple(test), held_out))
    return folds


def make_folds(
    utterances: Sequence[Utterance],
    protocol: str,
    *,
    seeds: Sequence[int] = PAPER_SEEDS,
    n_folds: int = PAPER_N_FOLDS,
    n_speaker_groups: int = 5,
) -> list[Fold]:
    """Folds of a protocol by name: "paper" (10-fold CV), "speaker-independent" or "cross-corpus".

    Speaker-independent uses leave-one-session-out when every utterance has a session (IEMOCAP),
    and disjoint speaker groups otherwise.
    """
    if protocol in ("cross-corpus", CROSS_CORPUS_PROTOCOL):
        return leave_one_corpus_out([u.corpus for u in utterances], [u.speaker for u in utterances],
                                    n_speaker_groups=n_speaker_groups, seeds=seeds)
    if protocol in ("paper", PAPER_PROTOCOL):
        return paper_cross_validation([u.label for u in utterances], n_folds=n_folds, seeds=seeds)
    if protocol in ("speaker-independent", LOSO_PROTOCOL):
        sessions = [u.session for u in utterances]
        if all(sessions) and len(set(sessions)) >= 3:
            return leave_one_session_out(sessions, seeds=seeds)
        if protocol == LOSO_PROTOCOL:
            raise ValueError("leave-one-session-out needs a session on every utterance")
        return speaker_independent_folds([u.speaker for u in utterances], n_groups=n_speaker_groups, seeds=seeds,
                                         corpora=[u.corpus for u in utterances])
    raise KeyError(f"unknown protocol {protocol!r}; use 'paper', 'speaker-independent' or 'cross-corpus'")


def check_disjoint(fold: Fold, speakers: Sequence[str] | None = None) -> None:
    """Raise if the fold's sets overlap in items, or (given speakers) in speakers."""
    train, dev, test = set(fold.train), set(fold.dev), set(fold.test)
    if train & dev or train & test or dev & test:
        raise AssertionError(f"{fold.name}: train/dev/test share items")
    if speakers is not None:
        spk = [{speakers[i] for i in part} for part in (train, dev, test)]
        if spk[0] & spk[1] or spk[0] & spk[2] or spk[1] & spk[2]:
            raise AssertionError(f"{fold.name}: train/dev/test share speakers")


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _class_order(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None):
    if labels is not None:
        return list(labels)
    seen = set(y_true) | set(y_pred)
    if seen <= set(LABELS):
        return list(LABELS)
    return sorted(seen, key=str)


def confusion_matrix(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> list[list[int]]:
    """counts[i][j] = number of items of true class labels[i] predicted as labels[j]."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} truths for {len(y_pred)} predictions")
    labels = _class_order(y_true, y_pred, labels)
    position = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for truth, prediction in zip(y_true, y_pred):
        counts[position[truth]][position[prediction]] += 1
    return counts


def per_class_recall(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> dict[Hashable, float | None]:
    """Recall of each class; None for a class that never occurs in the truth."""
    labels = _class_order(y_true, y_pred, labels)
    counts = confusion_matrix(y_true, y_pred, labels)
    recalls = {}
    for i, label in enumerate(labels):
        support = sum(counts[i])
        recalls[label] = counts[i][i] / support if support else None
    return recalls


def weighted_accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """WA: the fraction of items predicted correctly (each item weighs the same)."""
    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError("need as many predictions as truths, and at least one")
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def unweighted_accuracy(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> float:
    """UA: the mean per-class recall over the classes present in the truth (each class weighs the same)."""
    recalls = [r for r in per_class_recall(y_true, y_pred, labels).values() if r is not None]
    if not recalls:
        raise ValueError("no class of the label set occurs in the truth")
    return sum(recalls) / len(recalls)


@dataclass
class FoldResult:
    protocol: str
    fold: int
    seed: int
    wa: float
    ua: float
    labels: list
    confusion: list[list[int]]  # rows truth, columns prediction
    recall: dict  # per class; None where the class is absent from this fold's truth
    n: int


def evaluate(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    fold: Fold,
    labels: Sequence[Hashable] | None = None,
) -> FoldResult:
    """All metrics of one run, labelled with the fold (and so the protocol) it was measured on."""
    labels = _class_order(y_true, y_pred, labels)
    return FoldResult(
        protocol=fold.protocol,
        fold=fold.index,
        seed=fold.seed,
        wa=weighted_accuracy(y_true, y_pred),
        ua=unweighted_accuracy(y_true, y_pred, labels),
        labels=labels,
        confusion=confusion_matrix(y_true, y_pred, labels),
        recall=per_class_recall(y_true, y_pred, labels),
        n=len(y_true),
    )


@dataclass
class Summary:
    protocol: str
    n_runs: int  # folds x repeats
    wa_mean: float
    wa_std: float
    ua_mean: float
    ua_std: float
    labels: list = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # summed over all runs

    def as_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "n_runs": self.n_runs,
            "wa_mean": self.wa_mean,
            "wa_std": self.wa_std,
            "ua_mean": self.ua_mean,
            "ua_std": self.ua_std,
            "labels": list(self.labels),
            "confusion": self.confusion,
        }


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0.0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(results: Sequence[FoldResult]) -> Summary:
    """Mean ± std of WA and UA over all folds and repeats of one protocol."""
    if not results:
        raise ValueError("nothing to summarize")
    protocols = {r.protocol for r in results}
    if len(protocols) != 1:
        raise ValueError(f"results of several protocols cannot be averaged together: {sorted(protocols)}")
    labels = results[0].labels
    if any(r.labels != labels for r in results):
        raise ValueError("results use different label orders")
    confusion = [[sum(r.confusion[i][j] for r in results) for j in range(len(labels))] for i in range(len(labels))]
    wa_mean, wa_std = mean_and_std([r.wa for r in results])
    ua_mean, ua_std = mean_and_std([r.ua for r in results])
    return Summary(protocols.pop(), len(results), wa_mean, wa_std, ua_mean, ua_std, list(labels), confusion)
