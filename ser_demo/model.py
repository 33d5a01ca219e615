"""MSCNN-SPU-ATT: Peng, Lu, Pan, Liu, "Efficient Speech Emotion Recognition Using Multi-Scale CNN
and Attention", ICASSP 2021. Section and equation numbers below are the paper's.

    MFCC frames (B, 96, Ta) --MSCNN_a--> (B, 128, Ta) per kernel size --SPU--> e_max, e_avg, e_std
    GloVe words (B, Tw, D)  --MSCNN_t--> h_k (B, Tw, 128*Kt)           --SPU--> text statistics
                                          h_k, e_j --attention (eq. 4-6)--> S
    [audio SPU (+ x-vector), text SPU, SWEM-max, SWEM-avg, S] --FC + dropout--> softmax

The sizes and switches are `ModelConfig` (`ser_demo.config`, stored as config.json).
Audio front-ends (`audio_frontends`): the paper's MFCCs, Whisper encoder states (384-d, 50 per
second; `ser_demo.encoder`), or both. Each front-end has its own multi-scale CNN; their SPU
statistics are concatenated per statistic, so every context vector e_j sees all of them. With
("mfcc",) the model is exactly the paper's.

Every batch carries lengths (`ser_demo.inputs` pads it); padded frames and tokens never enter a
statistic, a convolution output at a real position, or an attention weight, so an utterance
scores the same alone and in a padded batch.

One choice the paper leaves open: e_j (the audio statistics, 128*Ka wide) and h_k (128*Kt wide)
need equal widths for e^T h_k. We map each context vector with its own learned matrix W_j,
score_k = (W_j e_j)^T h_k / sqrt(d) - bilinear ("general") attention. The 1/sqrt(d) is a fixed
rescaling of W_j, so the function class is exactly the paper's; it only keeps the softmax out of
saturation at initialisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors.torch import load_file
from torch import Tensor, nn

from .config import FRONTENDS, LABELS, STATISTICS, ModelConfig  # noqa: F401  (the model's interface)
from .statistics_head import StatisticsHead, statistics_width


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, T) boolean mask, True on real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class MSCNN(nn.Module):
    """3.1, eq. 1-2: one convolution per kernel size s, spanning s steps and all input features,
    128 filters, centred ("same") padding, ReLU. Input (B, C, T) -> list of (B, 128, T)."""

    def __init__(self, n_inputs: int, kernel_sizes: tuple, n_filters: int):
        super().__init__()
        self.kernel_sizes = kernel_sizes
        self.convs = nn.ModuleList(nn.Conv1d(n_inputs, n_filters, s) for s in kernel_sizes)

    def forward(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        # Zeroed padding equals the zero padding a lone utterance gets, so real positions match.
        x = x * mask[:, None, :]
        maps = []
        for s, conv in zip(self.kernel_sizes, self.convs):
            left = (s - 1) // 2  # "same" padding; an even kernel puts its extra step on the right
            maps.append(F.relu(conv(F.pad(x, (left, s - 1 - left)))))
        return maps


def statistical_pooling(x: Tensor, mask: Tensor, statistics: tuple = STATISTICS) -> Tensor:
    """3.2, eq. 3 (SPU): max, mean and std over real time steps. (B, C, T) -> (B, n_stats, C).

    An empty sequence (length 0, e.g. no transcript) pools to zeros rather than NaN."""
    m = mask[:, None, :].to(x.dtype)
    count = m.sum(-1)  # (B, 1)
    safe_count = count.clamp_min(1.0)
    if "avg" in statistics or "std" in statistics:
        mean = (x * m).sum(-1) / safe_count
    pooled = []
    for stat in statistics:
        if stat == "max":
            value = x.masked_fill(~mask[:, None, :], float("-inf")).amax(-1)
            value = torch.where(count > 0, value, torch.zeros_like(value))
        elif stat == "avg":
            value = mean
        else:  # population std; the floor keeps sqrt's gradient finite at zero variance
            var = (((x - mean[..., None]) * m) ** 2).sum(-1) / safe_count
            value = var.clamp_min(1e-10).sqrt() * (count > 0)
        pooled.append(value)
    return torch.stack(pooled, dim=1)


def normalize_per_clip(x: Tensor, mask: Tensor) -> Tensor:
    """Each clip's frames to zero mean and unit variance per feature, over its real steps."""
    stats = statistical_pooling(x, mask, ("avg", "std"))  # (B, 2, C)
    return (x - stats[:, 0, :, None]) / (stats[:, 1, :, None] + 1e-5) * mask[:, None, :]


