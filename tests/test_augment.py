"""Waveform augmentation (train/augment.py): speed perturbation and noise as cached variants."""

from pathlib import Path

import numpy as np
import pytest

from ser_demo.audio import SAMPLE_RATE
from ser_demo.ingest import PEAK_TARGET, load_audio
from ser_demo.model import ModelConfig
from train.augment import Variant, add_noise, speed_perturb, variants_of
from train.features import FeatureBank, load_clip
from train.trainer import TrainSettings, fit

SPEECH = Path(__file__).parent / "fixtures" / "speech.wav"


@pytest.fixture(scope="module")
def speech():
    return load_audio(SPEECH, max_seconds=None, min_seconds=0.0, trim_silence=True)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_scales_duration_by_one_over_the_factor(speech, factor):
    faster = speed_perturb(speech, factor)
    assert faster.dtype == np.float32
    assert len(faster) / len(speech) == pytest.approx(1 / factor, rel=2e-3)
    # tempo and pitch move together: the spectral centroid shifts up when played faster
    import librosa

    centroid = lambda a: float(np.median(librosa.feature.spectral_centroid(y=a, sr=SAMPLE_RATE)))  # noqa: E731
    assert (centroid(faster) > centroid(speech)) == (factor > 1)
    assert speed_perturb(speech, 1.0) is speech


def test_noise_is_added_at_the_asked_snr_and_is_the_same_for_the_same_clip(speech):
    noisy = add_noise(speech, 20.0, seed=3)
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.2)
    assert np.array_equal(add_noise(speech, 20.0, seed=3), noisy)
    assert np.array_equal(add_noise(np.zeros(100, np.float32), 20.0, seed=3), np.zeros(100))  # silence stays silent
    variant = Variant(snr_db=20.0)
    a, b = variant.apply(speech, SPEECH), variant.apply(speech, SPEECH)
    assert np.array_equal(a, b) and np.max(np.abs(a)) == pytest.approx(PEAK_TARGET)  # peak as ingestion leaves it


def test_variants_of_a_recipe_and_their_names():
    assert variants_of() == []
    assert variants_of((0.9, 1.0, 1.1), 20) == [Variant(0.9), Variant(1.1), Variant(snr_db=20)]
    assert str(Variant(0.9)) == "speed 0.9" and str(Variant(snr_db=15)) == "noise 15 dB SNR" and str(Variant()) == "clean"


def test_feature_bank_caches_each_variant_apart_from_the_clean_clip(tmp_path):
    bank = FeatureBank(ModelConfig(use_text=False), tmp_path)
    clean = bank.mfcc(SPEECH)
    slow = bank.mfcc(SPEECH, Variant(0.9))
    fast = bank.mfcc(SPEECH, Variant(1.1))
    assert slow.shape[1] / clean.shape[1] == pytest.approx(1 / 0.9, rel=0.01)
    assert fast.shape[1] / clean.shape[1] == pytest.approx(1 / 1.1, rel=0.01)
    assert bank.cache.misses == 3
    again = FeatureBank(ModelConfig(use_text=False), tmp_path)  # a new process: read from disk
    assert np.array_equal(again.mfcc(SPEECH, Variant(0.9)), slow) and np.array_equal(again.mfcc(SPEECH), clean)
    assert again.cache.misses == 0 and again.cache.hits == 2
    assert np.array_equal(load_clip(SPEECH), load_audio(SPEECH, max_seconds=None, min_seconds=0.0, trim_silence=True))


def test_training_with_variants_reads_the_perturbed_features(tmp_path):
    from train.pairing import natural_pairs
    from train.records import Utterance

    config = ModelConfig(use_text=False, audio_kernel_sizes=(3,), n_filters=8, n_hidden=8)
    utterances = [Utterance(SPEECH, None, label, "s1", "fixture", f"u{i}") for i, label in enumerate(config.labels)]
    samples = natural_pairs(utterances)
    bank = FeatureBank(config, tmp_path)
    settings = TrainSettings(epochs=2, batch_size=4, progress=False, device="cpu", speed_factors=(0.9, 1.1),
                             augment_share=1.0)
    fit(config, lambda epoch: samples, [], bank, settings, log=lambda m: None)
    heard = {variant for kind, _, variant in bank._memo if kind == "mfcc"}
    assert heard >= {Variant(0.9), Variant(1.1)}
