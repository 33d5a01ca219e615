"""Splits of the paper's and the speaker-independent protocols; metrics against hand-computed
examples; summaries and the Table 1 / Table 2 reports."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from train.datasets import Utterance
from train.protocol import (
    CROSS_CORPUS_PROTOCOL,
    LOSO_PROTOCOL,
    PAPER_PROTOCOL,
    FoldResult,
    Fold,
    check_disjoint,
    confusion_matrix,
    evaluate,
    leave_one_corpus_out,
    leave_one_session_out,
    make_folds,
    paper_cross_validation,
    per_class_recall,
    speaker_independent_folds,
    summarize,
    unweighted_accuracy,
    weighted_accuracy,
)
from train.report import ResultRow, table1_markdown, table2_markdown, write_report

# ---------------------------------------------------------------------------- splits


def test_paper_cv_is_8_1_1_stratified_rotating_and_repeated():
    labels = ["angry"] * 40 + ["happy"] * 60 + ["sad"] * 30 + ["neutral"] * 70
    folds = paper_cross_validation(labels)
    assert len(folds) == 30  # 10 folds x 3 seeds
    assert {f.protocol for f in folds} == {PAPER_PROTOCOL}
    first_repeat = [f for f in folds if f.seed == folds[0].seed]
    for fold in first_repeat:
        check_disjoint(fold)
        assert sorted(fold.train + fold.dev + fold.test) == list(range(200))
        assert (len(fold.train), len(fold.dev), len(fold.test)) == (160, 20, 20)
        # stratified: each test fold holds a tenth of every class
        assert Counter(labels[i] for i in fold.test) == {"angry": 4, "happy": 6, "sad": 3, "neutral": 7}
    # fold i tests on part i and develops on part i+1: the dev set of fold i is the test set of fold i+1
    for i in range(10):
        assert first_repeat[i].dev == first_repeat[(i + 1) % 10].test
    # every item is tested exactly once per repeat
    assert Counter(i for f in first_repeat for i in f.test) == {i: 1 for i in range(200)}
    # seeds give different partitions, the same seed the same one
    assert folds[0].test != folds[10].test
    assert paper_cross_validation(labels, seeds=(0,))[0] == folds[0]


def test_paper_cv_with_uneven_classes_keeps_fold_sizes_balanced():
    labels = ["angry"] * 13 + ["sad"] * 7 + ["happy"] * 5
    folds = paper_cross_validation(labels, seeds=(5,))
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 25


def test_leave_one_session_out():
    sessions = ["Ses01"] * 3 + ["Ses02"] * 2 + ["Ses03"] * 2 + ["Ses04"] * 1 + ["Ses05"] * 2
    folds = leave_one_session_out(sessions, seeds=(0, 1))
    assert len(folds) == 10 and {f.protocol for f in folds} == {LOSO_PROTOCOL}
    fold = folds[2]
    assert fold.test_group == "Ses03"
    assert [sessions[i] for i in fold.test] == ["Ses03", "Ses03"]
    assert {sessions[i] for i in fold.dev} == {"Ses04"}
    assert {sessions[i] for i in fold.train} == {"Ses01", "Ses02", "Ses05"}
    assert {sessions[i] for i in folds[4].dev} == {"Ses01"}  # cyclic
    assert folds[0].train == folds[5].train and folds[0].seed != folds[5].seed


def test_speaker_independent_groups_never_share_speakers():
    speakers = [f"ravdess_{a:02d}" for a in range(1, 19) for _ in range(4)]
    folds = speaker_independent_folds(speakers, n_groups=6, seeds=(0, 1, 2))
    assert len(folds) == 18
    assert {f.protocol for f in folds} == {"speaker-independent-6group"}
    for fold in folds:
        check_disjoint(fold, speakers)
        assert len({speakers[i] for i in fold.test}) == 3
        assert fold.test_group == ",".join(sorted({speakers[i] for i in fold.test}))
    # each seed draws its own grouping; every speaker is tested once per seed
    assert folds[0].test_group != folds[6].test_group
    assert Counter(speakers[i] for f in folds[:6] for i in f.test) == {s: 4 for s in set(speakers)}
    with pytest.raises(ValueError, match="at least 3 speakers"):
        speaker_independent_folds(["OAF", "YAF"])  # TESS alone cannot be split this way


def test_speaker_groups_spread_each_corpus_so_every_fold_trains_on_it():
    # 24 RAVDESS actors, 4 SAVEE and 2 TESS voices: shuffled together, TESS's two voices can be
    # one fold's test and dev sets, leaving no TESS voice to train on.
    speakers = [f"ravdess_{a:02d}" for a in range(1, 25)] + ["savee_DC", "savee_JE", "savee_JK", "savee_KL", "tess_OAF", "tess_YAF"]
    corpora = [s.split("_")[0] for s in speakers]
    for seed in range(5):
        folds = speaker_independent_folds(speakers, n_groups=5, seeds=(seed,), corpora=corpora)
        sizes = Counter(speakers[i] for f in folds for i in f.test)
        assert set(sizes.values()) == {1}  # every speaker tested exactly once
        for fold in folds:
            check_disjoint(fold, speakers)
            for corpus in ("tess", "savee"):
                assert any(speakers[i].startswith(corpus) for i in fold.train), (seed, fold.index, corpus)
            assert 4 <= sum(speakers[i].startswith("ravdess") for i in fold.test) <= 5
        group_sizes = [len(f.test_group.split(",")) for f in folds]
        assert max(group_sizes) - min(group_sizes) <= 1


def test_leave_one_corpus_out_never_trains_on_the_test_corpus():
    speakers = [f"ravdess_{a:02d}" for a in range(1, 19)] + ["savee_DC", "savee_JE", "savee_JK", "savee_KL", "tess_OAF", "tess_YAF"]
    corpora = [s.split("_")[0] for s in speakers]
    folds = leave_one_corpus_out(corpora, speakers, n_speaker_groups=5, seeds=(0, 1))
    assert len(folds) == 6 and {f.protocol for f in folds} == {CROSS_CORPUS_PROTOCOL}
    assert [f.test_group for f in folds] == ["ravdess", "savee", "tess"] * 2
    for fold in folds:
        check_disjoint(fold, speakers)
        assert {corpora[i] for i in fold.test} == {fold.test_group}
        assert fold.test_group not in {corpora[i] for i in fold.train + fold.dev}
        assert len(fold.train) + len(fold.dev) + len(fold.test) == len(speakers)
        assert fold.dev and fold.train
    tess_out = folds[2]  # 22 speakers left: the dev group is a fifth of them, both corpora in it
    assert len(tess_out.dev) in (4, 5) and {corpora[i] for i in tess_out.dev} == {"ravdess", "savee"}
    assert folds[2].dev != folds[5].dev  # each seed draws its own dev speakers
    by_name = make_folds([Utterance(Path("x.wav"), None, "sad", s, c, s) for s, c in zip(speakers, corpora)],
                         "cross-corpus", seeds=(0,))
    assert [f.test for f in by_name] == [f.test for f in folds[:3]]
    with pytest.raises(ValueError, match="at least 2 corpora"):
        leave_one_corpus_out(["ravdess"] * 3, ["a", "b", "c"])


def test_check_disjoint_catches_leaks():
    with pytest.raises(AssertionError, match="share speakers"):
        check_disjoint(Fold("x", 0, 0, (0,), (1,), (2,)), speakers=["a", "b", "a"])
    with pytest.raises(AssertionError, match="share items"):
        check_disjoint(Fold("x", 0, 0, (0, 1), (1,), (2,)))


def test_make_folds_picks_sessions_for_iemocap_and_speakers_otherwise():
    def utt(speaker, session=None, label="sad"):
        return Utterance(Path("x.wav"), None, label, speaker, "c", speaker, session)

    iemocap = [utt(f"Ses0{s}{g}", f"Ses0{s}") for s in range(1, 6) for g in "FM"]
    assert {f.protocol for f in make_folds(iemocap, "speaker-independent")} == {LOSO_PROTOCOL}
    ravdess = [utt(f"ravdess_{a:02d}") for a in range(1, 11)]
    folds = make_folds(ravdess, "speaker-independent", n_speaker_groups=5, seeds=(0,))
    assert len(folds) == 5 and folds[0].protocol == "speaker-independent-5group"
    labels = [utt("s", label=lab) for lab in ["sad", "happy"] * 10]
    assert len(make_folds(labels, "paper", seeds=(0,))) == 10
    with pytest.raises(ValueError):
        make_folds(ravdess, LOSO_PROTOCOL)
    with pytest.raises(KeyError):
        make_folds(ravdess, "random")


# ---------------------------------------------------------------------------- metrics

# 10 items. Truth: 4 angry, 3 happy, 2 sad, 1 neutral.
TRUTH = ["angry"] * 4 + ["happy"] * 3 + ["sad"] * 2 + ["neutral"]
PRED = ["angry", "angry", "angry", "sad", "happy", "neutral", "neutral", "sad", "angry", "neutral"]
# angry 3/4, happy 1/3, sad 1/2, neutral 1/1 correct -> 6/10 overall


def test_confusion_matrix_rows_are_truth():
    assert confusion_matrix(TRUTH, PRED) == [
        # angry happy sad neutral (predicted)
        [3, 0, 1, 0],  # angry
        [0, 1, 0, 2],  # happy
        [1, 0, 1, 0],  # sad
        [0, 0, 0, 1],  # neutral
    ]


def test_wa_is_accuracy_and_ua_is_mean_recall_not_precision():
    assert weighted_accuracy(TRUTH, PRED) == pytest.approx(0.6)
    assert per_class_recall(TRUTH, PRED) == pytest.approx({"angry": 0.75, "happy": 1 / 3, "sad": 0.5, "neutral": 1.0})
    assert unweighted_accuracy(TRUTH, PRED) == pytest.approx((0.75 + 1 / 3 + 0.5 + 1.0) / 4)  # 0.6458
    # mean precision would be (3/4 + 1/1 + 1/2 + 1/3) / 4 = 0.6458 here too; break the tie:
    truth, pred = ["angry", "angry", "sad"], ["angry", "angry", "angry"]
    assert unweighted_accuracy(truth, pred) == pytest.approx(0.5)  # recalls 1 and 0
    # (mean precision over predicted classes would be 2/3)


def test_ua_leaves_out_classes_absent_from_the_truth():
    truth = ["angry", "angry", "happy", "happy"]
    pred = ["angry", "sad", "happy", "happy"]
    recalls = per_class_recall(truth, pred)
    assert recalls["sad"] is None and recalls["neutral"] is None
    assert unweighted_accuracy(truth, pred) == pytest.approx((0.5 + 1.0) / 2)


def test_metrics_work_with_integer_labels_and_explicit_order():
    assert confusion_matrix([0, 1, 1], [0, 0, 1], labels=[1, 0]) == [[1, 1], [0, 1]]
    assert unweighted_accuracy([0, 1, 1], [0, 0, 1]) == pytest.approx(0.75)


def test_summarize_mean_and_std_over_folds_and_repeats():
    folds = paper_cross_validation(["sad", "happy"] * 10, seeds=(0, 1))[:3]
    results = [
        evaluate(["sad", "happy"], ["sad", "happy"], folds[0]),  # WA 1.0, UA 1.0
        evaluate(["sad", "happy"], ["sad", "sad"], folds[1]),  # WA 0.5, UA 0.5
        evaluate(["sad", "sad", "happy", "happy"], ["sad", "sad", "sad", "happy"], folds[2]),  # WA .75 UA .75
    ]
    assert results[1].protocol == PAPER_PROTOCOL and results[1].fold == 1
    summary = summarize(results)
    assert summary.protocol == PAPER_PROTOCOL and summary.n_runs == 3
    assert summary.wa_mean == pytest.approx(0.75)
    assert summary.wa_std == pytest.approx(math.sqrt((0.25**2 + 0.25**2 + 0) / 2))  # sample std = 0.25
    assert summary.ua_mean == pytest.approx(0.75)
    # summed confusion (angry, happy, sad, neutral): sad always right (1+1+2), happy right 1+0+1
    assert summary.confusion[2] == [0, 0, 4, 0] and summary.confusion[1] == [0, 2, 2, 0]
    other = FoldResult("speaker-independent-5group", 0, 0, 1.0, 1.0, results[0].labels, results[0].confusion, {}, 2)
    with pytest.raises(ValueError, match="several protocols"):
        summarize(results + [other])


# ---------------------------------------------------------------------------- reports


def make_rows():
    def summary(wa, ua, protocol=PAPER_PROTOCOL):
        from train.protocol import Summary

        return Summary(protocol, 30, wa, 0.0123, ua, 0.0045)

    return [
        ResultRow("MSCNN-SPU-ATT", "audio + ground-truth text", summary(0.8035, 0.8120)),
        ResultRow("MSCNN-SPU-ATT", "audio + ASR text", summary(0.7460, 0.7501)),
    ], [
        ResultRow("MSCNN-SPU-ATT", "full", summary(0.8035, 0.8120)),
        ResultRow("w/o SPU", "GAP instead", summary(0.7900, 0.7870)),
    ]


def test_table1_and_table2_markdown():
    table1, table2 = make_rows()
    markdown = table1_markdown(table1)
    assert "| Model | Setting | Protocol | WA (%) | UA (%) |" in markdown
    assert "| MSCNN-SPU-ATT | audio + ASR text | paper-10fold-cv | 74.60 ± 1.23 | 75.01 ± 0.45 |" in markdown
    assert "Protocol: paper-10fold-cv; runs per row: 30." in markdown
    ablation = table2_markdown(table2, reference="MSCNN-SPU-ATT")
    assert "| w/o SPU | GAP instead | paper-10fold-cv | 79.00 ± 1.23 | 78.70 ± 0.45 | -2.50 |" in ablation
    with pytest.raises(ValueError):
        table2_markdown(table2, reference="nope")


def test_write_report_markdown_and_json(tmp_path):
    table1, table2 = make_rows()
    markdown_path, json_path = write_report(tmp_path / "out", table1, table2, ablation_reference="MSCNN-SPU-ATT")
    assert "Table 2. Ablation study" in markdown_path.read_text()
    data = json.loads(json_path.read_text())
    assert data["table1"][1]["setting"] == "audio + ASR text"
    assert data["table1"][1]["wa_mean"] == pytest.approx(0.746)
    assert data["table2"][1]["protocol"] == PAPER_PROTOCOL and data["table2"][1]["n_runs"] == 30


def test_an_ablation_report_has_no_empty_table1(tmp_path):
    _, table2 = make_rows()
    markdown_path, _ = write_report(tmp_path / "out", [], table2, ablation_reference="MSCNN-SPU-ATT")
    text = markdown_path.read_text()
    assert "Table 1" not in text and text.startswith("**Table 2. Ablation study**")


def test_speaker_independent_folds_need_three_groups():
    with pytest.raises(ValueError, match="3"):
        speaker_independent_folds([f"s{i}" for i in range(10)], n_groups=2, seeds=(0,))
