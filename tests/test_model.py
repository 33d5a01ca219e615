"""The network: masking, the SPU, attention, every Table 2 switch, and checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ser_demo.model import (
    MSCNN_SPU_ATT,
    CheckpointMismatchError,
    ModelConfig,
    lengths_to_mask,
    statistical_pooling,
)

SMALL = dict(audio_kernel_sizes=(2, 3, 5), encoder_kernel_sizes=(1, 3), text_kernel_sizes=(1, 2, 3), n_filters=16, n_hidden=8)


def make_model(seed=0, **switches) -> MSCNN_SPU_ATT:
    torch.manual_seed(seed)
    return MSCNN_SPU_ATT(ModelConfig(**{**SMALL, **switches})).eval()


def make_inputs(lengths=(40, 25, 7), word_lengths=(6, 3, 1), dims=(96, 50), seed=0, speaker=False):
    """A batch with every input a model may read: MFCCs, encoder states (half the frames),
    words, and a speaker embedding when asked."""
    g = torch.Generator().manual_seed(seed)
    encoder_lengths = [(n + 1) // 2 for n in lengths]
    batch = {
        "mfcc": torch.randn(len(lengths), dims[0], max(lengths), generator=g),
        "audio_lengths": torch.tensor(lengths),
        "encoder_states": torch.randn(len(lengths), 384, max(encoder_lengths), generator=g),
        "encoder_lengths": torch.tensor(encoder_lengths),
        "words": torch.randn(len(word_lengths), max(word_lengths), dims[1], generator=g),
        "word_lengths": torch.tensor(word_lengths),
    }
    if speaker:
        batch["speaker"] = torch.randn(len(lengths), 256, generator=g)
    return batch


def single(batch, i):
    """Utterance i alone, cropped to its own lengths (what a batch of one looks like)."""
    a, e, w = (int(batch[k][i]) for k in ("audio_lengths", "encoder_lengths", "word_lengths"))
    return {
        "mfcc": batch["mfcc"][i : i + 1, :, :a],
        "audio_lengths": batch["audio_lengths"][i : i + 1],
        "encoder_states": batch["encoder_states"][i : i + 1, :, :e],
        "encoder_lengths": batch["encoder_lengths"][i : i + 1],
        "words": batch["words"][i : i + 1, :w],
        "word_lengths": batch["word_lengths"][i : i + 1],
    }


@pytest.mark.parametrize("frontends", [("mfcc",), ("mfcc", "whisper")])
@pytest.mark.parametrize("pad_value", [0.0, 1e3])
def test_padding_never_changes_the_prediction(pad_value, frontends):
    """Audio and text padding (whatever its content) leave every utterance's probabilities unchanged."""
    model = make_model(audio_frontends=frontends)
    batch = make_inputs()
    for name, lengths in (("mfcc", "audio_lengths"), ("encoder_states", "encoder_lengths"), ("words", "word_lengths")):
        frames = name != "words"
        mask = lengths_to_mask(batch[lengths], batch[name].shape[-1 if frames else 1])
        mask = mask[:, None, :] if frames else mask[:, :, None]
        batch[name] = torch.where(mask, batch[name], torch.full_like(batch[name], pad_value))
    with torch.no_grad():
        together = model(**batch).logits.softmax(-1)
        for i in range(3):
            alone = model(**single(batch, i)).logits.softmax(-1)[0]
            torch.testing.assert_close(together[i], alone, atol=1e-5, rtol=0)


def test_per_clip_normalisation_ignores_a_clips_level_and_scale_and_its_padding():
    """utterance_norm: a front-end's frames are standardised per clip, so a clip's offset and gain
    per feature (a microphone, a voice's average timbre) leave the answer unchanged; the
    other front-end still sees them; padding still changes nothing."""
    model = make_model(audio_frontends=("mfcc", "whisper"), utterance_norm=("mfcc",))
    batch = make_inputs()
    shifted = dict(batch, mfcc=batch["mfcc"] * torch.linspace(0.5, 3, 96)[None, :, None] + 7.0)
    moved = dict(batch, encoder_states=batch["encoder_states"] + 1.0)
    with torch.no_grad():
        reference = model(**batch).logits
        torch.testing.assert_close(model(**shifted).logits, reference, atol=1e-4, rtol=0)
        assert not torch.allclose(model(**moved).logits, reference, atol=1e-3)
        for i in range(3):
            torch.testing.assert_close(model(**single(batch, i)).logits[0], reference[i], atol=1e-5, rtol=0)


def test_attention_weights_are_a_distribution_over_real_tokens():
    model = make_model()
    batch = make_inputs(word_lengths=(6, 3, 0))
    with torch.no_grad():
        weights = model(**batch).attention  # (B, 3 statistics, Tw)
    assert weights.shape == (3, 3, 6)
    assert (weights >= 0).all()
    mask = lengths_to_mask(batch["word_lengths"], 6)
    torch.testing.assert_close(weights.sum(-1)[:2], torch.ones(2, 3))
    assert (weights[~mask[:, None, :].expand_as(weights)] == 0).all()
    assert (weights[2] == 0).all()  # no transcript: no weight anywhere, no NaN


