"""The bundled checkpoint: its recorded results belong to it, and its recipe really learns.

The first tests read only committed files (checkpoints/<name>/: config.json, training.json, the
model card, results/ with the cross-validation log): they check that the CV results on record were
measured with this checkpoint's configuration and data, and that every copy of those numbers (the
results files, the model card, the project README) agrees. They compare the files with each other,
never with numbers written here, so a retrain that keeps them consistent passes.

The last test (shared_data) trains the bundled recipe for a few epochs on some RAVDESS actors and
checks that it recognises emotions of other actors clearly above chance.
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from ser_demo.model import ModelConfig
from ser_demo.recognizer import BUNDLED_CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent
RESULTS = BUNDLED_CHECKPOINT / "results"
MODALITY_OF_SETTING = {"audio + text": "both", "audio only": "audio", "text only": "text"}
CONFIG_FIELDS = {f.name for f in fields(ModelConfig)}

pytestmark = pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "model.safetensors").is_file(),
                                reason="no bundled checkpoint")


def comparable(config: dict) -> dict:
    """A config as ModelConfig reads it (defaults filled in), without the normaliser: that is
    fitted on each run's own training clips."""
    known = {k: v for k, v in config.items() if k in CONFIG_FIELDS and k != "normalizer"}
    return {k: v for k, v in ModelConfig(**known).to_dict().items() if k != "normalizer"}


def read_cv_log(path: Path) -> dict:
    """What a `python -m train cv` log records: the data reports, each row's model config, the
    folds, every fold's scores per modality, and where the results were written."""
    log = {"data": [], "configs": {}, "folds": [], "scores": {}, "wrote": None}
    for line in path.read_text().splitlines():
        if line.startswith("== ") and ": {" in line:
            name, config = line[3:].split(": {", 1)
            log["configs"][name] = json.loads("{" + config)
        elif not log["configs"] and line.strip():
            log["data"].append(line)
        elif match := re.match(r"(\S+/seed\d+/fold\d+): train \d+, dev \d+, test \d+", line):
            log["folds"].append(match.group(1))
        elif match := re.match(r"\s+(both|audio|text): WA ([\d.]+) UA ([\d.]+)", line):
            log["scores"].setdefault(match.group(1), []).append((float(match.group(2)), float(match.group(3))))
        elif match := re.match(r"wrote (\S+)/results\.md and \S+/results\.json", line):
            log["wrote"] = match.group(1)
    return log


def command_option(command: str, option: str, default=None):
    tokens = shlex.split(command)
    return tokens[tokens.index(option) + 1] if option in tokens else default


@pytest.fixture(scope="module")
def record() -> dict:
    for name in ("config.json", "training.json", "README.md", "results/results.json", "results/cv-log.txt"):
        assert (BUNDLED_CHECKPOINT / name).is_file(), f"the bundled checkpoint lacks {name}"
    return {
        "config": json.loads((BUNDLED_CHECKPOINT / "config.json").read_text()),
        "training": json.loads((BUNDLED_CHECKPOINT / "training.json").read_text()),
        "results": json.loads((RESULTS / "results.json").read_text()),
        "log": read_cv_log(RESULTS / "cv-log.txt"),
    }


def test_the_cross_validation_trained_this_configuration_on_this_data(record):
    config, training, log = record["config"], record["training"], record["log"]
    assert config.get("normalizer"), "the checkpoint carries no feature normalisation"
    rows = {row["model"] for row in record["results"]["table1"]}
    assert rows and rows <= set(log["configs"]), f"results for {rows}, configs logged for {set(log['configs'])}"
    for name in rows:
        assert comparable(log["configs"][name]) == comparable(config), f"CV row {name!r} trained another model"
    # the same corpora, read and filtered the same way, with the same pairing
    assert log["data"] == training["data"]
    # the model card's results are this run's: fit --results names the folder the CV wrote
    results_arg = command_option(training["command"], "--results")
    assert results_arg is not None, "the checkpoint was fitted without --results"
    assert log["wrote"] is not None and Path(results_arg).parent == Path(log["wrote"])


