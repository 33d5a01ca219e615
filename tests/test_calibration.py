"""The calibration tables: how often answers of each confidence were right in cross-validation
(`train.calibration` writes them from cv's per-clip answers, `ser_demo.calibration` reads them,
the page shows the answer's row)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_demo.calibration import EDGES, MIN_ANSWERS, Calibration, bin_of, load_calibration
from ser_demo.recognizer import BUNDLED_CHECKPOINT
from train.calibration import calibration_table, write_calibration

CHECKPOINTS = [BUNDLED_CHECKPOINT]
WITH_TABLES = [c for c in CHECKPOINTS if (c / "results" / "calibration.json").is_file()]
LABELS = ["angry", "happy", "sad", "neutral"]


def fold_record(index: int, network, head, labels, heard=None) -> dict:
    """One fold as cv keeps it (train/predictions.py): each test clip's network and head answers."""
    n = len(labels)
    return {"fold": f"speaker-independent-5group, dev trained on/seed0/fold{index}", "index": index, "seed": 0,
            "protocol": "speaker-independent-5group, dev trained on", "labels": LABELS,
            "settings": {"audio": {"corpus": ["ravdess"] * n, "audio": [f"clip{index}-{i}.flac" for i in range(n)],
                                   "label": labels, "network": network, "head": head,
                                   "probabilities": network, "heard": heard or [True] * n}}}


def test_bins_cover_zero_to_one():
    assert [bin_of(p) for p in (0.0, 0.39, 0.4, 0.55, 0.79999, 0.8, 1.0)] == [0, 0, 1, 2, 4, 5, 5]


def test_the_table_counts_the_mixed_answers_of_every_fold():
    # clip 0: the network alone says angry at 0.9; mixed 60/40 with a head that says sad at 0.9,
    # the answer is angry at 0.54 (bin 50-60 %), and it is right. Clip 1: sad at 0.75 from both,
    # wrong (it is neutral). Clip 2 of the second fold: heard nothing, the network's 0.45 stands.
    first = fold_record(0, network=[[0.9, 0.0, 0.1, 0.0], [0.05, 0.1, 0.75, 0.1]],
                        head=[[0.0, 0.0, 0.9, 0.1], [0.05, 0.1, 0.75, 0.1]], labels=["angry", "neutral"])
    second = fold_record(1, network=[[0.45, 0.25, 0.2, 0.1]], head=[[0.0, 0.0, 0.0, 1.0]], labels=["angry"],
                         heard=[False])
    table = calibration_table([first, second], share=0.4)
    bins = table["protocols"]["speaker-independent-5group, dev trained on"]["audio"]
    assert table["folds"] == {"speaker-independent-5group, dev trained on": 2} and table["share"] == 0.4
    assert table["corpora"]["speaker-independent-5group, dev trained on"]["ravdess"]["audio"] == bins  # one corpus
    assert [b["answers"] for b in bins] == [0, 1, 1, 0, 1, 0]
    assert [b["right"] for b in bins] == [0, 1, 1, 0, 0, 0]
    # share 0: the network's own answers (0.9 right, 0.75 wrong, 0.45 right)
    bins = calibration_table([first, second], share=0.0)["protocols"]["speaker-independent-5group, dev trained on"]["audio"]
    assert [(b["answers"], b["right"]) for b in bins] == [(0, 0), (1, 1), (0, 0), (0, 0), (1, 0), (1, 1)]