def pool_per_kernel(maps: list[Tensor], mask: Tensor, statistics: tuple) -> Tensor:
    """SPU of every kernel size's feature maps in one pass: -> (B, K, n_stats, F)."""
    pooled = statistical_pooling(torch.cat(maps, dim=1), mask, statistics)  # (B, n_stats, K*F)
    return pooled.unflatten(-1, (len(maps), -1)).transpose(1, 2)


class ContextAttention(nn.Module):
    """3.3, eq. 4-6: each audio statistic e_j attends over the text MSCNN outputs h_k:
    s_k^j = softmax_k(e_j^T h_k) (eq. 4-5, with the W_j projection above), S = concat_j sum_k s_k^j h_k (eq. 6)."""

    def __init__(self, n_context: int, n_keys: int, statistics: tuple):
        super().__init__()
        self.statistics = statistics
        self.project = nn.ModuleList(nn.Linear(n_context, n_keys, bias=False) for _ in statistics)
        self.scale = 1.0 / math.sqrt(n_keys)

    def forward(self, contexts: Tensor, h: Tensor, mask: Tensor, uniform: bool = False) -> tuple[Tensor, Tensor]:
        """contexts (B, n_stats, n_context), h (B, T, n_keys), mask (B, T) ->
        S_j (B, n_stats, n_keys) and weights (B, n_stats, T), zero on padding.
        `uniform` spreads every weight evenly over the real words (S_j = mean_k h_k): the
        explanation module's baseline for how much the learned weighting matters."""
        if uniform:
            m = mask.to(h.dtype)
            weights = (m / m.sum(-1, keepdim=True).clamp_min(1.0))[:, None, :].expand(-1, contexts.shape[1], -1)
        else:
            queries = torch.stack([w(contexts[:, j]) for j, w in enumerate(self.project)], dim=1)
            scores = torch.einsum("bjd,btd->bjt", queries, h) * self.scale  # e^T h_k (eq. 4)
            scores = scores.masked_fill(~mask[:, None, :], -1e9)
            weights = scores.softmax(-1) * mask[:, None, :]  # eq. 5; all-zero when there are no words
        attended = torch.einsum("bjt,btd->bjd", weights, h)  # sum_k s_k h_k (eq. 6)
        return attended, weights


@dataclass
class ModelOutput:
    logits: Tensor  # (B, n_labels)
    audio_statistics: Optional[Tensor] = None  # (B, Ka, n_stats, n_filters)
    text_statistics: Optional[Tensor] = None  # (B, Kt, n_stats, n_filters)
    attention: Optional[Tensor] = None  # (B, n_audio_stats, Tw)
    attended: Optional[Tensor] = None  # (B, n_audio_stats, Kt*F): S_j = sum_k s_k^j h_k
    h: Optional[Tensor] = None  # (B, Tw, Kt*F): the text MSCNN outputs h_k
    network_logits: Optional[Tensor] = None  # before the statistics head's answer is mixed in
    head_logits: Optional[Tensor] = None  # the statistics head's own answer
    head_heard: Optional[Tensor] = None  # (B,) bool: rows whose answer mixes the head in (they have audio)


