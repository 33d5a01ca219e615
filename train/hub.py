"""Publishing a trained checkpoint to the Hugging Face Hub: a model card, then one upload.

``write_model_card`` writes README.md with YAML front matter the Hub understands (licence, tags,
datasets, pipeline tag, and a ``model-index`` with WA and UA per protocol) and a body that says
what the model is, what it was trained on under which licences, how it was measured, what it
scored, and where it should not be trusted; ``write_card`` gathers all that for a trained
checkpoint (its training.json, its config, cv runs' results). ``push_to_hub`` creates the
repository if needed and uploads the folder; it refuses a folder without a model card.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import huggingface_hub
import yaml

from train.protocol import Summary

MODEL_NAME = "MSCNN-SPU-ATT"
PAPER = (
    "Z. Peng, Y. Lu, S. Pan, Y. Liu, \"Efficient Speech Emotion Recognition Using Multi-Scale CNN "
    "and Attention\", ICASSP 2021"
)
DEFAULT_TAGS = ("speech-emotion-recognition", "audio-classification", "multimodal", "pytorch", "mscnn-spu-att")
NON_COMMERCIAL = re.compile(r"\bnc\b|non-?commercial", re.IGNORECASE)


def licence_id(licence: str) -> str:
    """Hub licence identifier of a human-written licence: "CC BY-NC-SA 4.0" -> "cc-by-nc-sa-4.0"."""
    return re.sub(r"[\s_]+", "-", licence.strip().lower()).replace("--", "-")


def inherited_licence(training_data: Sequence[Mapping[str, str]]) -> str:
    """The model's licence: the data's one licence if they all agree, else "other" (explained in the card)."""
    licences = {licence_id(d["licence"]) for d in training_data}
    return licences.pop() if len(licences) == 1 else "other"


def _metrics_of(result: Summary | Mapping[str, Any]) -> dict[str, Any]:
    """WA/UA mean and std (fractions) and run count, from a Summary or a plain dict."""
    if isinstance(result, Summary):
        result = result.as_dict()
    return {
        "wa": float(result.get("wa_mean", result.get("wa"))),
        "wa_std": float(result.get("wa_std", 0.0)),
        "ua": float(result.get("ua_mean", result.get("ua"))),
        "ua_std": float(result.get("ua_std", 0.0)),
        "n_runs": result.get("n_runs"),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def card_metadata(
    results: Mapping[str, Summary | Mapping[str, Any]],
    training_data: Sequence[Mapping[str, str]],
    *,
    model_id: str,
    license: str,
    tags: Sequence[str] = DEFAULT_TAGS,
    languages: Sequence[str] = ("en",),
) -> dict[str, Any]:
    dataset_names = [d["name"] for d in training_data]
    evaluated_on = " + ".join(dataset_names)
    model_results = []
    for protocol, result in results.items():
        m = _metrics_of(result)
        runs = f", mean of {m['n_runs']} runs" if m["n_runs"] else ""
        model_results.append(
            {
                "task": {"type": "audio-classification", "name": "Speech emotion recognition (4 classes)"},
                "dataset": {"name": evaluated_on, "type": _slug(evaluated_on), "config": protocol, "split": "test"},
                "metrics": [
                    {"type": "accuracy", "value": round(m["wa"], 4), "name": f"WA ({protocol}{runs})"},
                    {
                        "type": "recall",
                        "value": round(m["ua"], 4),
                        "name": f"UA ({protocol}{runs})",
                        "args": {"average": "macro"},
                    },
                ],
            }
        )
    metadata: dict[str, Any] = {
        "library_name": "pytorch",
        "license": license,
        "language": list(languages),
        "tags": list(tags),
        "datasets": [d.get("hub_id", d["name"]) for d in training_data],
        "pipeline_tag": "audio-classification",
        "metrics": ["accuracy", "recall"],
    }
    if license == "other":
        metadata["license_name"] = "inherited-from-training-data"
    if model_results:
        metadata["model-index"] = [{"name": model_id, "results": model_results}]
    return metadata


DEFAULT_PROTOCOL_NOTE = "speaker-independent cross-validation (see results)"


def protocol_note_of(folder: Path) -> str | None:
    """The "Evaluation protocol" paragraph of the model card in `folder`, if it has one: a card
    rewritten with new results keeps the note that says how they were measured."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    match = re.search(r"\n## Evaluation protocol\n\n(.*?)\n\nWA \(weighted accuracy\)", card.read_text(), re.S)
    return match.group(1).strip() if match else None


