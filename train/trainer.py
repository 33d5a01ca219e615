"""The training loop of section 4.1: Adam (lr 5e-4), gradient-norm clipping at 1, dropout 0.3,
batch 64, cross-entropy, model selection on the dev fold.

Composes `ser_demo` (the model and its batched inputs) with the data pieces of `train/` (the
feature bank of `features.py`, the pairs, the batches of `batches.py`, the words-consistency term
of `consistency.py`, the speaker adversary of `adversary.py`); it adds
no model code. Runs on the CPU or a GPU
(`TrainSettings.device`, see `ser_demo.devices`; bfloat16 autocast on GPUs that have it), on one
process or on several under `torchrun` (DistributedDataParallel over NCCL when every rank has a
GPU, else gloo; one machine or several): every rank draws the same epoch, takes its share of the
batches, and DDP averages the gradients, so N processes train the same model as one with N times
the batches.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ser_demo.audio import Normalizer
from ser_demo.devices import autocast, init_distributed, to_device
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.words_gate import words_are_read
from train.adversary import SpeakerAdversary, reversal_scale
from train.augment import variants_of
from train.batches import label_tensor, make_batch
from train.consistency import words_consistency
from train.features import FeatureBank
from train.pairing import BimodalSample
from train.resume import load_state, save_state


@dataclass
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 5e-4
    clip_norm: float = 1.0
    seed: int = 0  # initial weights, dropout, batch order (cv: the fold's seed + 1000 × --init-seed)
    select_on: str = "ua"  # dev metric that picks the kept epoch: "ua" or "wa"
    # None: training sees whole clips, as evaluation and the app do; a number crops longer
    # clips to a random window of that many MFCC frames (memory bound for long corpora)
    max_frames: Optional[int] = None
    progress: bool = True
    # The recipe for new speakers (each measured by speaker-independent CV, see README):
    weight_decay: float = 0.0  # L2 on every weight (Adam's weight_decay)
    label_smoothing: float = 0.0
    # Weight of a KL term that keeps words carrying no emotion (an acted script, a neutral sentence
    # paired with any class) from moving the voice's answer: on those samples the prediction with
    # the words is pulled towards the same model's prediction from the audio alone.
    consistency: float = 0.0
    # What the term trains (CONSISTENCY_TRAINS): "all" the model; "fusion": the words and the layers
    # after the fusion, never the audio branch; "words": only what the answer from the audio alone
    # does not depend on, which is then left to the cross-entropy.
    consistency_trains: str = "all"
    time_masks: int = 0  # SpecAugment: masked spans per clip, each up to `time_mask_fraction` of it
    time_mask_fraction: float = 0.125
    feature_masks: int = 0  # SpecAugment: masked feature bands per clip and front-end
    feature_mask_fraction: float = 0.1  # of the front-end's dimensions (~10 of 96, ~38 of 384)
    ema: float = 0.0  # weights kept as an exponential moving average (0: off; e.g. 0.99 per step)
    # From this epoch on (1-based), the kept weights are the mean of the epoch-end weights (the EMA's
    # when on): stochastic weight averaging (Izmailov et al. 2018) over the constant learning rate's
    # last epochs, as speech recipes average their last checkpoints. None: off.
    average_from: Optional[int] = None
    # From this epoch on (1-based), the learning rate falls linearly, epoch by epoch: over n such
    # epochs it is n/(n+1), ..., 1/(n+1) of itself (a constant rate, then a linear decay, as
    # warmup-stable-decay schedules do). None: constant, as in the paper.
    decay_from: Optional[int] = None
    speed_factors: tuple = ()  # speed perturbation (e.g. 0.9, 1.1): cached variants of each clip
    noise_snr_db: Optional[float] = None  # additive white noise at this SNR: one more cached variant
    augment_share: float = 0.5  # share of training clips per epoch that hear a variant, not the clean clip
    patience: Optional[int] = None  # stop after this many epochs without a better dev score
    # At most this many clips of one speaker per epoch, drawn anew each epoch (None: all). TESS has
    # 800 clips per voice and RAVDESS 28: uncapped, two voices make two thirds of every epoch.
    speaker_cap: Optional[int] = None
    speaker_adversary: float = 0.0  # weight of the reversed speaker loss (train/adversary.py); 0: off
    device: str = "auto"  # auto (CUDA when there is a GPU), cpu, cuda, cuda:N; see ser_demo.devices
    mixed_precision: bool = True  # bfloat16 autocast, only on GPUs that support it

    def __post_init__(self):
        if self.speaker_cap is not None and self.speaker_cap < 1:
            raise ValueError(f"speaker_cap is a number of clips (>= 1), not {self.speaker_cap}")
        for name in ("average_from", "decay_from"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= self.epochs:
                raise ValueError(f"{name} is an epoch from 1 to {self.epochs} (epochs), not {value}")


def learning_rate_at(epoch: int, settings: TrainSettings) -> float:
    """The learning rate of epoch `epoch` (0-based): constant, then, with `decay_from`, a linear
    fall over the n epochs left, n/(n+1) of it first and 1/(n+1) last. A function of the epoch
    alone, so a resumed run needs no scheduler state."""
    if settings.decay_from is None or epoch + 1 < settings.decay_from:
        return settings.learning_rate
    return settings.learning_rate * (settings.epochs - epoch) / (settings.epochs - settings.decay_from + 2)


def cap_per_speaker(samples: Sequence[BimodalSample], cap: Optional[int], rng: random.Random) -> list[BimodalSample]:
    """At most `cap` samples of each speaker (a random draw), in their order; samples without a
    speaker (texts alone) all stay."""
    if cap is None:
        return list(samples)
    by_speaker: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.speaker:
            by_speaker.setdefault(s.speaker, []).append(i)
    dropped = set()
    for speaker in sorted(by_speaker):
        indices = by_speaker[speaker]
        if len(indices) > cap:
            dropped.update(set(indices) - set(rng.sample(indices, cap)))
    return [s for i, s in enumerate(samples) if i not in dropped]


@torch.no_grad()
def predict_parts(model, samples, bank, normalizer: Optional[Normalizer] = None,
                  batch_size: int = 64) -> dict[str, np.ndarray]:
    """Class probabilities of whole clips, (n, n_labels) each, with the normalisers the config
    stores (or the MFCC `normalizer` given): "probabilities", the model's answer, and with a
    statistics head its two parts, "network" and "head", and "heard" (n,), the rows that mix them;
    with a words gate, "set_aside" (n,): the rows whose words it set aside (the voice answered alone)."""
    model.eval()
    config, parts = model.config, {}
    normalizer = normalizer or Normalizer.from_config(config)
    gated = gate_words(model, samples, bank, normalizer)
    set_aside = np.array([bool(s.text) and not g.text for s, g in zip(samples, gated)], dtype=bool)
    samples = gated
    encoder_normalizer = Normalizer.encoder_from_config(config)
    device = next(model.parameters()).device
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        batch = make_batch(chunk, bank, config, normalizer, encoder_normalizer=encoder_normalizer, statistics=True)
        out = model(**to_device(batch, device))
        found = {"probabilities": out.logits, "network": out.network_logits, "head": out.head_logits}
        for name, logits in found.items():
            if logits is not None:
                parts.setdefault(name, []).append(logits.softmax(-1).cpu().numpy())
        if out.head_heard is not None:
            parts.setdefault("heard", []).append(out.head_heard.cpu().numpy())
    if not parts:
        return {"probabilities": np.zeros((0, len(config.labels)), np.float32)}
    parts = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    if config.words_gate is not None:
        parts["set_aside"] = set_aside
    return parts


def gate_words(model, samples, bank, normalizer: Optional[Normalizer] = None) -> list:
    """The words gate (`ser_demo.words_gate`), as the app applies it: a clip with audio and words
    keeps its words only if the text branch, reading them alone, is sure of them; else the voice
    answers alone. Unchanged when the checkpoint has no gate."""
    rows = [i for i, s in enumerate(samples) if s.audio_path is not None and s.text]
    if model.config.words_gate is None or not rows:
        return samples
    text_alone = predict_parts(model, [replace(samples[i], audio_path=None) for i in rows], bank, normalizer)
    config = model.config
    read = words_are_read(text_alone["probabilities"], config.words_gate, config.labels, config.words_gate_labels)
    kept = list(samples)
    for i, words_read in zip(rows, read):
        if not words_read:
            kept[i] = replace(kept[i], text="")
    return kept


def predict_probabilities(model, samples, bank, normalizer: Optional[Normalizer] = None,
                          batch_size: int = 64) -> np.ndarray:
    """(n, n_labels) class probabilities of whole clips (see `predict_parts`)."""
    return predict_parts(model, samples, bank, normalizer, batch_size)["probabilities"]


def most_likely(labels: Sequence[str], probabilities: np.ndarray) -> list[str]:
    """Each row's most probable label."""
    return [labels[j] for j in np.asarray(probabilities).argmax(-1).tolist()]


