"""The x-vector speaker embedding, offline: a randomly initialised speechbrain Xvector saved in the
layout of the Hub's speechbrain/spkrec-xvect-voxceleb, loaded exactly as users load the real one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import run_in_threads

from ser_demo.audio import SAMPLE_RATE
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.recognizer import EmotionRecognizer
from ser_demo.speaker import DEFAULT_MODEL, SpeakerEmbedder
from ser_demo.text import WordVectors

# The Hub repo's hyperparams.yaml, down to pretrained_path still naming the Hub: a downloaded copy
# looks like this. Only out_n_neurons is smaller (7205 VoxCeleb speakers there): the speaker
# classifier is never used for embeddings and would only slow the test.
HYPERPARAMS = """\
# Model: xvector for speaker recognition (random weights, for tests)
n_mels: 24
pretrained_path: speechbrain/spkrec-xvect-voxceleb
out_n_neurons: 8

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: [512, 512, 512, 512, 1500]
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: 512

classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 512]
    activation: !name:torch.nn.LeakyReLU
    lin_blocks: 1
    lin_neurons: 512
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""
CHECKPOINTS = ("embedding_model.ckpt", "mean_var_norm_emb.ckpt", "classifier.ckpt", "label_encoder.txt")


def save_random_xvector(folder):
    """Write hyperparams.yaml and, with speechbrain's own save hooks, every file its pretrainer loads."""
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook

    folder.mkdir(parents=True)
    (folder / "hyperparams.yaml").write_text(HYPERPARAMS)
    torch.manual_seed(0)
    hparams = load_hyperpyyaml(HYPERPARAMS)
    hparams["mean_var_norm_emb"].train()(torch.randn(16, 1, 512), torch.ones(16))  # global stats
    hparams["label_encoder"].update_from_iterable([f"id{10001 + i}" for i in range(8)])
    pretrainer = hparams["pretrainer"]
    for name, obj in pretrainer.loadables.items():
        filename = str(pretrainer.paths[name]).rsplit("/", 1)[-1]
        get_default_hook(obj, DEFAULT_SAVE_HOOKS)(obj, folder / filename)
    assert sorted(p.name for p in folder.iterdir()) == sorted(CHECKPOINTS + ("hyperparams.yaml",))
    return folder


