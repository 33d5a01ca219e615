"""ser_demo.hidden_audio: the audio statistics of partly hidden recordings, computed locally, equal
the model's own audio branch run on the masked features (the slow path they replace)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ser_demo import deletion_curves as D
from ser_demo.explain import occlusion_relevance, occlusion_windows
from ser_demo.hidden_audio import audio_frames, hidden_audio_statistics, hidden_streams
from ser_demo.inputs import collate
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig


def model_and_batch(frontends=("mfcc", "whisper"), frames=151, **config):
    torch.manual_seed(3)
    config = ModelConfig(audio_frontends=frontends, n_word_features=50, **config)
    model = MSCNN_SPU_ATT(config).eval()
    rng = np.random.default_rng(3)
    batch = collate(config, [rng.normal(size=(96, frames)).astype(np.float32)],
                    [rng.normal(size=(5, 50)).astype(np.float32)], None,
                    [rng.normal(size=(384, frames // 2)).astype(np.float32)])
    return model, batch


def masks(n: int) -> np.ndarray:
    """Keep-masks over n windows: nothing hidden, everything, each single window (the first and
    the last touch the clip's edges), runs, and random halves."""
    rng = np.random.default_rng(0)
    rows = [np.ones(n, bool), np.zeros(n, bool), *~np.eye(n, dtype=bool), np.arange(n) < n // 2,
            np.arange(n) >= 2, *(rng.random((6, n)) < 0.5)]
    return np.stack(rows)


def slow_statistics(model, batch, windows, keep):
    """The reference: the masked features through the model's forward pass."""
    variants = D.frame_variants(batch, windows, keep, "mask")
    n = len(keep)
    with torch.no_grad():
        return model(**variants, words=batch["words"].expand(n, -1, -1),
                     word_lengths=batch["word_lengths"].expand(n)).audio_statistics


@pytest.mark.parametrize("frontends, config", [
    (("mfcc", "whisper"), {}),
    (("mfcc",), {"audio_kernel_sizes": (2, 3, 4, 9)}),  # even kernels put their extra step on the right
    (("whisper",), {"audio_pooling": "max"}),
    (("mfcc", "whisper"), {"utterance_norm": ("whisper",)}),  # per-clip normalisation: no locality, run in full
])
def test_hidden_statistics_equal_the_model_on_masked_features(frontends, config):
    model, batch = model_and_batch(frontends, **config)
    for window_seconds in (0.25, 0.01):  # 0.01: one-frame windows, the narrowest spans
        windows = occlusion_windows(audio_frames(batch), 0.01, window_seconds)
        keep = masks(len(windows))
        fast = hidden_audio_statistics(model, hidden_streams(batch, windows, keep))
        slow = slow_statistics(model, batch, windows, keep)
        assert fast.shape == slow.shape
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_window_curves_and_occlusion_equal_their_full_forward_versions():
    model, batch = model_and_batch(frames=301)
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)[0].numpy()
    target = int(probs.argmax())
    windows = occlusion_windows(audio_frames(batch), 0.01)
    drops = occlusion_relevance(model, batch, target, float(probs[target]), windows)
    for (a, b), drop in zip(windows, drops):  # occlusion: each window hidden by hand
        hidden = D.frame_variants(batch, windows, np.array([[(w != (a, b)) for w in windows]]), "mask")
        with torch.no_grad():
            p = model(**{**batch, **hidden}).logits.softmax(-1)[0, target].item()
        assert drop == pytest.approx(probs[target] - p, abs=1e-5)
    for sufficiency in (False, True):
        fast = D.window_deletion_curves(model, batch, target, windows, drops, sufficiency=sufficiency)
        slow = D.window_deletion_curves(model, batch, target, windows, drops, sufficiency=sufficiency, local=False)
        assert fast.steps.tolist() == slow.steps.tolist()
        for name in slow.deletion:
            np.testing.assert_allclose(fast.deletion[name], slow.deletion[name], atol=1e-5)
        for name in slow.kept:
            np.testing.assert_allclose(fast.kept[name], slow.kept[name], atol=1e-5)
        np.testing.assert_allclose(fast.without_all, slow.without_all, atol=1e-5)