class MSCNN_SPU_ATT(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ser-demo",
    tags=["speech-emotion-recognition", "audio-classification", "mscnn-spu-att"],
    license="cc-by-nc-sa-4.0",
):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        features = 0
        self.n_audio_statistics = len(c.audio_statistics) * c.n_filters * len(c.audio_kernels)  # SPU vector width
        if c.use_audio:
            if "mfcc" in c.audio_frontends:
                self.audio_cnn = MSCNN(c.n_audio_features, c.audio_kernel_sizes, c.n_filters)
            if "whisper" in c.audio_frontends:
                self.encoder_cnn = MSCNN(c.n_encoder_features, c.encoder_kernel_sizes, c.n_filters)
            features += self.n_audio_statistics
            features += c.n_speaker_features if c.use_speaker else 0
        if c.use_text:
            self.text_cnn = MSCNN(c.n_word_features, c.text_kernel_sizes, c.n_filters)
            features += len(c.text_statistics) * c.n_filters * len(c.text_kernel_sizes)
            features += 2 * c.n_word_features if c.use_swem else 0
        if c.attends:
            n_keys = c.n_filters * len(c.text_kernel_sizes)
            n_context = c.n_filters * len(c.audio_kernels)
            self.attention = ContextAttention(n_context, n_keys, c.audio_statistics)
            features += len(c.audio_statistics) * n_keys
        self.n_fused_features = features
        # 3.4: the fused vector is reduced by a fully connected layer (dropout 0.3), then softmax.
        self.classifier = nn.Sequential(
            nn.Dropout(c.dropout),
            nn.Linear(features, c.n_hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.n_hidden, len(c.labels)),
        )
        if c.statistics_head:
            width = statistics_width(c.statistics_parts, c.n_audio_features, c.n_encoder_features, c.n_speaker_features)
            self.statistics_head = StatisticsHead(width, len(c.labels))

    def forward(
        self,
        mfcc: Optional[Tensor] = None,  # (B, 96, Ta), normalised
        audio_lengths: Optional[Tensor] = None,  # (B,) frames; 0 = no audio
        words: Optional[Tensor] = None,  # (B, Tw, D) word vectors
        word_lengths: Optional[Tensor] = None,  # (B,) tokens; 0 = no transcript
        speaker: Optional[Tensor] = None,  # (B, n_speaker_features)
        encoder_states: Optional[Tensor] = None,  # (B, 384, Te) Whisper encoder states, normalised
        encoder_lengths: Optional[Tensor] = None,  # (B,) states; 0 = no audio
        *,
        audio_statistics: Optional[Tensor] = None,  # precomputed audio SPU, 1 or B rows
        uniform_attention: bool = False,
        clip_statistics: Optional[Tensor] = None,  # (B, n) for the statistics head, if the model has one
    ) -> ModelOutput:
        """The paper's forward pass. The first two keyword options serve the explanations: reuse the
        audio branch across many transcripts of one recording, and replace eq. 5 by equal weights.
        `clip_statistics` mixes in the statistics head's answer (not the paper's; see its module)."""
        c = self.config
        fused, out = [], ModelOutput(logits=torch.empty(0))
        batch = max(x.shape[0] for x in (mfcc, encoder_states, words, audio_statistics) if x is not None)
        if c.use_audio:
            if audio_statistics is None:
                # (B, Ka, n_stats, F): SPU per kernel size (eq. 3), front-end after front-end
                pooled = []
                for name, cnn, frames, lengths in (("mfcc", getattr(self, "audio_cnn", None), mfcc, audio_lengths),
                                                   ("whisper", getattr(self, "encoder_cnn", None), encoder_states, encoder_lengths)):
                    if cnn is not None:
                        mask = lengths_to_mask(lengths, frames.shape[-1])
                        if name in c.utterance_norm:
                            frames = normalize_per_clip(frames, mask)
                        pooled.append(pool_per_kernel(cnn(frames, mask), mask, c.audio_statistics))
                audio_statistics = torch.cat(pooled, dim=1)
            out.audio_statistics = audio_statistics.expand(batch, *audio_statistics.shape[1:])
            fused.append(out.audio_statistics.transpose(1, 2).flatten(1))
            if c.use_speaker:
                if speaker is None:
                    raise ValueError("this model uses a speaker embedding: pass speaker=(B, n_speaker_features)")
                fused.append(speaker.expand(batch, -1))
        if c.use_text:
            word_mask = lengths_to_mask(word_lengths, words.shape[1])
            text_maps = self.text_cnn(words.transpose(1, 2), word_mask)
            out.text_statistics = pool_per_kernel(text_maps, word_mask, c.text_statistics)
            fused.append(out.text_statistics.transpose(1, 2).flatten(1))
            if c.use_swem:  # SWEM-max and SWEM-avg of the raw word embeddings
                # Unknown words are zero vectors: left in, they would lift the max to >= 0 and
                # dilute the mean, so SWEM pools the known words only.
                known = word_mask & (words != 0).any(-1)
                swem = statistical_pooling(words.transpose(1, 2), known, ("max", "avg"))
                fused.append(swem.flatten(1))
        if c.attends:
            # Context vectors e_j: one per audio statistic, over all kernel sizes.
            contexts = out.audio_statistics.transpose(1, 2).flatten(2)  # (B, n_stats, Ka*F)
            out.h = torch.cat(text_maps, dim=1).transpose(1, 2)  # h_k: (B, Tw, Kt*F)
            out.attended, out.attention = self.attention(contexts, out.h, word_mask, uniform_attention)
            fused.append(out.attended.flatten(1))
        out.logits = self.classifier(torch.cat(fused, dim=-1))
        if clip_statistics is not None and c.statistics_head:
            lengths = encoder_lengths if encoder_lengths is not None else audio_lengths
            out.network_logits, out.head_logits = out.logits, self.statistics_head(clip_statistics)
            out.head_heard = lengths > 0 if lengths is not None else torch.ones_like(out.logits[:, 0], dtype=torch.bool)
            out.logits = StatisticsHead.fuse(out.logits, out.head_logits, c.statistics_head["share"], out.head_heard)
        return out

    # --- checkpoints: safetensors + config.json, never pickle ----------------------------------

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download,
                         local_files_only, token, map_location="cpu", strict=True, **model_kwargs):
        config = model_kwargs.pop("config")
        if isinstance(config, dict):
            config = ModelConfig(**{k: v for k, v in config.items() if k in _CONFIG_FIELDS})
        model = cls(config, **model_kwargs)
        if Path(model_id).is_dir():
            weights_file = Path(model_id) / "model.safetensors"
            if not weights_file.is_file():
                raise FileNotFoundError(f"{model_id} has no model.safetensors")
        else:
            weights_file = hf_hub_download(
                model_id, "model.safetensors", revision=revision, cache_dir=cache_dir,
                force_download=force_download, token=token, local_files_only=local_files_only,
            )
        state = load_file(str(weights_file), device=str(map_location))
        check_state_matches(model, state, source=str(model_id))
        model.load_state_dict(state, strict=True)
        return model.eval()


_CONFIG_FIELDS = {f.name for f in fields(ModelConfig)}


class CheckpointMismatchError(ValueError):
    pass


def check_state_matches(model: nn.Module, state: dict, source: str) -> None:
    """Raise one readable error listing every tensor that the config and the weights disagree on."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing from weights: {k} {expected[k]}" for k in sorted(expected.keys() - found.keys())]
    problems += [f"not expected by config: {k} {found[k]}" for k in sorted(found.keys() - expected.keys())]
    problems += [
        f"shape of {k}: config gives {expected[k]}, weights have {found[k]}"
        for k in sorted(expected.keys() & found.keys())
        if expected[k] != found[k]
    ]
    if problems:
        raise CheckpointMismatchError(
            f"config.json of {source} does not match its model.safetensors:\n  " + "\n  ".join(problems)
        )
