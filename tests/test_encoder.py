"""Whisper's encoder as a front-end: frames covering the clip, one pass shared with ASR, a
checkpoint that refuses another encoder's features; and the model's explanations over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ser_demo.asr import load_transcriber
from ser_demo.encoder import EncoderMismatchError, WhisperEncoder, num_states
from ser_demo.explain import audio_frames, gradient_x_input, occlusion_relevance
from ser_demo.ingest import load_audio
from ser_demo.inputs import collate
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.recognizer import EmotionRecognizer
from ser_demo.whisper_layers import WhisperEncoderPort, read_ctranslate2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = dict(audio_kernel_sizes=(3,), encoder_kernel_sizes=(1, 3), text_kernel_sizes=(1, 2), n_filters=8, n_hidden=8)


@pytest.fixture(scope="module")
def transcriber():
    return load_transcriber()  # the offline tiny.en, as the app runs it


@pytest.fixture(scope="module")
def clip():
    return load_audio(EXAMPLES / "happy.wav", trim_silence=True)


def test_states_cover_the_clip_at_50_per_second(transcriber, clip):
    encoded = WhisperEncoder.from_transcriber(transcriber).encode(clip)
    assert encoded.states.shape == (384, num_states(len(clip)))
    assert encoded.states.shape[1] == int(np.ceil(len(clip) // 160 / 2))  # 20 ms per state
    assert np.isfinite(encoded.states).all() and encoded.states.std() > 0.1


def test_states_of_a_longer_recording_span_every_30_s_window(transcriber, clip):
    long = np.concatenate([clip] * 12)  # > 30 s: two encoder windows
    assert len(long) > 30 * 16000
    states = WhisperEncoder.from_transcriber(transcriber).encode(long).states
    assert states.shape == (384, num_states(len(long)))


class CountingEncodes:
    """Wraps the WhisperModel's parent encode to count real encoder passes."""

    def __init__(self, model, monkeypatch):
        self.calls = 0
        parent = type(model).__mro__[1]
        original = parent.encode

        def counting(inner_self, features):
            self.calls += 1
            return original(inner_self, features)

        monkeypatch.setattr(parent, "encode", counting)


def test_one_encoder_pass_feeds_the_model_and_whisper(transcriber, clip, monkeypatch):
    reference = transcriber.transcribe(clip)
    config = ModelConfig(**TINY, audio_frontends=("mfcc", "whisper"))
    recognizer = EmotionRecognizer(MSCNN_SPU_ATT(config), transcriber=transcriber)
    counter = CountingEncodes(transcriber.model, monkeypatch)
    prediction = recognizer.predict(EXAMPLES / "happy.wav")
    assert counter.calls == 1  # the recognizer's pass; Whisper decoded from it
    assert prediction.transcript == reference.text
    assert prediction.encoder_states.shape == (384, num_states(int(prediction.mfcc.shape[1] - 1) * 160))
    assert prediction.audio_statistics.shape[0] == 3  # MFCC kernel 3, encoder kernels 1 and 3
    assert "encoder" in prediction.timings


def test_a_checkpoint_refuses_another_encoders_features(transcriber, tmp_path):
    encoder = WhisperEncoder.from_transcriber(transcriber)
    spec = dict(encoder.spec())
    encoder.check(spec)  # its own features are fine
    config = ModelConfig(**TINY, audio_frontends=("whisper",), encoder={**spec, "compute_type": "float32"})
    with pytest.raises(EncoderMismatchError, match="compute_type"):
        encoder.check(config.encoder)
    MSCNN_SPU_ATT(config).save_pretrained(tmp_path)
    model = MSCNN_SPU_ATT.from_pretrained(tmp_path)
    with pytest.raises(EncoderMismatchError, match="compute"):
        EmotionRecognizer(model, transcriber=transcriber, encoder=encoder)
    other = {**spec, "weights_sha256": "0" * 16}
    with pytest.raises(EncoderMismatchError, match="weights_sha256"):
        encoder.check(other)


