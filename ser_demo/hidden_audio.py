"""The audio statistics of one recording with some of its frames hidden, computed locally.

Occlusion (explain) and the window deletion curves (faithfulness) run the model on many
variants of one recording, each with some audio frames set to the baseline 0. Run in full, every
variant repeats the audio branch's convolutions over the whole clip, in both front-ends: most of
an explanation's time. But a convolution is local: its output at step t reads the steps
t - left .. t + right only. So for every variant and kernel size the output at t is
  - the unmasked recording's output, when no step it reads is hidden;
  - the bias alone (a convolution of zeros), when every real step it reads is hidden;
  - recomputed from the masked steps only where its window straddles the edge of a hidden span
    (at most kernel size - 1 steps per edge).
The SPU (eq. 3) then pools the assembled maps as the model does. The result equals the model's
own audio branch on the masked inputs up to floating-point summation order (tests compare both).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .model import MSCNN_SPU_ATT, lengths_to_mask, normalize_per_clip, pool_per_kernel

# The audio inputs a batch may hold: (features, lengths, MFCC frames per step). Relevance is
# reported per 10 ms MFCC frame; a Whisper encoder state spans two of them.
AUDIO_STREAMS = (("mfcc", "audio_lengths", 1), ("encoder_states", "encoder_lengths", 2))


def audio_frames(batch: dict) -> int:
    """Length of the (first) utterance's audio in 10 ms frames, over every front-end it has."""
    return max([int(batch[n][0]) * rate for _, n, rate in AUDIO_STREAMS if n in batch] or [0])


def hidden_streams(batch: dict, windows: Sequence[tuple[int, int]], keep: np.ndarray) -> dict[str, tuple[Tensor, Tensor]]:
    """Keep-masks (V, n_windows) over windows ((first, end) 10 ms frames) of the first utterance
    of `batch`, per front-end: name -> (its features (C, T), keep (V, T)). A Whisper encoder state
    (two frames) is hidden when any of its frames is, as occlusion hides it."""
    keep = np.asarray(keep, dtype=bool)
    frames = audio_frames(batch)
    keep_frames = np.ones((len(keep), frames), dtype=bool)
    for w, (a, b) in enumerate(windows):
        keep_frames[:, a:b] = keep[:, w:w + 1]
    streams = {}
    for name, lengths_name, rate in AUDIO_STREAMS:
        if name not in batch:
            continue
        steps = int(batch[lengths_name][0])
        padded = np.ones((len(keep), steps * rate), dtype=bool)
        covered = min(frames, steps * rate)
        padded[:, :covered] = keep_frames[:, :covered]
        kept = torch.as_tensor(padded.reshape(len(keep), steps, rate).all(-1), device=batch[name].device)
        streams[name] = (batch[name][0, :, :steps], kept)
    return streams


def _window_counts(mask: Tensor, size: int, left: int) -> Tensor:
    """(V, T) booleans -> (V, T) how many of them each convolution window (size, `left` steps
    before t) covers; steps outside the clip count as none."""
    ones = torch.ones(1, 1, size, dtype=torch.float32, device=mask.device)
    padded = F.pad(mask.to(torch.float32)[:, None, :], (left, size - 1 - left))
    return F.conv1d(padded, ones)[:, 0]


