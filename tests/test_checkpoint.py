"""The bundled checkpoints: their recorded results belong to them, and the recipe really learns.

The first tests, run for each checkpoint in checkpoints/ (the bundled one), read
only committed files (checkpoints/<name>/: config.json, training.json and
its log, the model card, and results/ with the cross-validation log when the recipe's CV is on
record): the recorded command gives this configuration, the log is this training, the CV results
were measured with this configuration on these data, and every copy of those numbers (results
files, model card, project README) agrees. They compare the files with each other, never with
numbers written here, so a retrain that keeps them consistent passes.

The last test (shared_data) trains the bundled recipe for a few epochs on some RAVDESS actors and
checks that it recognises emotions of other actors clearly above chance.
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
from dataclasses import fields, replace
from pathlib import Path

import pytest
import yaml

from ser_demo.model import ModelConfig
from ser_demo.recognizer import BUNDLED_CHECKPOINT
from train.experiment import DEV_TRAINED

ROOT = Path(__file__).resolve().parent.parent
# Every checkpoint the project ships: each must keep its own record straight.
CHECKPOINTS = [BUNDLED_CHECKPOINT]
CONFIG_FIELDS = {f.name for f in fields(ModelConfig)}
# Filled in by training (statistics of the training clips, the encoder actually loaded): a CV log
# prints the config before that, so these may differ between the log and the checkpoint.
FILLED_BY_TRAINING = {"normalizer", "encoder_normalizer", "encoder"}
SCORE_LINE = re.compile(r"^\s+(.+?): WA ([\d.]+) UA ([\d.]+)\s*$")

pytestmark = pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "model.safetensors").is_file(),
                                reason="no bundled checkpoint")


def model_config(config: dict, keep_fitted: bool = False) -> ModelConfig:
    drop = set() if keep_fitted else FILLED_BY_TRAINING
    return ModelConfig(**{k: v for k, v in config.items() if k in CONFIG_FIELDS and k not in drop})


def read_cv_log(path: Path) -> dict:
    """What a `python -m train cv` log records: the data reports, each row's model config, the
    folds, every fold's scores per test setting, and where the results were written. A resumed
    run scores its finished folds again: as in folds.jsonl, a fold's last scores count."""
    log = {"data": [], "configs": {}, "wrote": None}
    by_fold: dict[str, dict[str, tuple[float, float]]] = {}
    fold = None
    for line in path.read_text().splitlines():
        if line.startswith("== ") and ": {" in line:
            name, config = line[3:].split(": {", 1)
            log["configs"][name] = json.loads("{" + config)
        elif not log["configs"] and line.strip():
            log["data"].append(line)
        elif match := re.match(r"(.+?/seed\d+/fold\d+): train \d+, dev \d+, test \d+", line):
            fold = match.group(1)
            by_fold[fold] = {}
        elif (match := SCORE_LINE.match(line)) and fold is not None:
            by_fold[fold][match.group(1)] = (float(match.group(2)), float(match.group(3)))
        elif match := re.match(r"wrote (\S+)/results\.md and \S+/results\.json", line):
            log["wrote"] = match.group(1)
    log["folds"] = list(by_fold)
    log["scores"] = {}
    for scores in by_fold.values():
        for label, score in scores.items():
            log["scores"].setdefault(label, []).append(score)
    return log


def recorded_options(command: str) -> list[str]:
    """The arguments of a recorded `python -m train ...` command. Records are shell-quoted
    (shlex.join); older ones joined argv with plain spaces, where the one free-text option
    (--protocol-note) cannot be told apart from what follows it, so it is dropped."""
    quoted = any(token[:1] in "'\"" for token in command.split())
    tokens = (shlex.split(command) if quoted else command.split())[3:]
    if not quoted and "--protocol-note" in tokens:
        at = tokens.index("--protocol-note")
        end = next((i for i in range(at + 1, len(tokens)) if tokens[i].startswith("--")), len(tokens))
        tokens = tokens[:at] + tokens[end:]
    return tokens


def parse_recorded(command: str, monkeypatch):
    """argparse's namespace of a recorded `python -m train fit ...` command, parsed by train's
    own command line (the command itself is not run)."""
    import train.__main__ as cli

    parsed = []
    monkeypatch.setattr(cli, "command_fit", lambda args: parsed.append(args) or 0)
    assert cli.main(recorded_options(command)) == 0 and parsed, command
    return parsed[0]


