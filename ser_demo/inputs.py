"""Model inputs: a batch of utterances' features, zero-padded, with the lengths the model masks by."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .model import ModelConfig


def pad_frames(matrices: list, n_features: int) -> tuple[Tensor, Tensor]:
    """(C, T_i) arrays (None = absent) -> zero-padded (B, C, max T) and (B,) lengths."""
    lengths = [0 if m is None else m.shape[1] for m in matrices]
    padded = torch.zeros(len(matrices), n_features, max(max(lengths), 1))
    for i, m in enumerate(matrices):
        if lengths[i]:
            padded[i, :, : lengths[i]] = torch.as_tensor(m)
    return padded, torch.tensor(lengths)


def collate(config: ModelConfig, mfccs: list, words: list, speakers: Optional[list] = None,
            encoder_states: Optional[list] = None, statistics: Optional[list] = None) -> dict[str, Tensor]:
    """Pad one batch of utterances into model inputs. mfccs: normalised (96, T) arrays, words:
    (Tw, D) arrays, speakers: (n_speaker_features,) arrays, encoder_states: normalised (384, Te)
    arrays; None (or length 0) = modality absent, which becomes length 0 (and a zero speaker
    vector). statistics: clip vectors for the statistics head (`ser_demo.statistics_head`), given
    when its answer is to be mixed in (inference; never in training), None for a clip without
    audio. Front-ends the config does not use are ignored. Shared by training and inference."""
    batch: dict[str, Tensor] = {}
    n = len(mfccs)
    if config.use_audio:
        if "mfcc" in config.audio_frontends:
            batch["mfcc"], batch["audio_lengths"] = pad_frames(mfccs, config.n_audio_features)
        if "whisper" in config.audio_frontends:
            batch["encoder_states"], batch["encoder_lengths"] = pad_frames(
                encoder_states or [None] * n, config.n_encoder_features)
        if config.use_speaker:
            batch["speaker"] = torch.stack([
                torch.zeros(config.n_speaker_features) if e is None else torch.as_tensor(e, dtype=torch.float32)
                for e in (speakers or [None] * n)
            ])
        if config.statistics_head and any(v is not None for v in statistics or ()):
            width = next(len(v) for v in statistics if v is not None)
            batch["clip_statistics"] = torch.stack([
                torch.zeros(width) if v is None else torch.as_tensor(v, dtype=torch.float32) for v in statistics])
    if config.use_text:
        lengths = [0 if w is None else len(w) for w in words]
        padded = torch.zeros(len(words), max(max(lengths), 1), config.n_word_features)
        for i, w in enumerate(words):
            if lengths[i]:
                padded[i, : lengths[i]] = torch.as_tensor(w)
        batch["words"], batch["word_lengths"] = padded, torch.tensor(lengths)
    return batch
