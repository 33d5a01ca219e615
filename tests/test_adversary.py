"""Speaker-adversarial training (train/adversary.py): the reversed gradient, its ramp, and a run
that trains with it resuming exactly."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ser_demo.model import ModelConfig
from train.adversary import GradientReversal, SpeakerAdversary, reversal_scale
from train.audio_corpora import load_ravdess
from train.datasets import load_goemotions
from train.features import FeatureBank
from train.pairing import LabelMatchedPairing, ModalityDropout
from train.trainer import TrainSettings, fit

TINY = dict(audio_kernel_sizes=(3, 5), text_kernel_sizes=(1, 2), n_filters=16, n_hidden=16)


def test_the_gradient_comes_back_reversed_and_scaled():
    x = torch.randn(3, 4, requires_grad=True)
    y = GradientReversal.apply(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, -0.25 * torch.arange(4.0).expand(3, 4))


def test_the_reversed_weight_ramps_from_zero_to_the_weight():
    scales = [reversal_scale(0.5, p / 10) for p in range(11)]
    assert scales[0] == 0.0 and all(a < b for a, b in zip(scales, scales[1:]))
    assert scales[-1] == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1)) and scales[-1] > 0.499


def test_the_audio_branch_is_pushed_away_from_what_tells_speakers_apart():
    """The adversary learns the speaker as a classifier would; what reaches the SPU vectors is that
    gradient reversed. Clips without audio, and voices it was not built with, are left out."""
    torch.manual_seed(0)
    adversary = SpeakerAdversary(2 * 3 * 4, ["b", "a", "c"], n_hidden=8)
    stats = torch.randn(5, 2, 3, 4, requires_grad=True)
    speakers, heard = ["a", "b", "c", "zz", "a"], [True, True, True, True, False]
    adversary.loss(stats, speakers, heard, scale=1.0).backward()
    reversed_grad, adversary_grad = stats.grad.clone(), adversary.net[0].weight.grad.clone()

    stats.grad, adversary.net[0].weight.grad = None, None
    plain = F.cross_entropy(adversary.net(stats[:3].flatten(1)), torch.tensor([0, 1, 2]))  # a, b, c only
    plain.backward()
    torch.testing.assert_close(reversed_grad, -stats.grad)
    torch.testing.assert_close(adversary_grad, adversary.net[0].weight.grad)
    assert reversed_grad[3:].abs().sum() == 0  # an unknown voice and a clip whose audio was dropped
    assert adversary.loss(stats, ["zz"] * 5, [True] * 5, 1.0).item() == 0.0
    with pytest.raises(ValueError, match="two training speakers"):
        SpeakerAdversary(8, ["a", "a"])


def test_a_run_with_the_adversary_resumes_where_an_uninterrupted_one_ends(fake_corpora, tmp_path):
    """The adversary's weights and Adam moments are in the saved state; the adversary changes
    training (the same run without it ends elsewhere) and leaves the checkpoint's shape alone."""
    utterances, _ = load_ravdess(fake_corpora["ravdess"])
    texts, _ = load_goemotions(fake_corpora["goemotions"] / "train.tsv")
    assert len({u.speaker for u in utterances}) >= 2
    bank = FeatureBank(ModelConfig(**TINY), tmp_path / "cache")
    pairs = LabelMatchedPairing(utterances, texts, seed=0, dropout=ModalityDropout(0.2, 0.2))
    settings = TrainSettings(epochs=3, progress=False, speaker_adversary=1.0)
    straight, straight_info = fit(ModelConfig(**TINY), pairs.epoch, [], bank, settings, log=lambda m: None)

    class Stopped(Exception):
        pass

    def stop_in_the_third_epoch(line):  # its record is logged before its state is saved
        if line.startswith('{"epoch": 2,'):
            raise Stopped

    with pytest.raises(Stopped):  # stopped, not run with fewer epochs: the ramp spans all three
        fit(ModelConfig(**TINY), pairs.epoch, [], bank, settings, tmp_path / "run", stop_in_the_third_epoch)
    logs = []
    resumed, resumed_info = fit(ModelConfig(**TINY), pairs.epoch, [], bank, settings, tmp_path / "run", logs.append)
    assert any("resumed" in line for line in logs) and not any("no speaker adversary" in line for line in logs)
    assert [h["loss"] for h in resumed_info["history"]] == [h["loss"] for h in straight_info["history"]]
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name

    assert all(h["speaker_loss"] > 0 for h in straight_info["history"])  # logged apart from the emotion loss
    without, without_info = fit(ModelConfig(**TINY), pairs.epoch, [], bank, replace(settings, speaker_adversary=0.0),
                                log=lambda m: None)
    assert not any("speaker_loss" in h for h in without_info["history"])
    assert straight.state_dict().keys() == without.state_dict().keys()
    assert not torch.equal(straight.state_dict()["audio_cnn.convs.0.weight"], without.state_dict()["audio_cnn.convs.0.weight"])
    with pytest.raises(ValueError, match="reads audio"):  # no SPU vectors to read
        fit(ModelConfig(**TINY, use_audio=False), pairs.epoch, [], bank, settings, log=lambda m: None)