def percent(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def per_corpus(row: dict) -> bool:
    """A row of one test corpus only (the log prints each fold's overall scores, not these)."""
    return ", test corpus " in row["setting"]


@pytest.fixture(scope="module", params=[c for c in CHECKPOINTS if (c / "model.safetensors").is_file()],
                ids=lambda checkpoint: checkpoint.name)
def record(request) -> dict:
    return read_record(request.param)


@pytest.fixture(scope="module")
def bundled() -> dict:
    return read_record(BUNDLED_CHECKPOINT)


def read_record(checkpoint: Path) -> dict:
    for name in ("config.json", "training.json", "README.md"):
        assert (checkpoint / name).is_file(), f"{checkpoint.name} lacks {name}"
    results_dir = checkpoint / "results"
    # The cross-validation of its recipe, when on record (results/), and other runs of the same
    # folds in its folders (results/whisper-transcripts: the test clips with Whisper's words). The
    # card shows their rows together, a row two runs share from the first, as `train card` does.
    runs = []
    for folder in [results_dir, *sorted(p.parent for p in results_dir.glob("*/results.json"))]:
        if (folder / "results.json").is_file():
            results = json.loads((folder / "results.json").read_text())
            rows = [{**row, "folder": folder} for row in results["table1"] + results.get("table2", [])]
            runs.append({"rows": rows, "log": read_cv_log(folder / "cv-log.txt")})
    shown = {}
    for run in runs:
        for row in run["rows"]:
            shown.setdefault((row["model"], row["setting"], row["protocol"]), row)
    return {
        "checkpoint": checkpoint,
        "config": json.loads((checkpoint / "config.json").read_text()),
        "training": json.loads((checkpoint / "training.json").read_text()),
        "runs": runs,
        "rows": list(shown.values()),
        "log": runs[0]["log"] if runs else None,  # the recipe's own run
    }


def comparable(config: ModelConfig) -> dict:
    """JSON values of a config, without what training fills in."""
    return {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k not in FILLED_BY_TRAINING}


def test_the_recorded_command_made_this_configuration(record, monkeypatch):
    """training.json's command, read by train's own parser, gives config.json (but for what
    training fills in: the normalisers and the encoder it loaded, which must be there)."""
    from train.arguments import model_config as config_of_command

    config = record["config"]
    args = parse_recorded(record["training"]["command"], monkeypatch)
    assert comparable(config_of_command(args)) == comparable(model_config(config))
    checkpoint = model_config(config, keep_fitted=True)
    if checkpoint.use_audio and "mfcc" in checkpoint.audio_frontends:
        assert config.get("normalizer"), "no MFCC normalisation in the checkpoint"
    if checkpoint.use_audio and "whisper" in checkpoint.audio_frontends:
        assert config.get("encoder_normalizer") and config.get("encoder"), "no encoder record in the checkpoint"


def test_the_training_log_is_this_training(record):
    """training-log.txt (when committed) logged these data and these epochs, and the kept epoch
    is the best dev score of the history (or, trained with --no-dev, the last one, unscored)."""
    training = record["training"]
    history = training["history"]
    assert history
    if training["best_dev"] is None:
        assert training["dev_speakers"] == [] and not any(training["select_on"] in h for h in history)
    else:
        assert training["best_dev"] == max(h[training["select_on"]] for h in history)
    log_file = record["checkpoint"] / "training-log.txt"
    if not log_file.is_file():
        return
    lines = log_file.read_text().splitlines()
    assert lines[: len(training["data"])] == training["data"]
    epochs = [json.loads(line.removesuffix(" *")) for line in lines if line.startswith('{"epoch"')]
    assert [e["epoch"] for e in epochs] == [h["epoch"] for h in history]
    for logged, kept in zip(epochs, history):
        assert logged.keys() == kept.keys()
        for key in set(kept) & {"loss", "wa", "ua"}:
            assert logged[key] == pytest.approx(kept[key], abs=6e-5)


def test_the_cross_validation_on_record_trained_this_configuration_on_this_data(record):
    log = record["log"]
    if log is None:
        pytest.skip(f"{record['checkpoint'].name} carries no cross-validation results (no results/)")
    config, training = record["config"], record["training"]
    assert "MSCNN-SPU-ATT" in log["configs"], f"no MSCNN-SPU-ATT config in the CV log: {list(log['configs'])}"
    logged = model_config({**log["configs"]["MSCNN-SPU-ATT"], "feature_params": config.get("feature_params")})
    # The CV on record may be of the recipe's audio branch alone (README and card say so): the
    # same model without its text branch, on the same audio corpora.
    audio_branch = model_config(config).use_text and not logged.use_text
    if audio_branch:
        logged = replace(logged, use_text=True)
    assert comparable(logged) == comparable(model_config(config)), "the CV trained another model"
    if audio_branch:
        audio_lines = [line for line in training["data"] if re.match(r"^(ravdess|tess|savee|crema-d|emodb|iemocap|manifest): ", line)]
        assert log["data"] == audio_lines  # the same audio corpora, read and filtered the same way
    else:
        assert log["data"] == training["data"]  # the same corpora, read and filtered the same way
    results_arg = command_option(training["command"], "--results")
    if results_arg is not None:  # where fit wrote the model card from a CV run, it is this one
        assert log["wrote"] is not None and Path(results_arg).parent == Path(log["wrote"])


def command_option(command: str, option: str):
    tokens = recorded_options(command)
    return tokens[tokens.index(option) + 1] if option in tokens else None


def test_the_results_are_the_folds_in_the_log(record):
    """Every overall table row is the mean and std of a series of per-fold scores in the log,
    one score per fold; per-corpus rows have at most one run per fold."""
    if not record["runs"]:
        pytest.skip(f"{record['checkpoint'].name} carries no cross-validation results (no results/)")
    for run in record["runs"]:
        check_rows_are_the_folds_in_the_log(run["rows"], run["log"], record["config"]["labels"])


def check_rows_are_the_folds_in_the_log(rows: list[dict], log: dict, labels: list[str]) -> None:
    assert log["folds"] and log["scores"]
    for row in rows:
        assert row["labels"] == labels
        # a --no-dev run logs its folds under the model's protocol, its baselines too (older runs: the fold's own)
        assert any(fold.startswith((row["protocol"] + "/", row["protocol"] + DEV_TRAINED + "/"))
                   for fold in log["folds"]), row["protocol"]
        if per_corpus(row):
            assert 1 <= row["n_runs"] <= len(log["folds"])
            continue
        assert row["n_runs"] == len(log["folds"]), row
        matching = []
        for label, scores in log["scores"].items():
            wa, ua = [s[0] for s in scores], [s[1] for s in scores]
            # the log prints 3 decimals; two settings can share a mean (audio alone and with
            # Whisper's words: 81.63 and 81.65), so the spread must match too
            if len(scores) == row["n_runs"] and abs(statistics.mean(wa) - row["wa_mean"]) < 6e-4 \
                    and abs(statistics.mean(ua) - row["ua_mean"]) < 6e-4 \
                    and (len(scores) == 1 or (abs(statistics.stdev(wa) - row["wa_std"]) < 1.5e-3
                                              and abs(statistics.stdev(ua) - row["ua_std"]) < 1.5e-3)):
                matching.append(label)
        assert matching, f"no per-fold scores in the log average to {row['model']} / {row['setting']}"
        confusion = row["confusion"]
        assert len(confusion) == len(row["labels"]) and all(len(r) == len(confusion) for r in confusion)


def test_the_model_card_shows_only_results_on_record(record):
    """The card's model-index and results table hold exactly the rows of results/results.json
    and of the other runs on record (none when the checkpoint carries no results), and each run's
    results.md the same numbers."""
    card = (record["checkpoint"] / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    reported = [(m["type"], m["value"]) for entry in front_matter.get("model-index", [])
                for r in entry["results"] for m in r["metrics"]]
    table = card.split("## Results", 1)[1].split("\n## ", 1)[0]
    shown = [line for line in table.splitlines() if re.search(r"\| [\d.]+ ± [\d.]+ \|", line)]
    rows = record["rows"]
    assert len(shown) == len(rows), f"the card shows {len(shown)} results, {len(rows)} are on record"
    assert len(reported) == 2 * sum(row["model"] == "MSCNN-SPU-ATT" for row in rows)
    for row in rows:
        wa, ua = percent(row["wa_mean"], row["wa_std"]), percent(row["ua_mean"], row["ua_std"])
        markdown = (row["folder"] / "results.md").read_text()
        assert f"| {wa} | {ua} |" in markdown, f"{row['folder'].name}/results.md lacks {row['model']} / {row['setting']}"
        assert f"| {wa} | {ua} | {row['n_runs']} |" in card, f"the model card lacks {row['model']} / {row['setting']}"
        if row["model"] == "MSCNN-SPU-ATT":  # the model itself, not a baseline: in the model-index
            assert ("accuracy", round(row["wa_mean"], 4)) in reported and ("recall", round(row["ua_mean"], 4)) in reported


def test_the_readme_quotes_the_cross_validation_on_record():
    """README.md writes the checkpoints' CV figures as "UA ± std (folds)": each of them is a row on
    record of one of them (so a retrain cannot leave the README quoting the previous run's numbers)."""
    recorded = [(100 * r["ua_mean"], 100 * r["ua_std"], r["n_runs"])
                for checkpoint in CHECKPOINTS if (checkpoint / "model.safetensors").is_file()
                for r in read_record(checkpoint)["rows"]]
    if not recorded:
        pytest.skip("no checkpoint carries cross-validation results (no results/)")
    quoted = re.findall(r"(\d+\.\d+) ± (\d+\.\d+) \((\d+)\)", (ROOT / "README.md").read_text())
    assert quoted, "README.md quotes none of the recorded cross-validation results"
    for mean, std, runs in quoted:
        assert any(abs(float(mean) - m) <= 0.051 and abs(float(std) - s) <= 0.051 and int(runs) == n
                   for m, s, n in recorded), f"README.md quotes {mean} ± {std} ({runs}), which is not on record"


@pytest.mark.slow
@pytest.mark.shared_data("ravdess")
def test_the_bundled_recipe_learns_emotions_of_unseen_speakers(bundled, shared_data, tmp_path, monkeypatch):
    """The bundled checkpoint's configuration and training recipe (its recorded fit command:
    text corpora, modality dropout, augmentation, optimiser), trained for a few epochs on RAVDESS
    actors 01-10 (dev 11-12), scored on actors 13-18, whom it never heard. Chance is 25% UA; a
    recipe that a change broke (features, normalisation, labels, pairing, loop) lands near it."""
    from dataclasses import replace

    from conftest import shared_corpus
    from train.arguments import data_of, settings_of
    from train.experiment import run_fold, supported_modalities
    from train.pairing import ModalityDropout
    from train.protocol import Fold
    from train.features import FeatureBank

    args = parse_recorded(bundled["training"]["command"], monkeypatch)
    texts = []
    for item in args.text:  # the recipe's text corpora, read from the shared folder
        name = item.partition("=")[0] if "=" in item and "/" not in item.partition("=")[0] else "goemotions"
        if shared_corpus(name) is None:
            pytest.skip(f"the recipe pairs with {name}, which {shared_data} lacks")
        texts.append(f"{name}={shared_corpus(name)}")
    args.audio, args.text, args.cache = [f"ravdess={shared_corpus('ravdess')}"], texts, str(tmp_path / "cache")
    data = data_of(args)
    config = model_config(bundled["config"])
    settings = replace(settings_of(args), epochs=6, patience=None, progress=False)
    dropout = ModalityDropout(args.drop_text, args.drop_audio)
    actor = [int(u.speaker.split("_")[-1]) for u in data.utterances]
    split = {part: tuple(i for i, a in enumerate(actor) if a in actors)
             for part, actors in (("train", range(1, 11)), ("dev", (11, 12)), ("test", range(13, 19)))}
    fold = Fold("ravdess-actors-01-10|11-12|13-18", 0, 0, split["train"], split["dev"], split["test"])
    lines = []
    _, results, _ = run_fold(data, fold, config, settings, FeatureBank(config, tmp_path / "cache"), dropout,
                             supported_modalities(config, dropout, bool(data.texts)), log=lines.append,
                             own_words=args.own_words, extra_texts=args.extra_texts, neutral_words=args.neutral_words)
    print("\n".join(lines))
    assert results["both"].n == len(split["test"]) == 6 * 28
    # Audio alone, where the recipe trains it: here the voice carries the emotion (the clips' own
    # words are two neutral sentences), so a broken audio path cannot hide behind the text.
    judged = "audio" if "audio" in results else "both"
    assert results[judged].ua > 0.35, f"{judged}: UA {results[judged].ua:.3f} on unseen actors (chance 0.25)"
