"""Model inputs from training samples: a list of `BimodalSample`s padded into one batch, each clip
seen as training sees it (a random crop, SpecAugment masks, an augmented variant) or, without
training settings, whole and clean, as scoring and the app see it."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from ser_demo.audio import Normalizer
from ser_demo.inputs import collate
from ser_demo.model import ModelConfig
from train.augment import Variant
from train.baselines import clip_vector
from train.features import FeatureBank
from train.pairing import BimodalSample

if TYPE_CHECKING:
    from train.trainer import TrainSettings


def spec_augment(frames: np.ndarray, rng: random.Random, settings: "TrainSettings") -> np.ndarray:
    """SpecAugment (Park et al. 2019) on normalised (dims, T) features: spans of time and bands of
    dimensions set to 0, the training mean. Returns a copy; the cached matrix stays untouched."""
    frames = frames.copy()
    dims, length = frames.shape
    for _ in range(settings.time_masks):
        width = rng.randint(0, max(int(length * settings.time_mask_fraction), 0))
        start = rng.randint(0, max(length - width, 0))
        frames[:, start : start + width] = 0.0
    for _ in range(settings.feature_masks):
        width = rng.randint(0, max(int(dims * settings.feature_mask_fraction), 0))
        start = rng.randint(0, dims - width)
        frames[start : start + width] = 0.0
    return frames


def make_batch(
    samples: Sequence[BimodalSample],
    bank: FeatureBank,
    config: ModelConfig,
    normalizer: Normalizer,
    rng: Optional[random.Random] = None,
    settings: Optional["TrainSettings"] = None,
    encoder_normalizer: Optional[Normalizer] = None,
    variants: Optional[Sequence[Optional[Variant]]] = None,
    statistics: bool = False,
) -> dict[str, torch.Tensor]:
    """Pad a list of samples into model inputs; a dropped modality becomes length 0. With
    `settings` (training), each clip gets its random crop and SpecAugment masks from `rng`;
    `variants` (one per sample, None = the clean clip) picks augmented versions of the audio;
    `statistics` adds the clip vectors of the config's statistics head (inference)."""
    mfccs, states, words, speakers = [], [], [], []
    audio = config.use_audio
    for i, s in enumerate(samples):
        m = e = None
        v = variants[i] if variants is not None else None
        if audio and s.audio_path is not None and "mfcc" in config.audio_frontends:
            m = normalizer(bank.mfcc(s.audio_path, v))
        if audio and s.audio_path is not None and "whisper" in config.audio_frontends:
            e = (encoder_normalizer or Normalizer.encoder_from_config(config))(bank.encoder_states(s.audio_path, v))
        if settings is not None:
            m, e = _augment(m, e, rng or random.Random(), settings)
        mfccs.append(m)
        states.append(e)
        speakers.append(bank.speaker(s.audio_path, v) if config.use_speaker and s.audio_path is not None else None)
        words.append(bank.words(s.text) if config.use_text and s.text else None)
    heads = None
    if statistics and config.statistics_head:
        heads = [clip_vector(bank, s.audio_path, config.statistics_parts) if audio and s.audio_path is not None else None
                 for s in samples]
    return collate(config, mfccs, words, speakers, states, heads)


def _augment(mfcc, states, rng: random.Random, settings: "TrainSettings"):
    """One clip's training view: a random crop to `max_frames` (MFCC frames; the encoder states,
    at half the rate, are cut at the same times) and SpecAugment masks per front-end."""
    length = mfcc.shape[1] if mfcc is not None else (2 * states.shape[1] if states is not None else 0)
    if settings.max_frames and length > settings.max_frames:
        start = rng.randrange(length - settings.max_frames + 1)
        if mfcc is not None:
            mfcc = mfcc[:, start : start + settings.max_frames]
        if states is not None:
            states = states[:, start // 2 : (start + settings.max_frames) // 2]
    if mfcc is not None:
        mfcc = spec_augment(mfcc, rng, settings)
    if states is not None:
        states = spec_augment(states, rng, settings)
    return mfcc, states


def label_tensor(samples: Sequence[BimodalSample], labels: Sequence[str]) -> torch.Tensor:
    index = {label: i for i, label in enumerate(labels)}
    return torch.tensor([index[s.label] for s in samples])
