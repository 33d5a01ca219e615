"""Simple baselines on the very same folds: logistic regression on clip-level statistics.

A recipe is only worth its complexity if it beats these. Each clip becomes one vector (the mean
and standard deviation over time of its MFCCs and/or Whisper encoder states, and/or its speaker
embedding), standardised with the training clips' statistics; a multinomial logistic regression
with class-balanced weights and an L2 penalty chosen on the dev fold (by UA) classifies it. When
the model also trains on the dev speakers (`--no-dev`), the baseline is refitted on them too with
the penalty it chose, so both have heard the same voices. Audio only: these baselines read no words.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ser_demo.statistics_head import clip_statistics
from train.protocol import unweighted_accuracy

BASELINES = {  # name -> the clip representations it concatenates
    "MFCC stats": ("mfcc",),
    "Whisper encoder stats": ("whisper",),
    "speaker embedding": ("speaker",),
    "MFCC + Whisper + speaker": ("mfcc", "whisper", "speaker"),
}
PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1)  # L2 strengths tried on the dev fold


def clip_vector(bank, path, parts: Sequence[str]) -> np.ndarray:
    """One clip as a vector: [mean, std] over time per front-end, the speaker embedding as is
    (the statistics head's inputs: `ser_demo.statistics_head.clip_statistics`)."""
    return clip_statistics(parts, mfcc=bank.mfcc(path) if "mfcc" in parts else None,
                           states=bank.encoder_states(path) if "whisper" in parts else None,
                           speaker=bank.speaker(path) if "speaker" in parts else None)


class LogisticRegression:
    """Multinomial, class-balanced, L2-penalised; fitted by L-BFGS on the full batch."""

    def __init__(self, penalty: float):
        self.penalty = penalty

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> "LogisticRegression":
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        features = torch.from_numpy((x - self.mean) / self.std)
        targets = torch.from_numpy(y).long()
        counts = torch.bincount(targets, minlength=n_classes).float()
        weights = counts.sum() / (n_classes * counts.clamp_min(1))
        self.weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
        self.bias = torch.zeros(n_classes, requires_grad=True)
        optimizer = torch.optim.LBFGS([self.weight, self.bias], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(features @ self.weight + self.bias, targets, weight=weights)
            loss = loss + self.penalty * (self.weight**2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        features = torch.from_numpy((x - self.mean) / self.std)
        return (features @ self.weight + self.bias).argmax(-1).numpy()


def baseline_predictions(
    name: str, bank, labels: Sequence[str], train: Sequence, dev: Sequence, test: Sequence,
    log: Callable[[str], None] = print, refit_on_dev: bool = False,
) -> list[str]:
    """Train the baseline `name` on `train` samples (with audio), pick its penalty on `dev`, then
    (`refit_on_dev`) train it again on `train` + `dev` with that penalty; predict `test`. Samples
    need `.audio_path` and `.label`."""
    parts = BASELINES[name]
    index = {label: i for i, label in enumerate(labels)}

    def arrays(samples):
        kept = [s for s in samples if s.audio_path is not None]
        x = np.stack([clip_vector(bank, s.audio_path, parts) for s in kept]) if kept else np.zeros((0, 1), np.float32)
        return x, np.array([index[s.label] for s in kept])

    (x_train, y_train), (x_dev, y_dev) = arrays(train), arrays(dev)
    best, best_ua = None, -1.0
    for penalty in PENALTIES:
        model = LogisticRegression(penalty).fit(x_train, y_train, len(labels))
        ua = unweighted_accuracy([labels[i] for i in y_dev], [labels[i] for i in model.predict(x_dev)], labels) if len(y_dev) else 0.0
        if ua > best_ua:
            best, best_ua = model, ua
    log(f"  baseline {name}: L2 {best.penalty:g} (dev UA {best_ua:.3f})")
    if refit_on_dev and len(y_dev):
        best = LogisticRegression(best.penalty).fit(np.concatenate([x_train, x_dev]), np.concatenate([y_train, y_dev]), len(labels))
        log(f"  baseline {name}: refitted on train + dev ({len(y_train) + len(y_dev)} clips)")
    x_test = np.stack([clip_vector(bank, s.audio_path, parts) for s in test])
    return [labels[i] for i in best.predict(x_test)]
