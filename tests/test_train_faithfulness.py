"""`python -m train faithfulness`: the per-corpus table, on synthetic results and on a small real set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train import faithfulness as TF
from train.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "mscnn-spu-att-en-4class"


def clip(tau, aopc, changes, uniform, windows=True) -> TF.ClipResult:
    words = {"tau": tau, "aopc": dict(zip(TF.WORD_ORDERS, aopc)), "sufficiency": dict(zip(TF.WORD_ORDERS, aopc)),
             "label_changes": changes}
    w = {"aopc": {"occlusion": 0.3, "random": 0.1}, "sufficiency": {"occlusion": 0.0, "random": 0.2}, "n_windows": 4}
    return TF.ClipResult("u", "sad", "sad", 3, {"mask": words}, uniform, w if windows else None)


def test_summary_means_rates_and_undefined_values():
    results = [clip(1.0, [0.1, 0.2, 0.3, 0.0], True, False), clip(None, [0.3, 0.4, 0.5, 0.2], False, True, windows=False)]
    s = TF.summarize(results, removals=("mask",))
    row = s["words"]["mask"]
    assert s["clips"] == 2 and row["clips_with_tau"] == 1 and row["kendall_tau"] == [1.0, 0.0]
    assert row["aopc"]["attention"][0] == pytest.approx(0.2) and row["aopc"]["attention"][1] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert row["removing_words_changes_label"] == 0.5 and s["uniform_changes_label"] == 0.5
    assert s["windows"]["clips"] == 1 and s["windows"]["aopc"]["occlusion"] == [0.3, 0.0]
    table = TF.table_markdown(s, "t")
    assert "| masked (unknown-word vector) | 2 | +1.000 ± 0.000 | +0.200 ± 0.141 |" in table
    assert "50.0 %" in table and "occlusion vs random" in table
    empty = TF.summarize([], removals=("mask",))
    assert empty["words"]["mask"]["kendall_tau"] is None and empty["windows"] is None
    assert "| - |" in TF.table_markdown(empty, "t")


@pytest.mark.shared_data("ravdess")
@pytest.mark.slow
def test_the_corpus_command_on_a_small_real_set(shared_data, tmp_path, capsys):
    out = tmp_path / "faithfulness"
    assert main(["faithfulness", "--checkpoint", str(CHECKPOINT), "--corpus", "ravdess",
                 "--data", str(shared_data / "ravdess"), "--speakers", "ravdess_06,ravdess_11", "--limit", "3",
                 "--permutations", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    markdown = (out / "faithfulness.md").read_text()
    assert markdown in printed
    for column in ("Kendall τ attention vs LOO", "AOPC attention", "AOPC leave-one-out", "AOPC gradient",
                   "AOPC random", "uniform attention changes the label", "removing the words changes it",
                   "AOPC occlusion"):
        assert column in markdown
    data = json.loads((out / "faithfulness.json").read_text())
    s = data["summary"]
    assert s["clips"] == 3 == len(data["clips"]) and s["transcripts"] == "own"
    assert set(s["words"]) == {"mask", "delete"}
    for row in s["words"].values():
        if row["kendall_tau"] is not None:
            assert -1 <= row["kendall_tau"][0] <= 1
        for name in TF.WORD_ORDERS:
            mean, std = row["aopc"][name]
            assert -1 <= mean <= 1 and std >= 0
            assert -1 <= row["sufficiency"][name][0] <= 1
        assert 0 <= row["removing_words_changes_label"] <= 1
    assert 0 <= s["uniform_changes_label"] <= 1
    assert s["windows"]["clips"] == 3 and -1 <= s["windows"]["aopc"]["occlusion"][0] <= 1
    for c in data["clips"]:  # RAVDESS reads one of two six-word sentences
        assert c["n_words"] == 6 and c["utterance_id"] and c["label"] in ("angry", "happy", "sad", "neutral")
    with pytest.raises(SystemExit, match="no clips of"):
        main(["faithfulness", "--checkpoint", str(CHECKPOINT), "--corpus", "ravdess",
              "--data", str(shared_data / "ravdess"), "--speakers", "ravdess_99", "--out", str(out)])


STUDY = CHECKPOINT / "results" / "faithfulness"


@pytest.mark.skipif(not STUDY.is_dir(), reason="no committed faithfulness study")
def test_the_readme_tables_are_the_committed_study():
    """README's *Is attention an explanation here?* rows are the committed results of
    `train faithfulness` on two cv folds' models (each file's table renders from its numbers)."""
    readme = (ROOT / "README.md").read_text()
    folds = {"seed0-fold1": "03, 05, 09, 17", "seed0-fold0": "01, 10, 15"}
    uniform = []  # share of answers uniform attention changed, per fold
    for fold, actors in folds.items():
        for words, source in (("own", "own"), ("Whisper's", "asr")):
            summary = json.loads((STUDY / f"{fold}-{source}.json").read_text())["summary"]
            assert summary["speakers"] == ",".join(f"ravdess_{a}" for a in actors.split(", "))
            assert fold.replace("-", "_") in summary["checkpoint"]
            assert (STUDY / f"{fold}-{source}.md").read_text().split("\n", 1)[1] == \
                TF.table_markdown(summary, "").split("\n", 1)[1]
            for removal, name in (("mask", "masked"), ("delete", "deleted")):
                row = summary["words"][removal]
                cells = [row["kendall_tau"], *(row["aopc"][o] for o in TF.WORD_ORDERS),
                         row["sufficiency"]["attention"], row["sufficiency"]["leave-one-out"]]
                line = (f"| {actors}, {words}, {name} | {summary['clips']} | " + " | ".join(map(TF._cell, cells))
                        + f" | {TF._cell(row['removing_words_changes_label'])} |")
                assert line in readme, line
            if source == "own":
                w = summary["windows"]
                line = (f"| {actors} | {w['clips']} | " + " | ".join(TF._cell(w[k][o]) for k in ("aopc", "sufficiency")
                                                                     for o in ("occlusion", "random")) + " |")
                assert line in readme, line
                uniform.append(f"{100 * summary['uniform_changes_label']:.1f}".removesuffix(".0"))
    said = f"Uniform attention changed {uniform[0]} and {uniform[1]} % of the answers (fold 1, fold 0)."
    assert said in " ".join(readme.split()), said