def predict_labels(model, samples, bank, normalizer: Optional[Normalizer] = None, batch_size: int = 64) -> list[str]:
    return most_likely(model.config.labels, predict_probabilities(model, samples, bank, normalizer, batch_size))


def dev_metrics(model, samples, bank, normalizer: Optional[Normalizer] = None) -> dict[str, float]:
    from train.protocol import unweighted_accuracy, weighted_accuracy

    truth = [s.label for s in samples]
    predicted = predict_labels(model, samples, bank, normalizer)
    return {"wa": weighted_accuracy(truth, predicted), "ua": unweighted_accuracy(truth, predicted, model.config.labels)}


# --- distributed helpers: no-ops on a single process -----------------------------------------


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def fit(
    config: ModelConfig,
    train_epoch: Callable[[int], list[BimodalSample]],
    dev: Sequence[BimodalSample],
    bank: FeatureBank,
    settings: TrainSettings = TrainSettings(),
    run_dir: Optional[Path] = None,
    log: Callable[[str], None] = print,
    labelled_clips: Optional[Sequence[tuple[Path, str]]] = None,
) -> tuple[MSCNN_SPU_ATT, dict]:
    """Train a model; returns the epoch with the best dev score (the last one without a dev set).

    `train_epoch(e)` gives epoch e's samples (label-matched pairs are re-drawn each epoch).
    `labelled_clips`: the training clips, (audio path, label) (default: the audio of epoch 0,
    which modality dropout has thinned). Normalisation statistics are fitted on their audio and
    stored in the config; a config with a statistics head trains the network alone, and the head
    is then fitted on them."""
    head, config = config.statistics_head, replace(config, statistics_head=None)
    rank, world, device, group = init_distributed(settings.device)
    torch.manual_seed(settings.seed)
    if labelled_clips is None:
        labelled_clips = sorted({(s.audio_path, s.label) for s in train_epoch(0) if s.audio_path is not None})
    audio_files = sorted({path for path, _ in labelled_clips})
    if config.use_audio and "mfcc" in config.audio_frontends and config.normalizer is None:
        config = replace(config, normalizer=Normalizer.fit([bank.mfcc(p) for p in audio_files]).to_dict())
    if config.use_audio and "whisper" in config.audio_frontends:
        # The checkpoint records its encoder, and normalises states by the training clips'.
        config = replace(config, encoder=bank.encoder.spec())
        if config.encoder_normalizer is None:
            config = replace(config, encoder_normalizer=Normalizer.fit([bank.encoder_states(p) for p in audio_files]).to_dict())
    normalizer = Normalizer.from_config(config)
    encoder_normalizer = Normalizer.encoder_from_config(config)
    variants = variants_of(settings.speed_factors, settings.noise_snr_db)
    model = MSCNN_SPU_ATT(config).to(device)
    trainable = model
    if world > 1:
        trainable = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, process_group=group)
    adversary = None
    if settings.speaker_adversary:  # reads the SPU vectors, as the classifier does
        if not model.n_audio_statistics:
            raise ValueError("speaker-adversarial training needs a model that reads audio (use_audio)")
        speakers = [s.speaker for s in train_epoch(0) if s.audio_path is not None]
        adversary = SpeakerAdversary(model.n_audio_statistics, speakers).to(device)
    trained = list(model.parameters()) + (list(adversary.parameters()) if adversary is not None else [])
    optimizer = torch.optim.Adam(trained, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    # Weight averaging steadies a model whose dev score swings from epoch to epoch on new voices;
    # the average is what gets scored and kept.
    averaged = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_update(settings.ema)) if settings.ema else None
    scored = averaged.module if averaged is not None else model
    best_state = {k: v.clone() for k, v in scored.state_dict().items()}
    history, best_score, start_epoch, since_best = [], None, 0, 0  # best_score: None until a dev score
    n_averaged = 0  # epoch ends in the running mean that `best_state` holds once averaging starts
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        resumed = load_state(run_dir, model, optimizer, averaged, log, adversary)
        if resumed is not None:
            best_state, info = resumed
            history, best_score, start_epoch = info["history"], info["best_score"], info["epoch"] + 1
            n_averaged = info.get("n_averaged", 0)
            log(f"resumed from {run_dir} at epoch {start_epoch}")

    for epoch in range(start_epoch, settings.epochs):
        started = time.perf_counter()
        samples = cap_per_speaker(train_epoch(epoch), settings.speaker_cap, random.Random(f"cap:{settings.seed}:{epoch}"))
        rng = random.Random(f"{settings.seed}:{epoch}")  # same order on every rank
        order = list(range(len(samples)))
        rng.shuffle(order)
        batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        batches = batches[: len(batches) // world * world] if world > 1 else batches
        mine = batches[rank::world]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(epoch, settings)
        model.train()
        total_loss = speaker_loss = 0.0
        progress = _progress(mine, f"epoch {epoch + 1}/{settings.epochs}", settings.progress and rank == 0)
        for step, batch_indices in enumerate(progress):
            chunk = [samples[i] for i in batch_indices]
            heard = [rng.choice(variants) if variants and rng.random() < settings.augment_share else None for _ in chunk]
            inputs = to_device(make_batch(chunk, bank, config, normalizer, rng, settings, encoder_normalizer, heard), device)
            with autocast(device, settings.mixed_precision):
                out = trainable(**inputs)
                loss = F.cross_entropy(out.logits.float(), label_tensor(chunk, config.labels).to(device),
                                       label_smoothing=settings.label_smoothing)
                if settings.consistency:
                    term = words_consistency(model, inputs, out, chunk, settings.consistency_trains)
                    loss = loss + settings.consistency * term
                if adversary is not None:
                    scale = reversal_scale(settings.speaker_adversary, (epoch + step / len(mine)) / settings.epochs)
                    who = adversary.loss(out.audio_statistics, [s.speaker for s in chunk],
                                         [s.audio_path is not None for s in chunk], scale)
            optimizer.zero_grad()
            (loss + who if adversary is not None else loss).backward()
            if adversary is not None:
                speaker_loss += who.item()
                if world > 1:  # outside DDP: average its gradients by hand (zero where a rank had no clip)
                    for p in adversary.parameters():
                        p.grad = torch.zeros_like(p) if p.grad is None else p.grad
                        dist.all_reduce(p.grad)
                        p.grad /= world
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total_loss += loss.item()
        scores = dev_metrics(scored, list(dev), bank, normalizer) if dev else {}  # no dev: no score to log
        record = {"epoch": epoch, "loss": total_loss / max(len(mine), 1), **scores, "seconds": time.perf_counter() - started}
        if adversary is not None:  # the adversary's own loss: it rises as the branch forgets the voices
            record["speaker_loss"] = speaker_loss / max(len(mine), 1)
        if settings.decay_from is not None:
            record["lr"] = optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
        history.append(record)
        improved = not dev or best_score is None or scores[settings.select_on] > best_score
        since_best = 0 if improved else since_best + 1
        if settings.average_from is not None and epoch + 1 >= settings.average_from:
            n_averaged += 1  # the average is kept, whatever the dev score of this epoch
            record["averaged"] = n_averaged  # epochs in the kept mean
            best_state = running_mean(best_state if n_averaged > 1 else None, scored.state_dict(), n_averaged)
        elif improved:
            best_score = scores.get(settings.select_on)
            best_state = {k: v.clone() for k, v in scored.state_dict().items()}
        if rank == 0:
            log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
                + (" *" if improved or n_averaged else ""))
            if run_dir is not None:
                save_state(run_dir, model, optimizer, best_state, {"epoch": epoch, "best_score": best_score, "history": history,
                                                                  "n_averaged": n_averaged, "settings": asdict(settings)},
                           averaged, adversary)
        if settings.patience is not None and dev and since_best >= settings.patience:
            log(f"no better dev {settings.select_on} for {since_best} epochs: stopping early")
            break
    model.load_state_dict(best_state)
    if n_averaged and dev:  # what is kept is the average: its own dev score is the one to report
        best_score = dev_metrics(model, list(dev), bank, normalizer)[settings.select_on]
        log(f"average of the last {n_averaged} epochs: dev {settings.select_on} {best_score:.4f}")
    if head:
        from train.statistics_head import attach_statistics_head

        model = attach_statistics_head(model, head, labelled_clips, bank, log)
    return model.eval(), {"history": history, "best_dev": best_score, "select_on": settings.select_on,
                          "n_averaged": n_averaged}


def running_mean(mean: Optional[dict], current: dict, n: int) -> dict:
    """The mean of n state dicts, from the mean of the first n - 1 (None for n = 1) and the n-th.
    Tensors that are not floating point (counters) take the latest value."""
    if mean is None:
        return {k: v.detach().clone() for k, v in current.items()}
    return {k: mean[k] + (v.detach() - mean[k]) / n if v.is_floating_point() else v.detach().clone()
            for k, v in current.items()}


def ema_update(decay: float):
    """Exponential moving average with a warm-up: the decay is min(decay, (1 + n) / (10 + n))
    after n updates (as TensorFlow's ExponentialMovingAverage), so a short run is not averaged
    back towards its random initial weights."""
    def update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return d * averaged + (1.0 - d) * current

    return update


def _progress(items, description: str, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=description, leave=False)
