"""Audio features of the paper (section 4.2): 32 MFCC + delta + delta-delta per 10 ms frame.

Constants and pure functions only, in the spirit of whisper/audio.py. Waveforms arrive here
already as float32 mono 16 kHz (see `ingest.py`, which brings any recording to that form).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16000  # every waveform inside ser_demo is float32 mono at this rate


@dataclass(frozen=True)
class FeatureParams:
    """Everything that defines the MFCC matrix; stored in every checkpoint's config."""

    sample_rate: int = SAMPLE_RATE
    n_mfcc: int = 32  # 4.2: "32-dimensional MFCC"
    win_length: int = 400  # 25 ms Hamming window at 16 kHz
    hop_length: int = 160  # 10 ms hop
    n_fft: int = 512  # next power of two above the window
    n_mels: int = 64  # the paper does not say; 64 bands are well filled at n_fft=512
    window: str = "hamming"
    delta_width: int = 9  # librosa's default regression window for deltas

    @property
    def n_features(self) -> int:
        return 3 * self.n_mfcc  # MFCC + delta + delta-delta = 96

    def to_dict(self) -> dict:
        return asdict(self)


def num_frames(num_samples: int, params: FeatureParams = FeatureParams()) -> int:
    """Frames of a centred STFT: one per hop, plus the frame centred on sample 0."""
    return 1 + num_samples // params.hop_length


def mfcc_features(audio: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Return the (3 * n_mfcc, frames) matrix [MFCC; delta; delta-delta] of a 16 kHz waveform."""
    import librosa  # imported here so that importing ser_demo stays fast

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected a mono waveform, got shape {audio.shape}")
    if audio.size == 0:
        return np.zeros((params.n_features, 0), dtype=np.float32)
    mfcc = librosa.feature.mfcc(
        y=audio,
        sr=params.sample_rate,
        n_mfcc=params.n_mfcc,
        n_fft=params.n_fft,
        win_length=params.win_length,
        hop_length=params.hop_length,
        window=params.window,
        n_mels=params.n_mels,
        center=True,
    )
    # mode="nearest" keeps deltas defined for clips shorter than the regression window.
    delta = librosa.feature.delta(mfcc, width=params.delta_width, order=1, mode="nearest")
    delta2 = librosa.feature.delta(mfcc, width=params.delta_width, order=2, mode="nearest")
    return np.concatenate([mfcc, delta, delta2], axis=0).astype(np.float32)


@dataclass
class Normalizer:
    """Per-dimension mean and std of the training set's frames, stored with the checkpoint."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls, n_features: int) -> "Normalizer":
        return cls(np.zeros(n_features, np.float32), np.ones(n_features, np.float32))

    @classmethod
    def from_config(cls, config) -> "Normalizer":
        """The statistics a checkpoint's config stores, or the identity where it has none."""
        return cls.from_dict(config.normalizer) if config.normalizer else cls.identity(config.n_audio_features)

    @classmethod
    def encoder_from_config(cls, config) -> "Normalizer":
        """The Whisper encoder states' statistics a config stores, or the identity."""
        if config.encoder_normalizer:
            return cls.from_dict(config.encoder_normalizer)
        return cls.identity(config.n_encoder_features)

    @classmethod
    def fit(cls, matrices: list[np.ndarray], min_std: float = 1e-5) -> "Normalizer":
        """Pool every frame of every (dims, frames) matrix; a floor keeps std away from zero."""
        if not matrices:
            raise ValueError("no training audio to fit the feature normalisation on")
        dims = matrices[0].shape[0]
        count, total, total_sq = 0, np.zeros(dims, np.float64), np.zeros(dims, np.float64)
        for m in matrices:
            m = m.astype(np.float64)
            count += m.shape[1]
            total += m.sum(axis=1)
            total_sq += (m**2).sum(axis=1)
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
        return cls(mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean[:, None]) / self.std[:, None]).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))
