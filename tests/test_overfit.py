"""Real training, no mocks: the model must learn to separate a handful of real utterances.

Uses RAVDESS from ../shared/data when present (two actors, every emotion), else the espeak-ng
corpus; either way the audio goes through the same features and loop as the trainer."""

from __future__ import annotations

import pytest
import torch

from ser_demo.model import ModelConfig
from train.datasets import load_ravdess
from train.pairing import natural_pairs
from train.trainer import FeatureBank, TrainSettings, fit, predict_labels


def handful(shared_data, fake_corpora_factory):
    if shared_data.is_dir():
        utterances, _ = load_ravdess(shared_data / "ravdess")
        picked = [u for u in utterances if u.speaker in ("ravdess_01", "ravdess_02")]
    else:
        picked, _ = load_ravdess(fake_corpora_factory()["ravdess"])
    by_label = {}
    for u in picked:
        by_label.setdefault(u.label, []).append(u)
    return [u for items in by_label.values() for u in items[:4]]  # 4 per class, 16 clips


@pytest.mark.parametrize("modality", ["audio", "both"])
def test_model_overfits_a_handful_of_real_utterances(modality, shared_data, request, tmp_path):
    utterances = handful(shared_data, lambda: request.getfixturevalue("fake_corpora"))
    config = ModelConfig(use_text=modality == "both", dropout=0.0)
    samples = natural_pairs(utterances)  # the corpus's own (neutral) transcripts: audio must carry the class
    bank = FeatureBank(config, tmp_path)
    torch.manual_seed(0)
    model, info = fit(config, lambda epoch: samples, samples, bank,
                      TrainSettings(epochs=40, batch_size=16, learning_rate=2e-3, progress=False), log=lambda m: None)
    from ser_demo.audio import Normalizer

    predicted = predict_labels(model, samples, bank, Normalizer.from_dict(model.config.normalizer))
    accuracy = sum(p == s.label for p, s in zip(predicted, samples)) / len(samples)
    losses = [h["loss"] for h in info["history"]]
    assert accuracy == 1.0, f"train accuracy {accuracy:.2f} after 40 steps"
    assert losses[-1] < 0.2 * losses[0]