def write_model_card(
    folder: str | os.PathLike,
    results: Mapping[str, Summary | Mapping[str, Any]],
    training_data: Sequence[Mapping[str, str]],
    protocol: str,
    *,
    repo_id: str | None = None,
    license: str | None = None,
    description: str | None = None,
    pairing: str | None = None,
    tags: Sequence[str] = DEFAULT_TAGS,
    languages: Sequence[str] = ("en",),
    baselines: Mapping[str, Summary | Mapping[str, Any]] | None = None,
    command: str | None = None,
) -> Path:
    """Write ``folder/README.md``; returns its path.

    results: {protocol name: Summary or {"wa_mean"/"wa", "wa_std", "ua_mean"/"ua", "ua_std", "n_runs"}}.
    training_data: [{"name", "licence", "url"} (+ optional "hub_id")].
    protocol: a sentence on how the results were measured (splits, seeds, repeats).
    pairing: how audio and text were paired in training (see train/pairing.py), if not natural.
    baselines: simple baselines measured on the same folds, shown beside the results (not in
    the model-index, which describes this model only).
    command: the command that trained it (training.json), shown so the recipe can be rerun.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    license = license or inherited_licence(training_data)
    model_id = (repo_id or MODEL_NAME).split("/")[-1]
    metadata = card_metadata(
        results, training_data, model_id=model_id, license=license, tags=tags, languages=languages
    )
    front_matter = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    body = _card_body(results, training_data, protocol, repo_id, license, description, pairing, baselines or {},
                      command)
    card_path = folder / "README.md"
    card_path.write_text(f"---\n{front_matter}---\n\n{body}", encoding="utf-8")
    return card_path


def _result_rows(results) -> list[str]:
    rows = []
    for name, result in results.items():
        m = _metrics_of(result)
        rows.append(
            f"| {name} | {100 * m['wa']:.2f} ± {100 * m['wa_std']:.2f} "
            f"| {100 * m['ua']:.2f} ± {100 * m['ua_std']:.2f} | {m['n_runs'] or ''} |"
        )
    return rows


def _card_body(results, training_data, protocol, repo_id, license, description, pairing, baselines,
               command=None) -> str:
    non_commercial = [d for d in training_data if NON_COMMERCIAL.search(d["licence"])]
    data_rows = "\n".join(f"| {d['name']} | {d['licence']} | {d.get('url', '')} |" for d in training_data)
    result_rows = _result_rows(results)
    baseline_note = (
        "\n**Baselines on the same folds** (logistic regression on clip-level mean and std of each "
        "representation, class-balanced, L2 chosen on the dev fold; audio only):\n\n"
        "| Baseline: test setting (protocol) | WA (%) | UA (%) | Runs |\n|---|---|---|---|\n"
        + "\n".join(_result_rows(baselines)) + "\n"
        if baselines else ""
    )
    licence_note = (
        "The model inherits the non-commercial terms of its training data ("
        + ", ".join(f"{d['name']}: {d['licence']}" for d in non_commercial)
        + "): use it for research and demonstration only, not commercially."
        if non_commercial
        else "Check the licences of the training data above before any commercial use."
    )
    if license == "other":
        licence_note += " The data's licences differ, so the card's licence is `other`: each of them applies."
    pairing_note = (
        f"\n**Audio-text pairing.** {pairing}\n"
        if pairing
        else ""
    )
    # The recipe in full (augmentation, regularisers, the words-consistency term...): every option
    # that made these weights, as the trainer recorded it.
    command_note = f"\n## Training procedure\n\n```bash\n{command}\n```\n" if command else ""
    load_id = repo_id or "path/to/this/folder"
    return f"""# {MODEL_NAME} speech emotion recognition

## Model description

{description or f"An open implementation of MSCNN-SPU-ATT ({PAPER}): a multi-scale CNN over 32 MFCCs with deltas (audio) and over GloVe word vectors (text), statistical pooling units, and attention from the audio to the words. It classifies an utterance as one of four emotions: angry, happy, sad, neutral. It accepts audio and transcript together, audio alone, or text alone."}
{pairing_note}
## Training data

| Corpus | Licence | Source |
|---|---|---|
{data_rows}

{licence_note}
{command_note}
## Evaluation protocol

{protocol}

WA (weighted accuracy) is the overall accuracy; UA (unweighted accuracy) is the mean of the per-class recalls, over the classes present in the test set. Numbers are mean ± standard deviation over all folds and repeats.

## Results

| Model: test setting (protocol) | WA (%) | UA (%) | Runs |
|---|---|---|---|
{chr(10).join(result_rows)}
{baseline_note}
## Intended use

