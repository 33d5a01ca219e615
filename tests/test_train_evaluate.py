"""`python -m train evaluate`: text corpora, audio corpora with their own or Whisper's words, and
label-matched pairing only when asked for; every figure names its protocol and its data.

The checkpoints here are small and untrained (their figures are near chance): these tests check
what is scored and how it is labelled, on the real shared corpora, not how well a model does."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.transcript import UNSURE_LOG_PROBABILITY
from train.__main__ import main
from train.scoring import LABEL_MATCHED_WARNING, seen_in_training


def save_checkpoint(folder: Path, **switches) -> str:
    torch.manual_seed(0)
    MSCNN_SPU_ATT(ModelConfig(n_filters=8, n_hidden=16, **switches)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory) -> str:
    return save_checkpoint(tmp_path_factory.mktemp("text-only"), use_audio=False)


@pytest.fixture(scope="module")
def bimodal_checkpoint(tmp_path_factory) -> str:
    return save_checkpoint(tmp_path_factory.mktemp("bimodal"))


def evaluate(capsys, *args) -> tuple[dict, str]:
    """Run the command in this process: (its JSON line, the line a person reads above it)."""
    assert main(["evaluate", *map(str, args)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), lines[-2]


def check_figures(scores: dict, line: str, n: int) -> None:
    assert scores["n"] == n and sum(map(sum, scores["confusion"])) == n
    recalls = [r for r in scores["recall"].values() if r is not None]
    assert scores["ua"] == pytest.approx(sum(recalls) / len(recalls))
    # the printed figure carries its protocol and data
    assert line.startswith(f"WA {scores['wa']:.4f}, UA {scores['ua']:.4f} | {scores['protocol']} | {scores['data']}")


@pytest.mark.shared_data("dailydialog", "isear")
def test_text_corpus_scores_its_held_out_split_by_default(shared_data, text_checkpoint, capsys, tmp_path):
    folder = shared_data / "dailydialog"
    scores, line = evaluate(capsys, "--checkpoint", text_checkpoint, "--corpus", "dailydialog", "--data", folder,
                            "--cache", tmp_path)
    check_figures(scores, line, 3749)
    assert scores["split"] == "test" and scores["data"] == f"dailydialog test split ({folder}): 3749 texts"
    assert scores["protocol"] == "text only (a text-only checkpoint) on the corpus's own labelled texts"
    scores, _ = evaluate(capsys, "--checkpoint", text_checkpoint, "--corpus", "isear", "--data", shared_data / "isear",
                         "--split", "dev", "--cache", tmp_path)
    assert scores["n"] == 349 and scores["recall"]["neutral"] is None  # ISEAR has no neutral: left out of UA


@pytest.mark.shared_data("goemotions")
def test_goemotions_folder_without_train_tsv_and_a_single_file(shared_data, bimodal_checkpoint, capsys, tmp_path):
    """Used to fail (a folder without train.tsv) or crash (AttributeError: no 'transcript')."""
    source = shared_data / "goemotions"
    folder = tmp_path / "goemotions"
    folder.mkdir()
    for name in ("test.tsv", "labels.txt"):
        shutil.copy(source / name, folder / name)
    scores, line = evaluate(capsys, "--checkpoint", bimodal_checkpoint, "--corpus", "goemotions", "--data", folder,
                            "--cache", tmp_path)
    check_figures(scores, line, 4324)
    assert "the text branch of an audio + text checkpoint, given no audio" in scores["protocol"]
    scores, _ = evaluate(capsys, "--checkpoint", bimodal_checkpoint, "--corpus", "goemotions", "--data",
                         folder / "test.tsv", "--cache", tmp_path)
    assert scores["n"] == 4324 and scores["split"] == "all" and scores["data"].startswith("goemotions file (")
    with pytest.raises(SystemExit, match="no train.tsv"):
        main(["evaluate", "--checkpoint", bimodal_checkpoint, "--corpus", "goemotions", "--data", str(folder), "--split", "train"])


@pytest.mark.shared_data("ravdess")
def test_audio_corpus_with_its_own_transcripts(shared_data, bimodal_checkpoint, capsys, tmp_path):
    actor = shared_data / "ravdess" / "Actor_01"  # 28 clips of neutral, happy, sad, angry
    common = ("--checkpoint", bimodal_checkpoint, "--corpus", "ravdess", "--data", actor, "--cache", tmp_path)
    scores, line = evaluate(capsys, *common, "--transcripts", "own")
    check_figures(scores, line, 28)
    assert scores["protocol"] == "audio + the clip's own transcript (from the corpus)"
    assert scores["data"] == f"ravdess ({actor}): 28 clips"
    text_only, _ = evaluate(capsys, *common, "--modality", "text")
    assert text_only["protocol"] == "text only, no audio: the clip's own transcript (from the corpus)"
    audio_only, _ = evaluate(capsys, *common, "--modality", "audio")
    assert audio_only["protocol"] == "audio only" and audio_only["n"] == 28
    # two statements, read in every emotion: from words alone the model answers at most two classes
    predicted_classes = sum(any(row[j] for row in text_only["confusion"]) for j in range(len(text_only["labels"])))
    assert predicted_classes <= 2 and text_only["ua"] <= 0.5
    assert not any("label" in s["protocol"] for s in (scores, text_only, audio_only))  # never paired by label unasked


@pytest.mark.shared_data("ravdess", "goemotions")
def test_label_matched_text_only_when_asked_and_said_so(shared_data, bimodal_checkpoint, capsys, tmp_path):
    actor = shared_data / "ravdess" / "Actor_02"
    goemotions = shared_data / "goemotions"
    scores, line = evaluate(capsys, "--checkpoint", bimodal_checkpoint, "--corpus", "ravdess", "--data", actor,
                            "--label-matched-text", f"goemotions={goemotions}", "--cache", tmp_path)
    check_figures(scores, line, 28)
    assert "label-matched text from the test split of goemotions" in scores["protocol"]
    assert LABEL_MATCHED_WARNING in scores["protocol"] and LABEL_MATCHED_WARNING in line


@pytest.mark.shared_data("savee", "isear")
def test_what_cannot_be_measured_is_refused_with_a_reason(shared_data, text_checkpoint, bimodal_checkpoint, tmp_path):
    savee = shared_data / "savee"
    isear = shared_data / "isear"
    refusals = {
        "have no transcript of their own: use --transcripts asr": ("--checkpoint", bimodal_checkpoint, "--corpus", "savee",
                                                                    "--data", savee),
        "no audio branch": ("--checkpoint", text_checkpoint, "--corpus", "savee", "--data", savee, "--modality", "audio"),
        "scored with --modality text": ("--checkpoint", text_checkpoint, "--corpus", "isear", "--data", isear,
                                        "--modality", "both"),
        "--split is for text corpora": ("--checkpoint", bimodal_checkpoint, "--corpus", "savee", "--data", savee,
                                        "--split", "test"),
        "unknown corpus": ("--checkpoint", bimodal_checkpoint, "--corpus", "msp-podcast", "--data", savee),
        "cannot load the checkpoint": ("--checkpoint", tmp_path / "nothing-here", "--corpus", "isear", "--data", isear),
    }
    for message, args in refusals.items():
        with pytest.raises(SystemExit, match=message):
            main(["evaluate", *map(str, args), "--cache", str(tmp_path)])


@pytest.mark.shared_data("ravdess")
def test_audio_corpus_with_whispers_words(shared_data, bimodal_checkpoint, capsys, tmp_path):
    """--transcripts asr: the app's Whisper (tiny.en, offline) hears each trimmed clip once."""
    clips = tmp_path / "clips" / "Actor_03"
    clips.mkdir(parents=True)
    for clip in sorted((shared_data / "ravdess" / "Actor_03").glob("03-01-0[1345]-01-01-01-03.*")):
        (clips / clip.name).symlink_to(clip)
    scores, line = evaluate(capsys, "--checkpoint", bimodal_checkpoint, "--corpus", "ravdess", "--data", clips,
                            "--transcripts", "asr", "--cache", tmp_path / "cache")
    check_figures(scores, line, 4)
    assert scores["protocol"].startswith("audio + Whisper's transcript (") and "trimmed clip" in scores["protocol"]
    records = [json.loads(x) for x in (tmp_path / "cache" / "transcripts" / "transcripts.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all("door" in r["text"].lower() for r in records)  # "Kids are talking by the door"


def test_words_whisper_was_unsure_of_are_scored_as_the_app_reads_them(bimodal_checkpoint, capsys, tmp_path):
    """German speech: tiny.en writes English words it is unsure of. With the voice, the score leaves
    them out (the voice answers alone, as in the app); --read-unsure-words reads them anyway."""
    fixtures = Path(__file__).parent / "fixtures"
    manifest = tmp_path / "voices.csv"
    manifest.write_text("audio_path,transcript,label,speaker\n"
                        f"{fixtures / 'german.flac'},,neutral,de\n{fixtures / 'children.flac'},,happy,en\n")
    cache = tmp_path / "cache"
    common = ("--checkpoint", bimodal_checkpoint, "--corpus", "manifest", "--data", manifest, "--cache", cache)
    gated, _ = evaluate(capsys, *common, "--transcripts", "asr")
    assert "Whisper's words left out where it was unsure of them (1 of 2 clips" in gated["protocol"]
    records = [json.loads(x) for x in (cache / "transcripts" / "transcripts.jsonl").read_text().splitlines()]
    assert len(records) == 2 and sorted(r["log_probability"] < UNSURE_LOG_PROBABILITY for r in records) == [False, True]
    read, _ = evaluate(capsys, *common, "--transcripts", "asr", "--read-unsure-words")
    assert "unsure" not in read["protocol"] and read["n"] == 2
    assert len((cache / "transcripts" / "transcripts.jsonl").read_text().splitlines()) == 2  # heard once

    from train.arguments import data_of  # cv and fit: the clips carry the mark, and the run's report says so

    data = data_of(argparse.Namespace(audio=[f"manifest={manifest}"], text=None, calm_as_neutral=False,
                                      transcripts="asr", asr_backend=None, asr_model=None, cache=str(cache)))
    assert [u.unsure_words for u in data.utterances] == [True, False]
    assert any("unsure of the words of 1 of 2 clips" in line for line in data.reports)

    german = tmp_path / "german.csv"
    german.write_text(f"audio_path,transcript,label,speaker\n{fixtures / 'german.flac'},,neutral,de\n")
    common = ("--checkpoint", bimodal_checkpoint, "--corpus", "manifest", "--data", german, "--cache", cache)
    voice_alone, _ = evaluate(capsys, *common, "--modality", "audio")
    gated, _ = evaluate(capsys, *common, "--transcripts", "asr")
    assert gated["confusion"] == voice_alone["confusion"] and "(1 of 1 clips" in gated["protocol"]


def test_a_checkpoint_trained_on_the_data_is_flagged(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps({"data": [
        "ravdess: kept 504 of 648 (dropped calm: 144)",
        "train: dailydialog: kept 7948 of 8069", "dev: dailydialog: kept 3781 of 3883", "test: dailydialog: kept 3749 of 3857",
    ]}))  # fmt: skip
    assert "not a score on new voices" in seen_in_training(str(tmp_path), "ravdess", None)
    assert "train" in seen_in_training(str(tmp_path), "dailydialog", "train")
    assert "dev" in seen_in_training(str(tmp_path), "dailydialog", "all")
    assert seen_in_training(str(tmp_path), "dailydialog", "test") is None
    assert seen_in_training(str(tmp_path), "tess", None) is None
    assert seen_in_training(str(tmp_path / "elsewhere"), "ravdess", None) is None
