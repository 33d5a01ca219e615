"""`python -m train` options the README's recipes use, run as a user runs them (a subprocess), on
the espeak-ng corpus with a tiny model and one epoch: the point is the wiring, not the numbers."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from huggingface_hub import metadata_load

from test_trainer import run_module
from train.experiment import ABLATIONS
from train.hub import protocol_note_of

TINY_SET = ["--set", "n_filters=8", "--set", "n_hidden=8", "--set", "audio_kernel_sizes=[3,5]",
            "--set", "text_kernel_sizes=[1,2]"]


@pytest.fixture(scope="module")
def corpora_with_calm(fake_corpora, tmp_path_factory):
    """The espeak-ng RAVDESS plus "calm" clips (RAVDESS emotion 02): one per actor and statement,
    spoken like the neutral ones."""
    root = tmp_path_factory.mktemp("calm") / "ravdess"
    shutil.copytree(fake_corpora["ravdess"], root)
    for neutral in sorted(root.rglob("03-01-01-*.wav")):
        shutil.copy(neutral, neutral.with_name(neutral.name.replace("03-01-01-", "03-01-02-", 1)))
    return {"ravdess": root, "goemotions": fake_corpora["goemotions"]}


def test_ablate_writes_table_2_with_one_row_per_switch(fake_corpora, tmp_path):
    out = tmp_path / "ablate"
    result = run_module(
        "train", "ablate", "--audio", f"ravdess={fake_corpora['ravdess']}", "--text", str(fake_corpora["goemotions"]),
        "--protocol", "speaker-independent", "--groups", "3", "--seeds", "0", "--max-folds", "1", "--epochs", "1",
        "--no-progress", "--cache", str(tmp_path / "cache"), "--out", str(out), *TINY_SET,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["table1"] == []  # an ablation run reports Table 2 only
    rows = results["table2"]
    # every Table 2 row but the speaker one (no x-vector here, so it equals the full model)
    assert [r["model"] for r in rows] == [name for name in ABLATIONS if name != "w/o speaker embedding"]
    assert all(r["setting"].startswith("audio + ") and r["protocol"] == "speaker-independent-3group"
               and r["n_runs"] == 1 and 0 <= r["ua_mean"] <= 1 for r in rows)
    # each row trained the model its switch describes
    log = (out / "log.txt").read_text()
    configs = {line[3:].split(": {")[0]: json.loads("{" + line.split(": {", 1)[1])
               for line in log.splitlines() if line.startswith("== ")}
    assert configs["w/o attention"]["use_attention"] is False and configs["MSCNN-SPU-ATT"]["use_attention"] is True
    assert configs["w/o SWEM"]["use_swem"] is False
    assert configs["w/o text SPU (max pooling)"]["text_pooling"] == "max"
    assert configs["w/o audio SPU (max pooling)"]["audio_pooling"] == "max"
    assert all(c["n_filters"] == 8 for c in configs.values())  # --set reaches every row
    markdown = (out / "results.md").read_text()
    assert "Table 2" in markdown and "Table 1" not in markdown and "ΔUA" in markdown
    reference = rows[0]["ua_mean"]
    for row in rows:
        assert f"{100 * (row['ua_mean'] - reference):+.2f} |" in markdown
    for row in ABLATIONS:
        if row != "w/o speaker embedding":
            folder = out / row.replace("/", "_").replace(" ", "_")
            assert (folder / "folds.jsonl").is_file()


def test_paper_cv_then_fit_with_its_results_then_evaluate_text_only(corpora_with_calm, tmp_path):
    """The README's recipe end to end: cv (the paper's protocol, calm counted as neutral) ->
    fit (--results of that cv and a --protocol-note for the model card) -> evaluate the
    checkpoint on text alone, with label-matched GoEmotions test texts (--text)."""
    data = ["--audio", f"ravdess={corpora_with_calm['ravdess']}", "--text", str(corpora_with_calm["goemotions"]),
            "--calm-as-neutral", "--cache", str(tmp_path / "cache"), "--no-progress", "--epochs", "1",
            "--drop-text", "0.3", "--drop-audio", "0.3", *TINY_SET]
    cv = tmp_path / "cv"
    result = run_module("train", "cv", *data, "--protocol", "paper", "--seeds", "0", "--max-folds", "1",
                        "--out", str(cv))
    assert result.returncode == 0, result.stderr[-2000:]
    log = (cv / "log.txt").read_text()
    assert "ravdess: kept 30 of 30" in log  # 6 calm clips joined neutral instead of being dropped
    rows = json.loads((cv / "results.json").read_text())["table1"]
    assert {r["protocol"] for r in rows} == {"paper-10fold-cv"}
    assert {r["setting"] for r in rows} == {"audio only", "audio + the clip's own words", "the clip's own words only",
                                            "text only (text corpora's test sentences)"}
    fold = json.loads((cv / "MSCNN-SPU-ATT" / "folds.jsonl").read_text().splitlines()[0])
    assert fold["fold"] == "paper-10fold-cv/seed0/fold0"
    for setting in ("audio", "both", "text"):  # 30 clips, stratified 10 folds: 3 test clips
        assert fold[setting]["n"] == 3 and sum(map(sum, fold[setting]["confusion"])) == 3
    assert fold["text corpus"]["n"] == 12  # the text corpus's test sentences

    checkpoint = tmp_path / "checkpoint"
    note = "paper protocol: stratified 10-fold CV, one fold of one seed (a test run)"
    result = run_module("train", "fit", *data, "--groups", "3", "--results", str(cv / "results.json"),
                        "--protocol-note", note, "--out", str(checkpoint))
    assert result.returncode == 0, result.stderr[-2000:]
    card = (checkpoint / "README.md").read_text()
    assert note in card
    metadata = metadata_load(checkpoint / "README.md")
    reported = {(r["dataset"]["config"], m["type"]): m["value"]
                for entry in metadata["model-index"] for r in entry["results"] for m in r["metrics"]}
    assert len(reported) == 2 * len(rows)
    for row in rows:
        name = f"{row['model']}: {row['setting']} ({row['protocol']})"
        assert reported[name, "accuracy"] == pytest.approx(row["wa_mean"], abs=5e-5)
        assert reported[name, "recall"] == pytest.approx(row["ua_mean"], abs=5e-5)
        assert f"| {name} | {100 * row['wa_mean']:.2f} ± {100 * row['wa_std']:.2f} |" in card
    training = json.loads((checkpoint / "training.json").read_text())
    assert any("kept 30 of 30" in line for line in training["data"])
    recorded = shlex.split(training["command"])  # shell-quoted: it runs again as it is written
    assert recorded[:4] == ["python", "-m", "train", "fit"] and note in recorded and "audio_kernel_sizes=[3,5]" in recorded

    # `card` with a second run of the same folds (here: the first with its rows renamed, as a run
    # with Whisper's words names them, and one row of its own as it was): their rows together, once each
    second = json.loads((cv / "results.json").read_text())
    renamed = [{**row, "setting": row["setting"] + ", Whisper's words", "wa_mean": 0.125} for row in second["table1"]]
    (tmp_path / "second.json").write_text(json.dumps({"table1": second["table1"][:1] + renamed}))
    result = run_module("train", "card", "--checkpoint", str(checkpoint), "--results", str(cv / "results.json"),
                        str(tmp_path / "second.json"), "--protocol-note", note)
    assert result.returncode == 0, result.stderr[-2000:]
    card = (checkpoint / "README.md").read_text()
    for row in rows + renamed:
        assert card.count(f"| {row['model']}: {row['setting']} ({row['protocol']}) |") == 1
    assert "| 12.50 ± " in card
    # rewritten again without --protocol-note, the card keeps the note that says how it was measured
    result = run_module("train", "card", "--checkpoint", str(checkpoint), "--results", str(cv / "results.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert protocol_note_of(checkpoint) == note and "| 12.50 ± " not in (checkpoint / "README.md").read_text()

    scores = {}
    for modality in ("text", "audio"):
        result = run_module("train", "evaluate", "--checkpoint", str(checkpoint), "--corpus", "ravdess",
                            "--data", str(corpora_with_calm["ravdess"]), "--modality", modality,
                            "--text", str(corpora_with_calm["goemotions"]), "--cache", str(tmp_path / "cache"))
        assert result.returncode == 0, result.stderr[-2000:]
        scores[modality] = json.loads(result.stdout.strip().splitlines()[-1])
    for modality, s in scores.items():
        assert s["modality"] == modality and s["n"] == 24  # evaluate reads RAVDESS as released: calm dropped
        assert sum(map(sum, s["confusion"])) == 24
        assert s["ua"] == pytest.approx(sum(s["recall"].values()) / 4)
    # --text: the text branch read GoEmotions test texts (label-carrying, and said so), not the transcripts
    assert "label-matched text from the test split of goemotions" in scores["text"]["protocol"]
    assert "label-carrying" in scores["text"]["protocol"]
    assert "label-matched" not in scores["audio"]["protocol"]


def test_no_dev_trains_on_the_dev_speakers_and_keeps_the_last_epoch(fake_corpora, tmp_path):
    """--no-dev, in cv and in fit: the dev speakers join training, the last epoch is kept, and cv
    labels its numbers as a different protocol."""
    data = ["--audio", f"ravdess={fake_corpora['ravdess']}", "--text", str(fake_corpora["goemotions"]),
            "--cache", str(tmp_path / "cache"), "--no-progress", "--epochs", "2", "--no-dev", *TINY_SET]
    cv = tmp_path / "cv"
    result = run_module("train", "cv", *data, "--protocol", "speaker-independent", "--groups", "3", "--seeds", "0",
                        "--max-folds", "1", "--baselines", "MFCC stats", "--class-texts", "--out", str(cv))
    assert result.returncode == 0, result.stderr[-2000:]
    log = (cv / "log.txt").read_text()
    assert "seed0/fold0: train 16, dev 0, test 8" in log  # two of three actors train, none is dev
    rows = json.loads((cv / "results.json").read_text())["table1"]
    model = [r for r in rows if r["model"] == "MSCNN-SPU-ATT"]
    baseline = [r for r in rows if r["model"].startswith("logistic regression")]
    assert model and {r["protocol"] for r in model} == {"speaker-independent-3group, dev trained on"}
    # the baselines choose their L2 on the dev speakers, then train on them too, as the model did
    assert baseline and {r["protocol"] for r in baseline} == {"speaker-independent-3group, dev trained on"}
    assert "baseline MFCC stats: refitted on train + dev (16 clips)" in log
    # --class-texts: the test clips with a text of their own class and of another, named as what they measure
    by_setting = {r["setting"]: r for r in model}
    for setting in ("audio + a text of the clip's own class (label-matched: measures the text branch)",
                    "audio + a text of another class (measures the text branch)"):
        assert by_setting[setting]["n_runs"] == 1 and 0 <= by_setting[setting]["ua_mean"] <= 1
    fold_record = json.loads((cv / "MSCNN-SPU-ATT" / "folds.jsonl").read_text().splitlines()[0])
    assert fold_record["own-class text"]["n"] == fold_record["other-class text"]["n"] == fold_record["both"]["n"] == 8
    # without a text corpus there is nothing to pair the clips with: said at once, not skipped
    alone = run_module("train", "cv", "--audio", f"ravdess={fake_corpora['ravdess']}", "--class-texts",
                       "--out", str(tmp_path / "no-texts"))
    assert alone.returncode != 0 and "--class-texts" in alone.stderr and "--text" in alone.stderr
    # each fold keeps its model as a checkpoint, with the speakers it never heard: a checkpoint
    # command (here the faithfulness study) runs on it with those voices
    folder = next((cv / "MSCNN-SPU-ATT" / "folds").iterdir()) / "model"
    heldout = json.loads((folder / "fold.json").read_text())
    assert heldout["fold"] == "speaker-independent-3group, dev trained on/seed0/fold0"
    assert heldout["test_speakers"] == sorted(re.search(r"seed0/fold0: .*\(held out: ([^)]*)\)", log)[1].split(","))
    study = tmp_path / "faithfulness"
    result = run_module("train", "faithfulness", "--checkpoint", str(folder), "--corpus", "ravdess",
                        "--data", str(fake_corpora["ravdess"]), "--speakers", ",".join(heldout["test_speakers"]),
                        "--limit", "2", "--permutations", "1", "--no-windows", "--out", str(study))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((study / "faithfulness.json").read_text())["summary"]["clips"] == 2
    # and what Whisper's words for German cost that model on those voices (train/unsure_words.py)
    cost = tmp_path / "unsure"
    german = Path(__file__).parent / "fixtures" / "german.flac"
    result = run_module("train", "unsure-words", "--checkpoint", str(folder), "--audio", f"ravdess={fake_corpora['ravdess']}",
                        "--speakers", ",".join(heldout["test_speakers"]), "--speech", str(german), "--out", str(cost))
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads((cost / "unsure-words.json").read_text())
    assert measured["transcripts"][0]["unsure"] and measured["summary"]["all"]["clips"] == 8
    assert measured["summary"]["all"]["own words unsure"] == sum(r["own words unsure"] for r in measured["clips"])
    for row in measured["clips"]:  # the unsure words are left out: the voice's own answer
        assert row["unsure words left out"] == row["voice alone"] and row["words"] == measured["transcripts"][0]["text"]
    fit = tmp_path / "fit"
    result = run_module("train", "fit", *data, "--out", str(fit))
    assert result.returncode == 0, result.stderr[-2000:]
    training = json.loads((fit / "training.json").read_text())
    assert training["dev_speakers"] == [] and training["best_dev"] is None
    state = json.loads((fit / "state" / "state.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in state.json"))
    assert state["best_score"] is None  # strict JSON: no -Infinity for "no dev score"
    assert [sorted(h) for h in training["history"]] == [["epoch", "loss", "seconds"]] * 2  # nothing scored
    assert "train 24 utterances, dev 0" in (fit / "log.txt").read_text()


UNSURE = Path(__file__).resolve().parent.parent / "checkpoints" / "mscnn-spu-att-en-4class" / "results" / "unsure-words"


@pytest.mark.skipif(not UNSURE.is_dir(), reason="no committed unsure-words results")
def test_the_readme_unsure_words_table_is_the_committed_runs():
    """README's *Words Whisper was unsure of* rows are the committed `train unsure-words` runs."""
    readme = (UNSURE.parents[3] / "README.md").read_text()
    sentences = (UNSURE / "sentences.tsv").read_text().splitlines()
    for fold in (0, 1):
        runs = [json.loads((UNSURE / f"seed0-fold{fold}-seed{seed}.json").read_text()) for seed in (0, 1, 2)]
        assert [r["seed"] for r in runs] == [0, 1, 2] and all(len(r["transcripts"]) == len(sentences) for r in runs)
        every = [r["summary"]["all"] for r in runs]
        speakers = runs[0]["speakers"].split(",")
        actors = ", ".join(s.split("_")[1] for s in speakers if s.startswith("ravdess"))
        savee = ", ".join(s.split("_")[1] for s in speakers if s.startswith("savee"))
        alone = {f"{s['voice alone']:.1f}" for s in every}
        assert len(alone) == 1  # the voice alone does not depend on the draw
        unsure = [sum(t["unsure"] for t in r["transcripts"] if t["text"].strip()) for r in runs]
        with_words = [sum(bool(t["text"].strip()) for t in r["transcripts"]) for r in runs]
        row = (f"| fold {fold}: RAVDESS {actors}, SAVEE {savee} ({every[0]['clips']}) | {alone.pop()} | "
               + " / ".join(f"{s['with the words']:.1f}" for s in every) + " | "
               + " / ".join(f"{s['unsure words left out']:.1f}" for s in every) + " | "
               + " / ".join(f"{s['changed by the words']:.1f}" for s in every) + " % | "
               + " / ".join(f"{u} of {n}" for u, n in zip(unsure, with_words)) + " | "
               + " / ".join(str(s["own words unsure"]) for s in every) + f" of {every[0]['clips']} |")
        assert row in readme, row
