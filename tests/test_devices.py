"""ser_demo.devices on a CPU-only machine: the device option parses and falls back, a model and a
batch move to other devices (meta: shapes without data) and back, DDP's backend choice, mixed
precision only where it is safe, and Whisper falling back to the CPU when CUDA does not load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ser_demo import devices
from ser_demo.inputs import collate
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.recognizer import BUNDLED_CHECKPOINT

TINY = dict(audio_kernel_sizes=(3, 5), text_kernel_sizes=(1, 2), n_filters=8, n_hidden=8)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)


@pytest.fixture
def two_gpus(monkeypatch):
    """PyTorch believes in two GPUs: only names are resolved, nothing runs on them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_device_names_parse_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    assert devices.parse_device(None) == "auto" and devices.parse_device("") == "auto"
    assert devices.parse_device(" CUDA ") == "cuda" and devices.parse_device("cuda:1") == "cuda:1"
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    assert devices.parse_device(None) == "cpu" and devices.parse_device("cuda") == "cuda"  # the flag wins
    for bad in ("gpu", "cuda:x", "cpu:0", "tpu"):
        with pytest.raises(ValueError, match="auto, cpu, cuda"):
            devices.parse_device(bad)
    monkeypatch.setenv(devices.DEVICE_ENV, "gpu")
    with pytest.raises(ValueError, match="SER_DEVICE"):
        devices.parse_device(None)


def test_without_a_gpu_everything_falls_back_to_the_cpu(no_gpu):
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device("cpu") == torch.device("cpu")
    for asked in ("cuda", "cuda:1"):
        with pytest.warns(UserWarning, match="no CUDA GPU"):
            assert devices.resolve_device(asked) == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto falls back silently: it is the normal case
        devices.resolve_device(None)
    with pytest.warns(UserWarning, match="no CUDA GPU"):
        assert devices.whisper_device("cuda") == "cpu"


def test_with_gpus_auto_and_torchrun_ranks_pick_their_own(two_gpus, monkeypatch):
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert devices.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.resolve_device("cuda") == torch.device("cuda", 1)
    with pytest.warns(UserWarning, match="no GPU of its own"):
        assert devices.resolve_device("cuda", local_rank=2) == torch.device("cpu")
    with pytest.raises(ValueError, match="2 CUDA device"):
        devices.resolve_device("cuda:2")


def test_the_train_command_line_checks_the_device(capsys, monkeypatch):
    from train.__main__ import main

    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--audio", "ravdess=/nowhere", "--out", "/tmp/x", "--device", "gpu"])
    assert info.value.code == 2 and "device must be one of auto, cpu, cuda" in capsys.readouterr().err
    import argparse

    from train.arguments import model_arguments, settings_of

    parser = argparse.ArgumentParser()
    model_arguments(parser)  # the options of fit and cv, as their command lines parse them
    args = parser.parse_args([])
    assert settings_of(args).device == "auto"
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    assert settings_of(args).device == "cpu"


def _batch(config: ModelConfig, rng: np.random.Generator) -> dict:
    mfccs = [rng.normal(size=(96, n)).astype(np.float32) for n in (40, 25, 0)]
    words = [rng.normal(size=(n, 50)).astype(np.float32) for n in (5, 0, 3)]
    return collate(config, mfccs, words)