def test_a_written_table_reads_back_and_a_damaged_one_is_ignored(tmp_path):
    first = fold_record(0, network=[[0.9, 0.0, 0.1, 0.0]] * 30, head=[[0.9, 0.0, 0.1, 0.0]] * 30, labels=["angry"] * 30)
    path = write_calibration(tmp_path, calibration_table([first], share=0.4))
    assert path == tmp_path / "results" / "calibration.json"
    calibration = load_calibration(str(tmp_path))
    assert calibration.accuracy("speaker-independent-5group, dev trained on", "audio", 0.95) == (1.0, 30)
    # the page quotes RAVDESS's rows where the table has them, else all test clips'
    assert "100% of the time on RAVDESS actors it never heard (30 answers)" in calibration.sentence("audio", 0.85)
    pooled = Calibration(calibration.edges, calibration.protocols)
    assert "100% of the time on speakers it never heard (30 answers)" in pooled.sentence("audio", 0.85)
    assert calibration.sentence("audio", 0.5) is None  # no answers that sure: nothing to say
    assert calibration.sentence("text", 0.95) is None  # text alone was not scored on speakers
    path.write_text(json.dumps({"edges": [0, 0.5], "protocols": {}}))  # edges must reach 1
    assert load_calibration(str(tmp_path)) is None
    path.write_text("{not json")
    assert load_calibration(str(tmp_path)) is None
    assert load_calibration(str(tmp_path / "nowhere")) is None


def test_a_bin_with_few_answers_says_nothing():
    bins = [{"answers": MIN_ANSWERS - 1, "right": 3}] + [{"answers": 100, "right": 50}] * (len(EDGES) - 2)
    calibration = Calibration.from_dict({"edges": list(EDGES), "protocols": {"speaker-independent-5group": {"audio": bins}}})
    assert calibration.sentence("audio", 0.2) is None
    assert "50% of the time" in calibration.sentence("audio", 0.45)
    with pytest.raises(ValueError):
        Calibration.from_dict({"edges": list(EDGES), "protocols": {"x": {"audio": bins[:2]}}})


@pytest.mark.parametrize("checkpoint", WITH_TABLES, ids=lambda c: c.name)
def test_a_checkpoints_table_holds_the_answers_of_its_cards_cross_validation(checkpoint):
    """The speaker-independent rows count exactly the answers of the card's CV (results.json):
    as many answers as test clips, as many right as its confusion matrix's diagonal."""
    table = json.loads((checkpoint / "results" / "calibration.json").read_text())
    config = json.loads((checkpoint / "config.json").read_text())
    assert table["share"] == (config.get("statistics_head") or {}).get("share", 0)
    rows = json.loads((checkpoint / "results" / "results.json").read_text())["table1"]
    card = {"audio": "audio only", "both": "audio + the clip's own words"}
    protocol = next(p for p in table["protocols"] if p.startswith("speaker-independent"))
    corpora = table["corpora"][protocol]
    assert set(corpora) == {"ravdess", "tess", "savee"}
    for setting, name in card.items():
        for corpus, bins in [(None, table["protocols"][protocol][setting])] + [(c, s[setting]) for c, s in corpora.items()]:
            shown = name if corpus is None else f"{name}, test corpus {corpus}"
            row = next(r for r in rows if r["model"] == "MSCNN-SPU-ATT" and r["setting"] == shown)
            confusion = np.array(row["confusion"])
            assert sum(b["answers"] for b in bins) == confusion.sum(), shown
            assert sum(b["right"] for b in bins) == np.trace(confusion), shown


@pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "results" / "calibration.json").is_file(), reason="no calibration table")
def test_the_page_shows_how_often_answers_as_sure_were_right(speech_file):
    from ser_demo import load_recognizer
    from ser_demo.analysis import analyze
    from ser_demo.summaries import prediction_summary_html

    recognizer = load_recognizer(str(BUNDLED_CHECKPOINT), asr=None)
    analysis = analyze(recognizer, str(speech_file), "the birch canoe slid on the smooth planks", "both", explanations=False)
    assert analysis.encoder_layer == recognizer.config.encoder_layer  # the heat map names the block it reads
    confidence = max(analysis.probabilities.values())
    right, answers = recognizer.calibration.accuracy("speaker-independent-5group, dev trained on", "both", confidence,
                                                     corpus="ravdess")
    assert f"{right:.0%} of the time on RAVDESS actors it never heard ({answers} answers)" in analysis.calibration
    assert analysis.to_dict()["calibration"] == analysis.calibration
    assert '<p class="calibration">' in prediction_summary_html(analysis)
    words_only = analyze(recognizer, None, "the birch canoe slid on the smooth planks", "text", explanations=False)
    assert words_only.calibration is None and 'class="calibration"' not in prediction_summary_html(words_only)


