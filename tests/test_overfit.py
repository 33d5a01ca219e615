"""Real training, no mocks: the model must learn to separate a handful of real utterances.

Uses RAVDESS from ../shared/data when present (two actors, every emotion), else the espeak-ng
corpus; either way the audio goes through the same features and loop as the trainer."""

from __future__ import annotations

import pytest
import torch

from conftest import shared_corpus
from ser_demo.model import ModelConfig
from train.audio_corpora import load_ravdess
from train.features import FeatureBank
from train.pairing import natural_pairs
from train.trainer import TrainSettings, fit, predict_labels


def handful(fake_corpora_factory):
    picked = []
    ravdess = shared_corpus("ravdess")
    if ravdess is not None:
        utterances, _ = load_ravdess(ravdess)
        picked = [u for u in utterances if u.speaker in ("ravdess_01", "ravdess_02")]
    by_label = {}
    for u in picked:
        by_label.setdefault(u.label, []).append(u)
    if len(by_label) < 4:  # no shared RAVDESS here (or not these actors): the espeak-ng corpus
        by_label = {}
        for u in load_ravdess(fake_corpora_factory()["ravdess"])[0]:
            by_label.setdefault(u.label, []).append(u)
    return [u for items in by_label.values() for u in items[:4]]  # 4 per class, 16 clips


@pytest.mark.parametrize("modality", ["audio", "both"])
def test_model_overfits_a_handful_of_real_utterances(modality, request, tmp_path):
    utterances = handful(lambda: request.getfixturevalue("fake_corpora"))
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
