"""Model card and Hub upload, exercised up to the HTTP call (HfApi methods are recorded)."""

from __future__ import annotations

import huggingface_hub
import pytest
from huggingface_hub import ModelCard, metadata_load

from train.hub import inherited_licence, licence_id, push_to_hub, write_model_card
from train.protocol import Summary

TRAINING_DATA = [
    {"name": "RAVDESS", "licence": "CC BY-NC-SA 4.0", "url": "https://zenodo.org/record/1188976"},
    {"name": "TESS", "licence": "CC BY-NC-ND 4.0", "url": "https://tspace.library.utoronto.ca/handle/1807/24487"},
    {"name": "GoEmotions", "licence": "Apache-2.0", "url": "https://github.com/google-research/google-research/tree/master/goemotions"},
]
RESULTS = {
    "speaker-independent-6group": Summary("speaker-independent-6group", 18, 0.6512, 0.0401, 0.6433, 0.0388),
    "paper-10fold-cv": {"wa": 0.8011, "ua": 0.7950, "wa_std": 0.01, "ua_std": 0.02, "n_runs": 30},
}


def test_licence_ids():
    assert licence_id("CC BY-NC-SA 4.0") == "cc-by-nc-sa-4.0"
    assert licence_id("Apache-2.0") == "apache-2.0"
    assert inherited_licence(TRAINING_DATA[:1]) == "cc-by-nc-sa-4.0"
    assert inherited_licence(TRAINING_DATA) == "other"


def test_model_card_front_matter_is_valid_hub_metadata(tmp_path):
    card_path = write_model_card(
        tmp_path / "ckpt",
        RESULTS,
        TRAINING_DATA,
        protocol="Speakers split into 6 disjoint groups; 3 seeds.",
        repo_id="someone/mscnn-spu-att-ravdess",
        pairing="Audio clips paired with GoEmotions texts of the same label, re-drawn each epoch.",
        command="python -m train fit --audio ravdess=data/ravdess --consistency 3 --consistency-trains words",
    )
    metadata = metadata_load(card_path)
    assert metadata["pipeline_tag"] == "audio-classification"
    assert metadata["library_name"] == "pytorch"
    assert metadata["license"] == "other" and metadata["license_name"]
    assert metadata["datasets"] == ["RAVDESS", "TESS", "GoEmotions"]
    assert "speech-emotion-recognition" in metadata["tags"]

    card = ModelCard.load(card_path)  # parses model-index into EvalResults, raising if malformed
    assert card.data.model_name == "mscnn-spu-att-ravdess"
    by_metric = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert by_metric == {
        ("speaker-independent-6group", "accuracy"): 0.6512,
        ("speaker-independent-6group", "recall"): 0.6433,
        ("paper-10fold-cv", "accuracy"): 0.8011,
        ("paper-10fold-cv", "recall"): 0.795,
    }
    assert all(r.task_type == "audio-classification" for r in card.data.eval_results)

    body = card.text
    for section in ("## Model description", "## Training data", "## Evaluation protocol", "## Results",
                    "## Intended use", "## Limitations", "## How to use"):  # fmt: skip
        assert section in body
    assert "| RAVDESS | CC BY-NC-SA 4.0 |" in body
    assert "| speaker-independent-6group | 65.12 ± 4.01 | 64.33 ± 3.88 | 18 |" in body
    assert "non-commercial" in body and "CC BY-NC-ND 4.0" in body
    assert "acted speech" in body.lower()
    assert "Speakers split into 6 disjoint groups" in body
    assert "re-drawn each epoch" in body
    procedure = body.split("## Training procedure", 1)[1].split("\n## ", 1)[0]  # the recipe, rerunnable
    assert "```bash\npython -m train fit --audio ravdess=data/ravdess --consistency 3 --consistency-trains words\n```" in procedure
    assert 'load_recognizer("someone/mscnn-spu-att-ravdess")' in body


def test_single_licence_is_used_as_is(tmp_path):
    card_path = write_model_card(tmp_path, {}, TRAINING_DATA[:1], protocol="none")
    metadata = metadata_load(card_path)
    assert metadata["license"] == "cc-by-nc-sa-4.0" and "model-index" not in metadata


def test_push_to_hub_creates_repo_then_uploads_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, **kw: calls.append(("create_repo", kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload_folder", kw)))
    folder = tmp_path / "ckpt"
    with pytest.raises(FileNotFoundError, match="model card"):
        push_to_hub(folder, "someone/model")
    assert calls == []

    write_model_card(folder, RESULTS, TRAINING_DATA, protocol="p")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    (folder / "state").mkdir()  # what `python -m train fit` leaves beside the checkpoint
    (folder / "state" / "state.safetensors").write_bytes(b"optimizer")
    (folder / "state" / "state.json").write_text("{}")
    (folder / "log.txt").write_text("epoch 1")
    push_to_hub(folder, "someone/model", token="hf_fake", private=True, commit_message="first")
    assert calls == [
        ("create_repo", {"repo_id": "someone/model", "repo_type": "model", "private": True, "exist_ok": True}),
        (
            "upload_folder",
            {"folder_path": str(folder), "repo_id": "someone/model", "repo_type": "model", "commit_message": "first",
             "ignore_patterns": ["state/*", "log.txt"]},
        ),
    ]
    # the patterns, as huggingface_hub applies them, upload the checkpoint and card and nothing else
    from huggingface_hub.utils import filter_repo_objects

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    uploaded = list(filter_repo_objects(files, ignore_patterns=calls[1][1]["ignore_patterns"]))
    assert uploaded == ["README.md", "config.json", "model.safetensors"]


def test_push_to_hub_passes_the_token_to_the_client(tmp_path, monkeypatch):
    tokens = []
    real_init = huggingface_hub.HfApi.__init__

    def recording_init(self, *args, **kwargs):
        tokens.append(kwargs.get("token"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(huggingface_hub.HfApi, "__init__", recording_init)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, **kw: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: None)
    write_model_card(tmp_path, {}, TRAINING_DATA, protocol="p")
    push_to_hub(tmp_path, "someone/model", token="hf_secret")
    assert tokens == ["hf_secret"]


@pytest.mark.parametrize("gate_labels, rule", [
    (None, "gives less than 50 % to its answer"),
    (("angry", "happy", "sad"), "gives less than 50 % to each of angry, happy and sad"),
])
def test_the_model_description_states_the_words_gate(gate_labels, rule):
    from ser_demo.model import ModelConfig
    from train.hub import describe_model

    assert "words gate" not in describe_model(ModelConfig())
    described = describe_model(ModelConfig(words_gate=0.5, words_gate_labels=gate_labels))
    assert f"a words gate: when the text branch, reading the words alone, {rule}, the words are set aside" in described