def test_the_results_are_the_folds_in_the_log(record):
    """Every table row is the mean and std of the per-fold scores the log shows, over all folds,
    for exactly the modalities the recipe's modality dropout trained."""
    from train.experiment import supported_modalities
    from train.pairing import ModalityDropout

    config, log = record["config"], record["log"]
    rows = record["results"]["table1"]
    command = record["training"]["command"]
    dropout = ModalityDropout(float(command_option(command, "--drop-text", 0)),
                              float(command_option(command, "--drop-audio", 0)))
    modalities = [MODALITY_OF_SETTING[row["setting"].split(" (")[0]] for row in rows]
    assert sorted(modalities) == sorted(supported_modalities(ModelConfig(**{
        k: v for k, v in config.items() if k in CONFIG_FIELDS}), dropout))
    protocols = {fold.split("/")[0] for fold in log["folds"]}
    for row, modality in zip(rows, modalities):
        scores = log["scores"][modality]
        assert row["protocol"] in protocols and row["labels"] == config["labels"]
        assert row["n_runs"] == len(scores) == len(log["folds"])
        wa, ua = [s[0] for s in scores], [s[1] for s in scores]
        # the log prints 3 decimals
        assert row["wa_mean"] == pytest.approx(statistics.mean(wa), abs=6e-4)
        assert row["ua_mean"] == pytest.approx(statistics.mean(ua), abs=6e-4)
        assert row["wa_std"] == pytest.approx(statistics.stdev(wa), abs=1.5e-3)
        assert row["ua_std"] == pytest.approx(statistics.stdev(ua), abs=1.5e-3)
        confusion = row["confusion"]
        assert len(confusion) == len(config["labels"]) and all(len(r) == len(confusion) for r in confusion)


def test_every_copy_of_the_results_agrees(record):
    """results.md, the model card (front matter and table) and the project README show the
    numbers of results.json."""
    rows = record["results"]["table1"]
    markdown = (RESULTS / "results.md").read_text()
    card = (BUNDLED_CHECKPOINT / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    reported = {(r["dataset"]["config"], m["type"]): m["value"]
                for entry in front_matter["model-index"] for r in entry["results"] for m in r["metrics"]}
    readme = (ROOT / "README.md").read_text()
    for row in rows:
        percent = (f"{100 * row['wa_mean']:.2f} ± {100 * row['wa_std']:.2f} | "
                   f"{100 * row['ua_mean']:.2f} ± {100 * row['ua_std']:.2f}")
        assert f"| {row['setting']} | {row['protocol']} | {percent} |" in markdown
        name = f"{row['protocol']} - {row['setting']}"
        assert reported[name, "accuracy"] == pytest.approx(row["wa_mean"], abs=5e-5)
        assert reported[name, "recall"] == pytest.approx(row["ua_mean"], abs=5e-5)
        assert f"| {name} | {percent} | {row['n_runs']} |" in card
        assert f"| {percent} |" in readme, f"README.md does not show {row['setting']}: {percent}"


@pytest.mark.slow
@pytest.mark.shared_data("ravdess", "goemotions")
def test_the_bundled_recipe_learns_emotions_of_unseen_speakers(record, shared_data, tmp_path):
    """The bundled checkpoint's configuration and modality dropout, trained for a few epochs on
    RAVDESS actors 01-10 (dev: 11-12), scored on actors 13-18 whom it never heard. Chance is 25%
    UA; a recipe a retrain broke (features, normalisation, labels, loop) lands near it."""
    from train.experiment import load_data, run_fold, supported_modalities
    from train.pairing import ModalityDropout
    from train.protocol import Fold
    from train.trainer import FeatureBank, TrainSettings

    command = record["training"]["command"]
    config = ModelConfig(**{k: v for k, v in record["config"].items() if k in CONFIG_FIELDS and k != "normalizer"})
    dropout = ModalityDropout(float(command_option(command, "--drop-text", 0)),
                              float(command_option(command, "--drop-audio", 0)))
    data = load_data([("ravdess", str(shared_data / "ravdess"))], str(shared_data / "goemotions"))
    actor = [int(u.speaker.split("_")[-1]) for u in data.utterances]
    split = {part: tuple(i for i, a in enumerate(actor) if a in actors)
             for part, actors in (("train", range(1, 11)), ("dev", (11, 12)), ("test", range(13, 19)))}
    fold = Fold("ravdess-actors-01-10|11-12|13-18", 0, 0, split["train"], split["dev"], split["test"])
    modalities = supported_modalities(config, dropout)
    settings = TrainSettings(epochs=6, batch_size=int(command_option(command, "--batch-size", 64)),
                             learning_rate=float(command_option(command, "--lr", 5e-4)), progress=False)
    lines = []
    _, results, info = run_fold(data, fold, config, settings, FeatureBank(config, tmp_path / "cache"), dropout,
                                modalities, log=lines.append)
    print("\n".join(lines))
    assert results["both"].n == len(split["test"]) == 6 * 28
    # audio alone, when the recipe trains it: the voices carry the emotion here (the paired text
    # shares only the label), so this is the part a broken audio pipeline cannot fake
    judged = "audio" if "audio" in results else "both"
    assert results[judged].ua > 0.35, f"{judged} UA {results[judged].ua:.3f} on unseen actors (chance 0.25)"
    assert results["both"].ua > 0.35, f"audio + text UA {results['both'].ua:.3f} on unseen actors"