def _runs(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The runs of True in each row of (V, T) booleans: (row, first, end) per run."""
    edges = torch.diff(F.pad(mask.to(torch.int8), (1, 1)), dim=1)  # +1 where a run starts, -1 after it
    rows, first = torch.nonzero(edges == 1, as_tuple=True)
    _, end = torch.nonzero(edges == -1, as_tuple=True)  # row-major order: the k-th end closes the k-th run
    return rows, first, end


def _range_max_table(x: Tensor) -> Tensor:
    """(L, F, T) with [j, :, t] = max of x[:, t : t + 2**j] (a sparse table: any range's max is
    the max of two overlapping entries)."""
    levels = [x]
    while 2 ** len(levels) <= x.shape[-1]:
        half = 2 ** (len(levels) - 1)
        previous = levels[-1]
        levels.append(F.pad(torch.maximum(previous[:, :-half], previous[:, half:]), (0, half), value=float("-inf")))
    return torch.stack(levels)


def _hidden_statistics(conv, size: int, x: Tensor, keep: Tensor, statistics: tuple) -> Tensor:
    """(V, n_stats, F): the SPU (eq. 3, over all T steps) of one kernel size's feature map for V
    variants of x (C, T), each with the steps where keep (V, T) is False set to 0.

    Each variant's map is the unmasked map where a window reads no hidden step, relu(bias) where
    it reads only hidden ones, and recomputed where it reads both; the pooled sums, sums of
    squares (float64 prefix sums) and maxima (a range-max table) are assembled from those parts
    without building the V maps."""
    left = (size - 1) // 2  # the model's "same" padding (MSCNN.forward)
    padded = F.pad(x, (left, size - 1 - left))
    full = F.relu(conv(padded[None])[0])  # (F, T): the unmasked recording's map
    n_variants, steps = keep.shape
    filters = full.shape[0]
    bias = F.relu(conv.bias) if conv.bias is not None else torch.zeros(filters, device=x.device)
    # Every window reads step t itself, a real step: it reads hidden steps, kept ones, or both.
    reads_hidden = _window_counts(~keep, size, left) > 0
    reads_kept = _window_counts(keep, size, left) > 0
    total = torch.zeros(n_variants, filters, dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    peak = torch.full((n_variants, filters), float("-inf"), dtype=full.dtype, device=x.device)
    # unchanged runs: prefix sums and the range-max table of the unmasked map
    rows, first, end = _runs(~reads_hidden)
    if len(rows):
        cumulative = F.pad(torch.cumsum(full.double(), 1), (1, 0))
        cumulative_squares = F.pad(torch.cumsum(full.double() ** 2, 1), (1, 0))
        total.index_add_(0, rows, (cumulative[:, end] - cumulative[:, first]).T)
        squares.index_add_(0, rows, (cumulative_squares[:, end] - cumulative_squares[:, first]).T)
        table = _range_max_table(full)
        level = torch.floor(torch.log2((end - first).double())).long()
        ranged = torch.maximum(table[level, :, first], table[level, :, end - 2 ** level])  # (runs, F)
        peak.scatter_reduce_(0, rows[:, None].expand_as(ranged), ranged, "amax")
    # steps that read only hidden input: the bias alone
    only_hidden = (~reads_kept).sum(1)  # (V,)
    total += only_hidden[:, None] * bias.double()
    squares += only_hidden[:, None] * bias.double() ** 2
    peak = torch.where(only_hidden[:, None] > 0, torch.maximum(peak, bias), peak)
    # steps at the edge of a hidden span: recomputed from the masked input
    rows, at = torch.nonzero(reads_hidden & reads_kept, as_tuple=True)
    if len(rows):
        keep_padded = F.pad(keep.to(x.dtype), (left, size - 1 - left))
        windows = padded.unfold(-1, size, 1)[:, at].transpose(0, 1) * keep_padded.unfold(-1, size, 1)[rows, at][:, None]
        values = F.relu(F.linear(windows.flatten(1), conv.weight.flatten(1), conv.bias))  # (M, F)
        total.index_add_(0, rows, values.double())
        squares.index_add_(0, rows, values.double() ** 2)
        peak.scatter_reduce_(0, rows[:, None].expand_as(values), values, "amax")
    mean = total / steps
    pooled = {"max": peak, "avg": mean.to(full.dtype),
              # population std, with the model's floor
              "std": (squares / steps - mean ** 2).clamp_min(1e-10).sqrt().to(full.dtype)}
    return torch.stack([pooled[s] for s in statistics], dim=1)


def _full_statistics(cnn, x: Tensor, keep: Tensor, statistics: tuple, chunk: int = 16) -> Tensor:
    """(V, K, n_stats, F): the front-end's branch run on every masked variant, per-clip
    normalisation included (it reads every frame, so a hidden window changes the whole input)."""
    out = []
    for first in range(0, len(keep), chunk):
        part = keep[first:first + chunk]
        mask = lengths_to_mask(torch.full((len(part),), x.shape[-1], device=x.device), x.shape[-1])
        frames = normalize_per_clip(x[None] * part[:, None, :].to(x.dtype), mask)
        out.append(pool_per_kernel(cnn(frames, mask), mask, statistics))
    return torch.cat(out)


@torch.no_grad()
def hidden_audio_statistics(model: MSCNN_SPU_ATT, streams: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """(V, Ka, n_stats, F) audio SPU statistics of V variants of one recording, as the model's
    forward pass would compute them from the masked features.

    streams: front-end input name ("mfcc", "encoder_states") -> (features (C, T) of the
    recording, unpadded; keep (V, T) booleans, False where the variant hides the step).
    Memory: O(V x T) masks and O(F x T x log T) for the range-max tables, never V maps. A
    front-end normalised per clip (config.utterance_norm) has no locality: it runs in full."""
    c = model.config
    pooled = []
    for name, frontend, cnn in (("mfcc", "mfcc", getattr(model, "audio_cnn", None)),
                                ("encoder_states", "whisper", getattr(model, "encoder_cnn", None))):
        if cnn is None:  # the model's order of front-ends
            continue
        x, keep = streams[name]
        keep = keep.to(torch.bool)
        if frontend in c.utterance_norm:
            pooled.append(_full_statistics(cnn, x, keep, c.audio_statistics))
            continue
        pooled.append(torch.stack([_hidden_statistics(conv, size, x, keep, c.audio_statistics)
                                   for size, conv in zip(cnn.kernel_sizes, cnn.convs)], dim=1))
    return torch.cat(pooled, dim=1)
