"""Fit a checkpoint's statistics head (`ser_demo.statistics_head`) once its network is trained.

The head is the "MFCC + Whisper + speaker" baseline of the reports (train/baselines.py): the same
clip statistics, the same class-balanced logistic regression, on the clips the network trained
on, with a fixed L2 penalty (a checkpoint trained on every voice has no dev group to pick one).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ser_demo.model import MSCNN_SPU_ATT
from ser_demo.statistics_head import readable_parts
from train.baselines import LogisticRegression, clip_vector

DEFAULT_PENALTY = 0.1


def head_settings(config, share: float, penalty: float = DEFAULT_PENALTY) -> Optional[dict]:
    """The head a config can carry: every statistic its inference computes anyway; None for share 0."""
    return {"parts": list(readable_parts(config)), "share": share, "penalty": penalty} if share else None


def attach_statistics_head(model: MSCNN_SPU_ATT, head: dict, clips: Sequence[tuple[Path, str]], bank,
                           log: Callable[[str], None] = print) -> MSCNN_SPU_ATT:
    """`model` (trained, without a head) with a head fitted on `clips` ((audio path, label) pairs)."""
    config = replace(model.config, statistics_head=dict(head))
    fitted = MSCNN_SPU_ATT(config)
    missing, unexpected = fitted.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("statistics_head.") for k in missing), (missing, unexpected)
    # A clip with no speech in it has no statistics (inference refuses it): it would be an
    # all-zero vector with a label.
    heard = [(path, label) for path, label in clips if bank.mfcc(path).shape[1] > 0]
    if len(heard) < len(clips):
        log(f"statistics head: {len(clips) - len(heard)} of {len(clips)} clips have no speech in them and are left out")
    clips = heard
    index = {label: i for i, label in enumerate(config.labels)}
    x = np.stack([clip_vector(bank, path, config.statistics_parts) for path, _ in clips])
    y = np.array([index[label] for _, label in clips])
    regression = LogisticRegression(head["penalty"]).fit(x, y, len(config.labels))
    with torch.no_grad():
        fitted.statistics_head.mean.copy_(torch.from_numpy(regression.mean))
        fitted.statistics_head.std.copy_(torch.from_numpy(regression.std))
        fitted.statistics_head.weight.copy_(regression.weight.T)
        fitted.statistics_head.bias.copy_(regression.bias)
    log(f"statistics head ({' + '.join(config.statistics_parts)}, {x.shape[1]} inputs, L2 {head['penalty']:g}) "
        f"fitted on {len(clips)} clips; its share of the answer: {head['share']:g}")
    return fitted.to(next(model.parameters()).device).eval()
