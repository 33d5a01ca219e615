"""Waveform augmentation for training: speed perturbation and additive noise, as cached variants.

A variant changes the audio *before* any front-end, so the MFCCs, the Whisper encoder states and
the speaker embedding all see the same perturbed clip. Each variant is deterministic per clip
(noise is seeded by the clip's name), so its features are computed once and cached like the
clean clip's, under a key that names the variant.

Gain is not a variant: ingestion peak-normalises every clip, in training as in the app, so a
gain change never reaches the model (see `ser_demo.ingest.normalize_peak`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ser_demo.audio import SAMPLE_RATE
from ser_demo.ingest import normalize_peak


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play the clip `factor` times as fast (Ko et al. 2015, sox "speed"): tempo and pitch both
    scale by `factor`, the duration by 1 / `factor`."""
    if factor == 1.0:
        return audio
    import librosa

    # Read the samples as if recorded at factor x the rate, then bring them back to the rate.
    return librosa.resample(audio, orig_sr=round(SAMPLE_RATE * factor), target_sr=SAMPLE_RATE).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White Gaussian noise at `snr_db` dB below the clip's mean power."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    if power == 0.0:
        return audio
    noise = np.random.default_rng(seed).standard_normal(audio.shape)
    return (audio + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


@dataclass(frozen=True)
class Variant:
    """One perturbed version of a clip: a speed factor, noise at an SNR, or both."""

    speed: float = 1.0
    snr_db: Optional[float] = None

    def apply(self, audio: np.ndarray, path: Path) -> np.ndarray:
        audio = speed_perturb(audio, self.speed)
        if self.snr_db is not None:
            seed = int.from_bytes(hashlib.sha256(Path(path).name.encode()).digest()[:8], "little")
            audio = add_noise(audio, self.snr_db, seed)
        return normalize_peak(audio)  # as ingestion leaves every clip

    def key(self) -> dict:
        return {"speed": self.speed, "snr_db": self.snr_db}

    def __str__(self) -> str:
        parts = ([f"speed {self.speed:g}"] if self.speed != 1.0 else []) + (
            [f"noise {self.snr_db:g} dB SNR"] if self.snr_db is not None else [])
        return ", ".join(parts) or "clean"


def variants_of(speed_factors: Sequence[float] = (), noise_snr_db: Optional[float] = None) -> list[Variant]:
    """The perturbed versions a recipe trains on besides the clean clip."""
    variants = [Variant(speed=f) for f in speed_factors if f != 1.0]
    if noise_snr_db is not None:
        variants.append(Variant(snr_db=noise_snr_db))
    return variants