Research, teaching and demonstrations of speech emotion recognition on short English utterances (a few seconds, one speaker). Not for decisions about people: hiring, policing, health, credit or any other assessment of an individual.

## Limitations

- Trained on acted speech: actors portraying emotions, often exaggerated. Spontaneous emotion in real conversations is subtler and is recognised much less reliably.
- The spoken corpora read fixed, emotionally neutral scripts, so their transcripts carry no emotion; what the text branch knows comes from text-only data, not from speech.
- Few speakers, mostly North American English. A new corpus costs far more than a new voice: trained on two of this project's three corpora and tested on the third (`python -m train cv --protocol cross-corpus`), its recipes fall below 50 % UA, and on the held-out corpus the answers often pile into one or two classes. Accuracy on other accents, languages, ages, rooms and microphones is unknown and likely much lower.
- A probability is not the chance of being right, and how far apart they lie depends on how familiar the voice is: where this folder has `results/calibration.json`, it says how often answers of each confidence were right in the cross-validation (the demo app shows the answer's row).
- Four classes only: every input is forced into angry, happy, sad or neutral.
- {licence_note}

## How to use

```python
from ser_demo import load_recognizer

recognizer = load_recognizer("{load_id}")
prediction = recognizer.predict("clip.wav", transcript="I can't believe it")  # or omit: Whisper transcribes
print(prediction.label, prediction.probabilities)
```
"""


RUN_FILES = ["state/*", "log.txt"]


def describe_model(config) -> str:
    """The model card's first paragraph, from what the checkpoint actually reads."""
    fronts = {"mfcc": "32 MFCCs with deltas (the paper's features)",
              "whisper": f"Whisper encoder states ({(config.encoder or {}).get('model', 'Whisper')}, "
                         + (f"the output of block {config.encoder_layer}, " if config.encoder_layer else "")
                         + f"{config.n_encoder_features}-d, 50 per second, "
                         + ("each clip encoded alone)" if config.encoder_context == "clip" else "from zero-padded 30 s windows)")}
    audio = " and ".join(fronts[f] for f in config.audio_frontends)
    parts = [f"An open implementation of MSCNN-SPU-ATT ({PAPER}): a multi-scale CNN per audio front-end over {audio}"]
    if config.use_speaker:
        parts.append(f"a {config.n_speaker_features}-d speaker embedding ({config.speaker_model}) in place of the paper's x-vector")
    if config.use_text:
        parts.append("a multi-scale CNN over GloVe word vectors of the transcript, statistical pooling units and attention from the audio statistics to the words")
    if config.statistics_head:
        head = config.statistics_head
        parts.append(f"and, not in the paper, a statistics head: a logistic regression (L2 {head['penalty']:g}) on clip "
                     f"statistics ({', '.join(head['parts'])}; mean and std over time, the speaker embedding as is), "
                     f"fitted after the network on its training clips, whose answer makes {head['share']:.0%} of the "
                     "output probabilities when there is audio")
    if config.use_audio and config.use_text and config.words_gate is not None:
        parts.append(f"and, not in the paper, a words gate: when {config.words_gate_rule}, "
                     "the words are set aside and the voice answers alone")
    return ("; ".join(parts) + ". It classifies an utterance as angry, happy, sad or neutral, from audio and "
            "transcript together, audio alone or text alone. Checkpoints that read Whisper encoder states need "
            "the same Whisper model, compute type, context and layer (recorded in config.json) and refuse another.")


def write_card(out: Path, config, results_files, protocol_note: str, repo_id=None) -> Path:
    """The model card of the checkpoint in `out` (its training.json) with cv runs' results: several
    runs of the same folds (e.g. test clips with their own words, then with Whisper's) add their
    rows; a row that two runs share is the first run's."""
    training = json.loads((out / "training.json").read_text())
    results, baselines = {}, {}
    for results_file in results_files or []:
        for row in json.loads(Path(results_file).read_text())["table1"]:
            table = baselines if row["model"].startswith("logistic regression") else results
            table.setdefault(f"{row['model']}: {row['setting']} ({row['protocol']})", row)
    return write_model_card(out, results, training["training_data"], protocol_note, repo_id=repo_id,
                            pairing=training["pairing"], description=describe_model(config), baselines=baselines,
                            command=training.get("command"))


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = f"Upload {MODEL_NAME} checkpoint",
):
    """Create ``repo_id`` (if missing) and upload ``folder`` to it; returns the commit info."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no README.md: write the model card first (write_model_card)")
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message,
        ignore_patterns=RUN_FILES,  # resumable optimizer state and local logs stay home
    )