def test_the_command_writes_a_checkpoints_table_from_a_cv_run_at_its_own_share(fake_corpora, tmp_path):
    """`python -m train calibration`: cv's per-clip answers, mixed at the checkpoint's share (not the
    run's), binned and counted into the checkpoint's results/; a run without a head is refused for
    a checkpoint with one. The checkpoint is the run's fold model with its head's share changed."""
    import shutil

    from test_train_commands import TINY_SET
    from test_trainer import run_module
    from train import predictions

    options = ["--audio", f"ravdess={fake_corpora['ravdess']}", "--text", str(fake_corpora["goemotions"]),
               "--cache", str(tmp_path / "cache"), "--no-progress", "--epochs", "1", *TINY_SET,
               "--drop-text", "0.5", "--drop-audio", "0.3",  # so that cv also scores audio alone
               "--protocol", "speaker-independent", "--groups", "3", "--seeds", "0", "--max-folds", "1"]
    cv, plain = tmp_path / "cv", tmp_path / "cv-without-head"
    for out, head in ((cv, ["--statistics-head", "0.25", "--statistics-head-penalty", "0.01"]), (plain, [])):
        result = run_module("train", "cv", *options, *head, "--out", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(next(cv.rglob("model/config.json")).parent, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["statistics_head"]["share"] = share = 0.4
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = run_module("train", "calibration", "--checkpoint", str(checkpoint), "--run", str(cv))
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads((checkpoint / "results" / "calibration.json").read_text())
    [record] = predictions.load(cv)
    audio = record["settings"]["audio"]
    mixed = predictions.mixed(audio, share)
    bins = table["protocols"][record["protocol"]]["audio"]
    assert table["share"] == share != 0.25
    assert sum(b["answers"] for b in bins) == len(audio["label"]) == 8
    assert sum(b["right"] for b in bins) == sum(record["labels"][int(np.argmax(p))] == label for p, label in zip(mixed, audio["label"]))
    assert [b["answers"] for b in bins] == [sum(bin_of(p.max()) == i for p in mixed) for i in range(len(EDGES) - 1)]
    assert "right / answers by top probability" in result.stdout
    refused = run_module("train", "calibration", "--checkpoint", str(checkpoint), "--run", str(plain))
    assert refused.returncode != 0 and "these folds have none" in refused.stderr
    missing = run_module("train", "calibration", "--checkpoint", str(checkpoint), "--run", str(tmp_path / "nothing"))
    assert missing.returncode != 0 and "no per-clip predictions" in missing.stderr


@pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "results" / "calibration.json").is_file(), reason="no calibration table")
def test_the_readme_table_is_the_bundled_checkpoints():
    """README's *How sure is sure?* rows are the bundled table's audio-alone bins (fraction right, answers)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = json.loads((BUNDLED_CHECKPOINT / "results" / "calibration.json").read_text())
    rows = {"RAVDESS actors it never heard (these folds; the page's row)": ("speaker-independent", "ravdess"),
            "all speakers it never heard (these folds; 3,200 of the answers are TESS's)": ("speaker-independent", None),
            "a corpus it never heard": ("leave-one-corpus-out", None)}
    for name, (protocol, corpus) in rows.items():
        protocol = next(p for p in table["protocols"] if p.startswith(protocol))
        bins = (table["corpora"][protocol][corpus] if corpus else table["protocols"][protocol])["audio"]
        right, answers = sum(b["right"] for b in bins), sum(b["answers"] for b in bins)
        cells = [f"{b['right'] / b['answers']:.0%} ({b['answers']})".replace("%", " %") for b in bins]
        line = f"| {name} | " + " | ".join(cells) + f" | {right / answers:.0%} ({answers}) |".replace("%", " %")
        assert line in readme, line


@pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "results" / "calibration.json").is_file(), reason="no calibration table")
def test_every_output_of_an_answer_says_how_often_answers_as_sure_were_right(speech_file, speech, tmp_path):
    """`predict`'s JSON, the batch CSV, the timeline's segments (JSON, CSV) and the app's segment
    table carry the answer's row of the table: the same figures the page's sentence quotes."""
    import csv
    import io

    import soundfile as sf

    from ser_demo import load_recognizer
    from ser_demo.batch import csv_header, predict_rows
    from ser_demo.timeline import timeline
    from timeline_tab import _summary, segments_frame

    recognizer = load_recognizer(str(BUNDLED_CHECKPOINT), asr=None)
    table = recognizer.calibration
    prediction = recognizer.predict(str(speech_file), modality="audio")
    confidence = max(prediction.probabilities.values())
    record = prediction.to_dict()["calibration"]
    right, answers = table.accuracy("speaker-independent-5group, dev trained on", "audio", confidence, corpus="ravdess")
    assert record["bin"] == table.bin_words(confidence)
    assert record["new_speakers"] == {"right": round(right, 4), "answers": answers,
                                      "measured_on": "RAVDESS actors it never heard"}
    right, answers = table.accuracy("leave-one-corpus-out, dev trained on", "audio", confidence)
    assert record["new_corpus"] == {"right": round(right, 4), "answers": answers, "measured_on": "a corpus it never heard"}
    for key in ("new_speakers", "new_corpus"):  # the sentence quotes the same figures
        assert f"{record[key]['right']:.0%} of the time on {record[key]['measured_on']}" in table.sentence("audio", confidence)
    assert recognizer.predict(None, transcript="what a day", modality="text").calibration is None

    header = csv_header(recognizer.labels)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not audio")
    good, bad = (dict(zip(header, row)) for row in predict_rows(recognizer, [speech_file, tmp_path / "bad.wav"],
                                                                   modality="audio", workers=1))
    assert good["right_new_speakers"] == f"{record['new_speakers']['right']:.4f}"
    assert good["right_new_corpus"] == f"{record['new_corpus']['right']:.4f}"
    assert bad["right_new_speakers"] == bad["right_new_corpus"] == "" and bad["error"]

    sf.write(tmp_path / "long.wav", np.concatenate([speech, np.zeros(32000, np.float32), speech]), 16000)
    result = timeline(recognizer, str(tmp_path / "long.wav"), modality="audio")
    spoken = [s for s in result.segments if s.kind == "speech"]
    assert spoken and all(s.calibration == table.record("audio", max(s.probabilities.values())) for s in spoken)
    assert all(s.calibration is None for s in result.segments if s.kind == "silence")
    written = io.StringIO()
    csv.writer(written).writerows([result.csv_header(), *result.csv_rows()])
    rows = list(csv.DictReader(io.StringIO(written.getvalue())))
    for row, segment in zip(rows, result.segments):
        assert row["right_new_speakers"] == Calibration.columns(segment.calibration)[0]
    assert result.to_dict()["segments"][[s.kind for s in result.segments].index("speech")]["calibration"] == spoken[0].calibration
    frame = segments_frame(result)
    first = frame.iloc[[s.kind for s in result.segments].index("speech")]
    assert first["right if as sure: new speakers"] == round(spoken[0].calibration["new_speakers"]["right"], 2)
    assert "on RAVDESS actors it never heard (new speakers)" in _summary(result)

    recognizer.calibration = None  # a checkpoint without a table: empty columns, no line
    assert recognizer.predict(str(speech_file), modality="audio").calibration is None
    row = next(predict_rows(recognizer, [speech_file], modality="audio", workers=1))
    assert row[header.index("right_new_speakers")] == row[header.index("right_new_corpus")] == "" and row[1]
    result = timeline(recognizer, str(tmp_path / "long.wav"), modality="audio")
    assert segments_frame(result)["right if as sure: new speakers"].isna().all() and "as sure" not in _summary(result)
