"""A linear head on clip statistics, late-fused with the network's answer (not in the paper).

MSCNN-SPU-ATT learns its own filters and pools them; a logistic regression on fixed statistics
of the whole clip (mean and standard deviation over time of the MFCCs and of the Whisper encoder
states, and the speaker embedding) is a far simpler learner. On voices it never heard the two
err differently, so a checkpoint may carry such a head and mix the two answers:

    p(class | clip, words) = (1 - share) * p_network(class | clip, words) + share * p_head(class | clip)

The head reads audio only; with no audio the network's answer stands. It is fitted after the
network, on the same training clips (`train.statistics_head`), and never trained with it, so the
network and what it computes (SPU statistics, attention) stay the paper's. Explanations that hide
words or windows of audio move only the network's part: the head's statistics are the whole clip's. Its standardisation and weights are buffers of the model: they travel in
model.safetensors, and `config.statistics_head` says which statistics it reads and its share.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

PARTS = ("mfcc", "whisper", "speaker")  # the statistics a head may read, in the order it stacks them


def statistics_width(parts, n_audio_features: int, n_encoder_features: int, n_speaker_features: int) -> int:
    """Length of the clip vector of `parts`: [mean, std] per front-end, the speaker embedding as is."""
    widths = {"mfcc": 2 * n_audio_features, "whisper": 2 * n_encoder_features, "speaker": n_speaker_features}
    return sum(widths[p] for p in parts)


def clip_statistics(parts, mfcc: Optional[np.ndarray] = None, states: Optional[np.ndarray] = None,
                    speaker: Optional[np.ndarray] = None) -> np.ndarray:
    """One clip as one vector: mean and std over time of the raw (un-normalised) MFCCs (96, T)
    and encoder states (384, Te), then the speaker embedding; a clip with no frames gives zeros."""
    pieces = []
    for part in parts:
        if part == "speaker":
            pieces.append(np.asarray(speaker, np.float32))
            continue
        frames = mfcc if part == "mfcc" else states
        if frames is None:
            raise ValueError(f"the statistics head reads {part} features, and none were given")
        if frames.shape[1] == 0:
            pieces.append(np.zeros(2 * frames.shape[0], np.float32))
        else:
            pieces.append(np.concatenate([frames.mean(1), frames.std(1)]))
    return np.concatenate(pieces).astype(np.float32)


def readable_parts(config) -> tuple:
    """The statistics a checkpoint's inference computes anyway: the MFCCs (cheap), the Whisper
    encoder states if it reads them, the speaker embedding if it uses one."""
    return tuple(p for p in PARTS if p == "mfcc" or (p == "whisper" and "whisper" in config.audio_frontends)
                 or (p == "speaker" and config.use_speaker))


def check_head_config(config) -> None:
    head = config.statistics_head
    parts, readable = tuple(head.get("parts", ())), readable_parts(config)
    if not config.use_audio:
        raise ValueError("statistics_head reads audio statistics: it needs use_audio=True")
    if not parts:
        raise ValueError(f"statistics_head needs parts: some of {readable}")
    for part in parts:
        if part not in readable:
            raise ValueError(f"statistics_head part {part!r} is not computed by this model (it computes {readable}: "
                             "whisper needs that front-end, speaker the speaker embedding)")
    if not 0 < head.get("share", 0) <= 1:
        raise ValueError(f"statistics_head share must be in (0, 1], got {head.get('share')}")


class StatisticsHead(nn.Module):
    """Standardise with the training clips' mean and std, then one linear layer: the logistic
    regression that `train.statistics_head` fits, as buffers (nothing here is trained by SGD)."""

    def __init__(self, n_inputs: int, n_labels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("std", torch.ones(n_inputs))
        self.register_buffer("weight", torch.zeros(n_labels, n_inputs))
        self.register_buffer("bias", torch.zeros(n_labels))

    def forward(self, statistics: Tensor) -> Tensor:
        return ((statistics - self.mean) / self.std) @ self.weight.T + self.bias

    @staticmethod
    def fuse(network_logits: Tensor, head_logits: Tensor, share: float, heard: Optional[Tensor] = None) -> Tensor:
        """Logits whose softmax is the mixture of the two answers; rows where `heard` is False
        (no audio) keep the network's."""
        mixed = ((1 - share) * network_logits.softmax(-1) + share * head_logits.softmax(-1)).log()
        if heard is None:
            return mixed
        return torch.where(heard[:, None], mixed, network_logits)
