"""Speaker-adversarial training (`--speaker-adversary W`): not the paper's; a lever for new voices.

A small classifier learns to tell the training speakers apart from the audio branch's SPU vectors,
and its gradient reaches the audio branch reversed (gradient reversal, Ganin & Lempitsky 2015), so
the audio branch learns statistics that say less about who speaks while the emotion loss keeps what
says how they feel; for speech emotion, Li et al., "Improving speech emotion recognition via
speaker-invariant training" (2019). The speaker embedding, when the model reads one, is fed to the
classifier unchanged: the voice stays known, the emotion features stop encoding it.

The reversed gradient's weight ramps up over training as in Ganin & Lempitsky (2 / (1 + e^(-10 p))
- 1 of W, p the share of training done), so the adversary first learns what speakers sound like.
Only training uses it: checkpoints and inference are unchanged.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times -scale backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reversal_scale(weight: float, progress: float) -> float:
    """The reversed gradient's weight when `progress` (0..1) of training is done."""
    return weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class SpeakerAdversary(nn.Module):
    """Which training speaker an audio branch's SPU vectors come from: one hidden layer, as small
    as the emotion classifier's own."""

    def __init__(self, n_inputs: int, speakers: Sequence[str], n_hidden: int = 128):
        super().__init__()
        self.speakers = sorted(set(speakers))
        if len(self.speakers) < 2:
            raise ValueError(f"speaker-adversarial training needs at least two training speakers, got {self.speakers}")
        self.index = {s: i for i, s in enumerate(self.speakers)}
        self.net = nn.Sequential(nn.Linear(n_inputs, n_hidden), nn.ReLU(), nn.Linear(n_hidden, len(self.speakers)))

    def loss(self, audio_statistics: torch.Tensor, speakers: Sequence[str], heard: Sequence[bool],
             scale: float) -> torch.Tensor:
        """Cross-entropy of the speaker over the samples that were heard (audio not dropped) and
        whose speaker it knows, averaged over them; the audio branch receives its gradient
        reversed and times `scale`. Zero when no sample qualifies."""
        rows = [i for i, (s, h) in enumerate(zip(speakers, heard)) if h and s in self.index]
        if not rows:
            return audio_statistics.new_zeros(())
        picked = audio_statistics[torch.tensor(rows, device=audio_statistics.device)].flatten(1)
        logits = self.net(GradientReversal.apply(picked.float(), scale))
        target = torch.tensor([self.index[speakers[i]] for i in rows], device=logits.device)
        return F.cross_entropy(logits, target)