def vowel(f0: float, formants=(700, 1200, 2600), seconds=1.0) -> np.ndarray:
    """A vowel-like harmonic signal: harmonics of f0 weighted by formant resonances, with vibrato."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / SAMPLE_RATE
    signal = np.zeros_like(t)
    for h in range(1, int(4000 / f0)):
        gain = sum(1 / (1 + ((h * f0 - f) / 100) ** 2) for f in formants)
        signal += gain * np.sin(h * phase)
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


@pytest.fixture(scope="module")
def xvector_folder(tmp_path_factory):
    return save_random_xvector(tmp_path_factory.mktemp("spkrec") / "spkrec-xvect-voxceleb")


@pytest.fixture(scope="module")
def embedder(xvector_folder):
    return SpeakerEmbedder.from_pretrained(str(xvector_folder))


def test_random_xvector_embeds_speech(embedder, speech):
    clip = speech[:SAMPLE_RATE]  # 1 s of espeak-ng speech
    emb = embedder.embed(clip)
    assert embedder.dim == 512 and emb.shape == (512,) and emb.dtype == np.float32
    assert np.isfinite(emb).all() and np.abs(emb).max() > 0
    np.testing.assert_array_equal(embedder.embed(clip), emb)  # deterministic (eval mode)
    other = embedder.embed(vowel(220.0))
    assert np.isfinite(other).all() and not np.allclose(other, emb)


def test_loaded_once_per_source(embedder, xvector_folder, monkeypatch):
    assert SpeakerEmbedder.from_pretrained(str(xvector_folder)) is embedder
    monkeypatch.setenv("SER_SPEAKER_MODEL", str(xvector_folder))
    assert SpeakerEmbedder.from_pretrained() is embedder


def test_local_copy_links_into_savedir(embedder, xvector_folder, tmp_path):
    copy = shutil.copytree(xvector_folder, tmp_path / "copy")
    savedir = tmp_path / "cache"
    loaded = SpeakerEmbedder.from_pretrained(str(copy), savedir=str(savedir))
    assert loaded is not embedder and (savedir / "embedding_model.ckpt").exists()
    clip = vowel(150.0)
    np.testing.assert_allclose(loaded.embed(clip), embedder.embed(clip), rtol=1e-5, atol=1e-6)


def test_short_empty_and_concurrent_calls(embedder):
    for n in (0, 1, 100, 479):  # the TDNN alone needs 480 samples
        emb = embedder.embed(vowel(200.0)[:n])
        assert emb.shape == (512,) and np.isfinite(emb).all()
    with pytest.raises(ValueError, match="1-D"):
        embedder.embed(np.zeros((2, 1600), np.float32))
    clips = [vowel(f0) for f0 in (110.0, 180.0, 300.0)]
    expected = [embedder.embed(c) for c in clips]
    results = [None] * len(clips)

    def run(i):
        for _ in range(2):
            results[i] = embedder.embed(clips[i])

    run_in_threads(run, len(clips))
    # Concurrent calls share no state: each result is its clip's own. (Not bit-equal: with several
    # threads in flight the BLAS splits its sums differently, ~3e-8 apart; a shared-state bug
    # would give another clip's embedding, orders of magnitude further.)
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.abs(expected[0] - expected[2]).max() > 1e-3  # the clips' embeddings do differ


def test_missing_files_give_one_clear_error(xvector_folder, tmp_path):
    with pytest.raises(RuntimeError, match="^speaker embedding unavailable: no such folder"):
        SpeakerEmbedder.from_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="^speaker embedding unavailable: no hyperparams.yaml"):
        SpeakerEmbedder.from_pretrained(str(tmp_path / "empty"))
    broken = shutil.copytree(xvector_folder, tmp_path / "broken")
    (broken / "embedding_model.ckpt").unlink()
    with pytest.raises(RuntimeError, match="^speaker embedding unavailable: .*embedding_model.ckpt") as error:
        SpeakerEmbedder.from_pretrained(str(broken))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("source", [DEFAULT_MODEL, "ser-demo/no-such-xvector"])
def test_hub_id_offline_gives_one_clear_error(source, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE and its cache path at import: patch the constants too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(RuntimeError, match="^speaker embedding unavailable: ") as error:
        SpeakerEmbedder.from_pretrained(source, savedir=str(tmp_path / "savedir"))
    assert source in str(error.value) and "\n" not in str(error.value)


def test_recognizer_feeds_the_xvector_to_the_model(embedder, xvector_folder, speech):
    torch.manual_seed(0)
    config = ModelConfig(use_speaker=True, n_speaker_features=embedder.dim, speaker_model=str(xvector_folder))
    model = MSCNN_SPU_ATT(config)
    rng = np.random.default_rng(0)
    words = WordVectors(["hello", "there"], rng.standard_normal((2, 50)).astype(np.float32), source="tiny")
    recognizer = EmotionRecognizer(model, word_vectors=words, speaker_embedder=embedder)
    inputs = recognizer.prepare(speech, "hello there", "both")
    np.testing.assert_array_equal(inputs.batch["speaker"][0].numpy(), embedder.embed(speech))
    probs, _ = recognizer.forward(inputs)
    assert probs.shape == (4,) and np.isfinite(probs).all()
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    # Without an embedder the recognizer loads config.speaker_model itself - the cached one.
    assert EmotionRecognizer(model, word_vectors=words).speaker_embedder is embedder


# --- the offline default: Resemblyzer's pretrained GE2E voice encoder --------------------------

from pathlib import Path  # noqa: E402

from ser_demo.speaker import GE2E, GE2EVoiceEncoder, load_speaker_embedder  # noqa: E402

RAVDESS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ravdess"


def test_ge2e_loads_offline_from_the_wheel_without_importing_resemblyzer(monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SER_SPEAKER_MODEL", raising=False)
    embedder = load_speaker_embedder()  # the default of new checkpoints
    assert isinstance(embedder, GE2EVoiceEncoder) and embedder.source == GE2E and embedder.dim == 256
    assert ModelConfig().speaker_model == GE2E and ModelConfig().n_speaker_features == 256
    # In a fresh process: loading and embedding never import Resemblyzer (nor its webrtcvad).
    check = ("import sys, numpy as np; from ser_demo.speaker import load_speaker_embedder; "
             "load_speaker_embedder().embed(np.zeros(16000, np.float32) + 0.01); "
             "assert 'resemblyzer' not in sys.modules and 'webrtcvad' not in sys.modules")
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", check], cwd=root, timeout=120).returncode == 0


def test_ge2e_equals_resemblyzers_own_embed_utterance(speech, monkeypatch):
    """Same partials, same mel, same weights: our module reproduces Resemblyzer's embedding. Its
    package imports webrtcvad at the top; the reference call never uses it, so a stand-in will do."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "webrtcvad", types.ModuleType("webrtcvad"))
    from resemblyzer.audio import normalize_volume
    from resemblyzer.voice_encoder import VoiceEncoder

    reference = VoiceEncoder("cpu", verbose=False).embed_utterance(normalize_volume(speech, -30, increase_only=True))
    ours = load_speaker_embedder(GE2E).embed(speech)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.shared_data
def test_ge2e_puts_two_clips_of_one_speaker_closer_than_clips_of_two(monkeypatch):
    if not RAVDESS.is_dir():
        pytest.skip(f"{RAVDESS} not present")
    from ser_demo.ingest import load_audio

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = load_speaker_embedder(GE2E)
    clips = {actor: sorted((RAVDESS / f"Actor_{actor}").glob("03-01-01-*"))[:2] for actor in ("01", "02", "03")}
    emb = {a: [embedder.embed(load_audio(p, trim_silence=True)) for p in paths] for a, paths in clips.items()}
    for a in clips:
        same = float(emb[a][0] @ emb[a][1])
        for b in clips:
            if b != a:
                assert same > float(emb[a][0] @ emb[b][0]) + 0.1, (a, b)


def test_a_checkpoint_from_before_the_ge2e_default_still_means_the_x_vector(monkeypatch):
    """Configs saved when the x-vector was the only backend store speaker_model=None."""
    from ser_demo import speaker

    asked = []
    monkeypatch.delenv("SER_SPEAKER_MODEL", raising=False)
    monkeypatch.setattr(speaker.SpeakerEmbedder, "from_pretrained", classmethod(lambda cls, source: asked.append(source)))
    speaker.for_checkpoint(ModelConfig(speaker_model=None, n_speaker_features=512))
    assert asked == [speaker.XVECTOR]
    assert isinstance(speaker.for_checkpoint(ModelConfig()), GE2EVoiceEncoder)