def test_a_model_and_a_batch_round_trip_between_devices():
    config = ModelConfig(**TINY)
    torch.manual_seed(0)
    model = MSCNN_SPU_ATT(config).eval()
    batch = _batch(config, np.random.default_rng(0))
    with torch.no_grad():
        expected = model(**batch).logits

    # meta: every tensor moves, nothing in the forward pass or a training step is pinned to the CPU
    # (a tensor made on the CPU inside forward() would meet meta tensors and fail, as on a GPU)
    meta_batch = devices.to_device(batch, "meta")
    assert {v.device.type for v in meta_batch.values()} == {"meta"}
    assert {k: (v.shape, v.dtype) for k, v in meta_batch.items()} == {k: (v.shape, v.dtype) for k, v in batch.items()}
    meta_model = MSCNN_SPU_ATT(config).to("meta").train()
    assert {p.device.type for p in meta_model.parameters()} == {"meta"}
    with devices.autocast(torch.device("meta")):
        out = meta_model(**meta_batch)
    assert out.logits.device.type == "meta" and out.logits.shape == (3, 4)
    loss = F.cross_entropy(out.logits.float(), torch.tensor([0, 1, 2]).to("meta"))
    loss.backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in meta_model.parameters())

    # CPU -> CPU is the identity, and weights saved from any device load back to the same answers
    same = devices.to_device(batch, torch.device("cpu"))
    assert all(torch.equal(same[k], batch[k]) for k in batch)
    restored = MSCNN_SPU_ATT(config)
    restored.load_state_dict({k: v.to("cpu") for k, v in model.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(**same).logits, expected)


def test_recognizer_runs_on_the_device_it_was_given(monkeypatch, speech):
    from ser_demo.analysis import analyze
    from ser_demo.recognizer import EmotionRecognizer

    config = ModelConfig(**TINY, use_text=False)
    torch.manual_seed(0)
    model = MSCNN_SPU_ATT(config)
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    recognizer = EmotionRecognizer(model)
    assert recognizer.device == torch.device("cpu")
    inputs = recognizer.prepare(speech, None)
    assert {v.device.type for v in inputs.batch.values()} == {"cpu"}
    result = analyze(recognizer, speech, sample_rate=16000, modality="both")
    assert result.explanation.frame_relevance is not None
    monkeypatch.setenv(devices.DEVICE_ENV, "gpu")
    with pytest.raises(ValueError, match="SER_DEVICE"):
        EmotionRecognizer(model)


def test_ddp_backend_choice(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    assert devices.ddp_backend(every_rank_has_gpu=True) == "nccl"
    assert devices.ddp_backend(every_rank_has_gpu=False) == "gloo"
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    assert devices.ddp_backend(every_rank_has_gpu=True) == "gloo"
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    assert devices.init_distributed() == (0, 1, torch.device("cpu"), None)  # one process: no group


def test_mixed_precision_only_where_it_is_safe(monkeypatch):
    assert devices.mixed_precision_dtype("cpu") is None
    assert devices.mixed_precision_dtype("meta") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.mixed_precision_dtype(torch.device("cuda", 0)) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.mixed_precision_dtype("cuda") is None  # older cards: float32, not float16
    x = torch.ones(2, 3)
    with devices.autocast("cpu"):
        assert (x @ x.T).dtype == torch.float32


def test_whisper_falls_back_to_the_cpu_when_cuda_does_not_load(monkeypatch, speech):
    asr = pytest.importorskip("ser_demo.asr")
    pytest.importorskip("faster_whisper")
    try:
        asr.offline_default_model()
    except asr.TranscriptionUnavailable as err:
        pytest.skip(str(err))
    # CTranslate2 claims a GPU; loading or running on it fails here (no driver): the CPU takes over
    monkeypatch.setattr(devices, "whisper_device", lambda name=None: "cuda")
    with pytest.warns(UserWarning, match="cannot use the GPU"):
        transcriber = asr.FasterWhisperTranscriber(cpu_threads=1)
    assert transcriber.device == "cpu"
    assert "believe" in transcriber.transcribe(speech).text.lower()
    monkeypatch.undo()
    monkeypatch.setenv(devices.DEVICE_ENV, "cuda")  # no GPU at all: the CPU, and no failure
    with pytest.warns(UserWarning, match="no CUDA GPU"):
        assert asr.FasterWhisperTranscriber(cpu_threads=1).device == "cpu"


# --- on a real GPU (the lent device machines have one; CI has none, and skips these) ---------

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _bundled_inputs(config: ModelConfig, rng: np.random.Generator) -> dict:
    """Inputs of the bundled checkpoint's shape: Whisper states, GE2E, words; one clip without words."""
    states = [rng.normal(size=(config.n_encoder_features, n)).astype(np.float32) for n in (150, 90, 60, 120)]
    speakers = [rng.normal(size=config.n_speaker_features).astype(np.float32) * 0.06 for _ in states]
    words = [rng.normal(size=(n, config.n_word_features)).astype(np.float32) * 0.4 for n in (6, 11, 0, 3)]
    return collate(config, [None] * len(states), words, speakers, states)


@requires_cuda
def test_on_a_gpu_the_bundled_checkpoint_answers_as_on_the_cpu():
    """What the app does on a GPU machine: the same weights give the CPU's probabilities in float32
    (cuDNN may use TF32 for the convolutions: a few 1e-3 at most), and close ones under the
    bfloat16 autocast that training uses, with the same answer wherever bfloat16 cannot flip it."""
    model = MSCNN_SPU_ATT.from_pretrained(BUNDLED_CHECKPOINT)
    batch = _bundled_inputs(model.config, np.random.default_rng(0))
    with torch.no_grad():
        cpu = model(**batch).logits.softmax(-1)
        gpu_model = model.to("cuda")
        cuda_batch = devices.to_device(batch, torch.device("cuda"))
        gpu = gpu_model(**cuda_batch).logits.softmax(-1)
        with devices.autocast(torch.device("cuda")):
            mixed = gpu_model(**cuda_batch).logits.float().softmax(-1)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=5e-3, rtol=0)
    error = (mixed.cpu() - cpu).abs().max()
    assert error < 0.05
    # Where the CPU's top two are further apart than bfloat16 can move them, the answer is the same
    # (random inputs leave a model unsure: a fixed margin may hold for none of them).
    top2 = cpu.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * error
    assert clear.any() and torch.equal(mixed.cpu().argmax(-1)[clear], cpu.argmax(-1)[clear])


@requires_cuda
def test_on_a_gpu_training_steps_run_in_bfloat16_and_learn():
    """The trainer's step on a real GPU: parameters and gradients stay on it, the forward pass runs
    in bfloat16 where the card has it, the loss in float32, and 30 steps fit one batch."""
    config = MSCNN_SPU_ATT.from_pretrained(BUNDLED_CHECKPOINT).config
    torch.manual_seed(0)
    model = MSCNN_SPU_ATT(config).to("cuda").train()
    device = next(model.parameters()).device
    batch = devices.to_device(_bundled_inputs(config, np.random.default_rng(1)), device)
    labels = torch.tensor([0, 1, 2, 3], device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        with devices.autocast(device):
            logits = model(**batch).logits
        assert logits.dtype == (devices.mixed_precision_dtype(device) or torch.float32)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad.device == device for p in model.parameters() if p.grad is not None)
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