def test_spu_matches_numpy_on_masked_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 11)).astype(np.float32)
    lengths = np.array([11, 4, 1])
    pooled = statistical_pooling(torch.from_numpy(x), lengths_to_mask(torch.from_numpy(lengths), 11)).numpy()
    for b, n in enumerate(lengths):
        real = x[b, :, :n]
        np.testing.assert_allclose(pooled[b, 0], real.max(-1), rtol=1e-6)
        np.testing.assert_allclose(pooled[b, 1], real.mean(-1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooled[b, 2], real.std(-1), rtol=1e-4, atol=1e-4)


def test_spu_of_an_empty_sequence_is_zero():
    pooled = statistical_pooling(torch.randn(2, 4, 5), lengths_to_mask(torch.tensor([0, 5]), 5))
    assert torch.isfinite(pooled).all() and (pooled[0] == 0).all()


# Each switch of the paper's Table 2, the single-modality models, and how it changes the width
# of the fused vector: F filters x K kernel sizes per pooled statistic.
F, KA, KE, KT, D = 16, 3, 2, 3, 50
FULL = 3 * F * KA + 3 * F * KT + 2 * D + 3 * F * KT
SWITCHES = {
    "full": ({}, FULL),
    "with speaker embedding": ({"use_speaker": True}, FULL + 256),
    "Whisper encoder front-end": ({"audio_frontends": ("whisper",)}, FULL - 3 * F * KA + 3 * F * KE),
    "MFCC + Whisper front-ends": ({"audio_frontends": ("mfcc", "whisper")}, FULL + 3 * F * KE),
    "w/o text SPU (max only)": ({"text_pooling": "max"}, FULL - 2 * F * KT),
    "w/o SWEM": ({"use_swem": False}, FULL - 2 * D),
    "w/o audio SPU (max only)": ({"audio_pooling": "max"}, FULL - 2 * F * KA - 2 * F * KT),
    "w/o attention": ({"use_attention": False}, FULL - 3 * F * KT),
    "audio only": ({"use_text": False}, 3 * F * KA),
    "text only": ({"use_audio": False}, 3 * F * KT + 2 * D),
}


@pytest.mark.parametrize("name", SWITCHES)
def test_every_switch_builds_runs_and_trains_every_parameter(name):
    switches, width = SWITCHES[name]
    model = make_model(**switches).train()
    assert model.n_fused_features == width
    out = model(**make_inputs(speaker=switches.get("use_speaker", False)))
    assert out.logits.shape == (3, 4)
    assert (out.attention is not None) == model.config.attends
    out.logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"


def test_each_front_end_adds_its_statistics_and_attention_sees_all_of_them():
    """SPU rows stack front-end after front-end; the context vectors are F x (KA + KE) wide."""
    model = make_model(audio_frontends=("mfcc", "whisper"))
    assert model.config.audio_kernels == (("mfcc", 2), ("mfcc", 3), ("mfcc", 5), ("whisper", 1), ("whisper", 3))
    assert model.attention.project[0].in_features == F * (KA + KE)
    batch = make_inputs()
    with torch.no_grad():
        out = model(**batch)
        alone = make_model(audio_frontends=("whisper",))
        alone.encoder_cnn.load_state_dict(model.encoder_cnn.state_dict())
        whisper_rows = alone(**batch).audio_statistics
    assert out.audio_statistics.shape == (3, KA + KE, 3, F)
    torch.testing.assert_close(out.audio_statistics[:, KA:], whisper_rows)


def test_swem_skips_unknown_words():
    """Unknown words are zero vectors; SWEM pools the known words only, so adding unknown words
    changes neither SWEM-max nor SWEM-avg (the CNN still sees them as zeros)."""
    model = make_model(use_audio=False)
    words = torch.randn(1, 3, D)
    with_unknown = torch.cat([words, torch.zeros(1, 2, D)], dim=1)
    captured = []
    hook = model.classifier.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0]))
    with torch.no_grad():
        model(words=words, word_lengths=torch.tensor([3]))
        model(words=with_unknown, word_lengths=torch.tensor([5]))
    hook.remove()
    swem = slice(-2 * D, None)  # SWEM-max and SWEM-avg close the fused vector of a text-only model
    torch.testing.assert_close(captured[0][:, swem], captured[1][:, swem])
    assert (captured[0][:, swem][:, :D] < 0).any()  # the max of three random vectors, not lifted to 0


def test_invalid_switches_are_refused():
    with pytest.raises(ValueError, match="audio, text or both"):
        ModelConfig(use_audio=False, use_text=False)
    with pytest.raises(ValueError, match="audio_pooling"):
        ModelConfig(audio_pooling="mean")
    with pytest.raises(ValueError, match="audio_frontends"):
        ModelConfig(audio_frontends=("wav2vec",))
    with pytest.raises(ValueError, match="utterance_norm"):
        ModelConfig(utterance_norm=("whisper",))  # the paper's model reads MFCCs only


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    model = make_model(normalizer={"mean": [0.5] * 96, "std": [2.0] * 96})
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors"}
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = MSCNN_SPU_ATT.from_pretrained(tmp_path)
    assert loaded.config == model.config
    batch = make_inputs()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_a_config_that_does_not_match_the_weights_is_named(tmp_path):
    make_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_filters"], config["use_swem"] = 32, False
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError) as err:
        MSCNN_SPU_ATT.from_pretrained(tmp_path)
    assert "audio_cnn.convs.0.weight" in str(err.value) and "config gives (32, 96, 2)" in str(err.value)


def test_loads_from_the_hub_cache_offline(tmp_path, monkeypatch):
    """A repo id resolves from the Hub cache with HF_HUB_OFFLINE=1 (what a Space or laptop has)."""
    model = make_model()
    snapshot = tmp_path / "models--someone--mscnn-spu-att" / "snapshots" / ("a" * 40)
    model.save_pretrained(snapshot)
    (tmp_path / "models--someone--mscnn-spu-att" / "refs").mkdir()
    (tmp_path / "models--someone--mscnn-spu-att" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = MSCNN_SPU_ATT.from_pretrained("someone/mscnn-spu-att", cache_dir=tmp_path)
    batch = make_inputs()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_config_survives_json(tmp_path):
    config = ModelConfig(**SMALL, use_swem=False, labels=("a", "b"))
    assert replace(config) == ModelConfig(**json.loads(json.dumps(config.to_dict())))