def test_clip_context_reads_only_the_clip_and_leaves_whisper_its_own_pass(transcriber, clip, monkeypatch):
    """Context "clip": states for the same frames, close to the window pass's (same encoder, no
    padding to attend to), and no output handed to the decoder, which needs a padded window."""
    window = WhisperEncoder.from_transcriber(transcriber).encode(clip)
    encoder = WhisperEncoder.from_transcriber(transcriber, context="clip")
    encoded = encoder.encode(clip)
    assert encoded.states.shape == window.states.shape == (384, num_states(len(clip)))
    assert encoded.output is None and not encoder.shares_with_decoder
    a, b = encoded.states, window.states
    cosine = (a * b).sum(0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)
    assert 0.8 < cosine.mean() < 0.999  # related, not the same features
    odd = clip[: 160 * 301]  # an odd number of log-mel frames still gives one state per 2
    assert encoder.encode(odd).states.shape == (384, num_states(len(odd)))
    assert encoder.encode(np.concatenate([clip] * 12)).states.shape[1] == num_states(12 * len(clip))

    reference = transcriber.transcribe(clip)
    config = ModelConfig(**TINY, audio_frontends=("whisper",), encoder_context="clip", encoder=encoder.spec())
    recognizer = EmotionRecognizer(MSCNN_SPU_ATT(config), transcriber=transcriber)
    assert recognizer.encoder.context == "clip" and recognizer.encoder.whisper is transcriber.model
    counter = CountingEncodes(transcriber.model, monkeypatch)
    prediction = recognizer.predict(EXAMPLES / "happy.wav")
    assert counter.calls == 2  # the model's clip pass, and Whisper's own window
    assert prediction.transcript == reference.text


def test_a_checkpoint_refuses_the_other_context(transcriber):
    window, clip_only = WhisperEncoder.from_transcriber(transcriber), WhisperEncoder.from_transcriber(transcriber, context="clip")
    assert "context" not in window.spec()  # as in checkpoints made before the choice existed
    assert clip_only.spec()["context"] == "clip"
    with pytest.raises(EncoderMismatchError, match="context"):
        window.check(clip_only.spec())
    with pytest.raises(EncoderMismatchError, match="context"):
        clip_only.check(window.spec())
    with pytest.raises(ValueError, match="context"):
        WhisperEncoder.from_transcriber(transcriber, context="padded")
    with pytest.raises(ValueError, match="encoder_context"):
        ModelConfig(encoder_context="padded")
    with pytest.raises(ValueError, match="contradicts"):
        ModelConfig(encoder_context="clip", encoder=window.spec())


def test_the_pytorch_port_is_ctranslate2s_encoder(transcriber, clip):
    """whisper_layers rebuilds the encoder from the same model.bin: its output is CTranslate2's
    (float32: the same numbers; the app's int8: within quantisation), block by block below it."""
    port = WhisperEncoderPort.load(transcriber.model_name)
    variables = read_ctranslate2(Path(transcriber.model_name) / "model.bin")
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3) and port.n_layers == 4 and port.width == 384
    mel = transcriber.model.feature_extractor(clip)[:, :-1]
    mel = mel[:, : 2 * (mel.shape[1] // 2)]

    def cosine(a, b):
        return ((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min()

    ours = port.states(mel)
    for compute_type, floor in (("float32", 0.9999), ("int8", 0.97)):
        ct2 = load_transcriber("faster-whisper", transcriber.model_name, compute_type=compute_type, cpu_threads=1)
        theirs = np.array(ct2.model.encode(mel))[0]
        assert theirs.shape == ours.shape and cosine(ours, theirs) > floor
    blocks = [port.states(mel, layer) for layer in range(1, 5)]
    assert all(b.shape == ours.shape for b in blocks)
    assert cosine(blocks[3], ours) < 0.99 < cosine(port.ln_post(torch.from_numpy(blocks[3])).numpy(), ours)
    for bad in (0, 5, True, 2.0):
        with pytest.raises(ValueError, match="blocks 1..4"):
            port.states(mel, bad)
    quantised = {**variables, "encoder/layer_0/ffn/linear_0/weight": variables["encoder/layer_0/ffn/linear_0/weight"].astype(np.int8)}
    with pytest.raises(ValueError, match="quantised"):
        WhisperEncoderPort(quantised)


def test_an_inner_layer_is_the_models_own_pass_and_a_checkpoint_records_it(transcriber, clip, monkeypatch):
    """encoder_layer=2: states of block 2 over the clip's frames, from the port (CTranslate2 encodes
    only Whisper's own window), recorded in the spec, and any other layer refused."""
    output, inner = WhisperEncoder.from_transcriber(transcriber, "clip"), WhisperEncoder.from_transcriber(transcriber, "clip", layer=2)
    assert "layer" not in output.spec() and inner.spec()["layer"] == 2 and inner.spec()["compute_type"] == "float32"
    encoded = inner.encode(clip)
    assert encoded.states.shape == (384, num_states(len(clip))) and encoded.output is None and not inner.shares_with_decoder
    assert not np.allclose(encoded.states, output.encode(clip).states, atol=0.1)
    layers = output.every_layer(clip)  # what `train layer-probes` reads: convolutions, blocks 1-4, output
    assert len(layers) == 6 and all(layer.shape == encoded.states.shape for layer in layers)
    np.testing.assert_allclose(layers[2], encoded.states, atol=1e-4)
    window = WhisperEncoder.from_transcriber(transcriber, "window", layer=2)
    assert not window.shares_with_decoder and window.encode(clip).states.shape == encoded.states.shape
    for mine, theirs in ((inner, output), (output, inner), (inner, WhisperEncoder.from_transcriber(transcriber, "clip", layer=3))):
        with pytest.raises(EncoderMismatchError, match="layer"):
            mine.check(theirs.spec())
    with pytest.raises(ValueError, match="contradicts"):
        ModelConfig(encoder_context="clip", encoder_layer=3, encoder=inner.spec())
    with pytest.raises(ValueError, match="block number"):
        ModelConfig(encoder_layer=0)

    reference = transcriber.transcribe(clip)
    config = ModelConfig(**TINY, audio_frontends=("whisper",), encoder_context="clip", encoder_layer=2, encoder=inner.spec())
    recognizer = EmotionRecognizer(MSCNN_SPU_ATT(config), transcriber=transcriber)
    assert recognizer.encoder.layer == 2 and recognizer.encoder.whisper is transcriber.model
    counter = CountingEncodes(transcriber.model, monkeypatch)
    prediction = recognizer.predict(EXAMPLES / "happy.wav")
    assert counter.calls == 1  # Whisper's window; the model's block 2 came from the port
    assert prediction.transcript == reference.text
    np.testing.assert_allclose(prediction.encoder_states, encoded.states, atol=1e-4)


def both_front_ends_batch(seed=0):
    torch.manual_seed(seed)
    model = MSCNN_SPU_ATT(ModelConfig(**TINY, audio_frontends=("mfcc", "whisper"), use_text=False)).eval()
    rng = np.random.default_rng(seed)
    batch = collate(model.config, [rng.normal(size=(96, 41)).astype(np.float32)], [None], None,
                    [rng.normal(size=(384, 21)).astype(np.float32)])
    return model, batch


def test_occlusion_covers_every_front_end_over_the_same_seconds():
    """Occluding a window zeroes it in the MFCCs and in the encoder states: occluding everything
    equals the prediction for all-zero inputs in both front-ends."""
    model, batch = both_front_ends_batch()
    assert audio_frames(batch) == 42  # 21 states x 2 frames (the MFCCs have 41)
    with torch.no_grad():
        p = model(**batch).logits.softmax(-1)[0]
        zeros = {**batch, "mfcc": torch.zeros_like(batch["mfcc"]), "encoder_states": torch.zeros_like(batch["encoder_states"])}
        p_zero = model(**zeros).logits.softmax(-1)[0]
    target = int(p.argmax())
    drop = occlusion_relevance(model, batch, target, float(p[target]), [(0, 42)])
    assert drop[0] == pytest.approx(float(p[target] - p_zero[target]), abs=1e-6)


def test_gradient_x_input_spans_both_front_ends():
    model, batch = both_front_ends_batch()
    relevance = gradient_x_input(model, batch, target=0)
    assert relevance.shape == (42,) and np.isfinite(relevance).all()
    # the last frame is covered by an encoder state only (MFCCs end one frame earlier)
    assert relevance[41] != 0
