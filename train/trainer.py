"""The training loop of section 4.1: Adam (lr 5e-4), gradient-norm clipping at 1, dropout 0.3,
batch 64, cross-entropy, model selection on the dev fold.

Composes `ser_demo` (features, word vectors, the model) with the data pieces of `train/`; it adds
no model code. Runs on one process, or on several under `torchrun` (DistributedDataParallel over gloo,
on CPUs; one machine or several): every rank draws the same epoch, takes its share of the batches, and
DDP averages the gradients, so N processes train the same model as one with N times the batches.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ser_demo.audio import FeatureParams, Normalizer, mfcc_features
from ser_demo.ingest import AudioInputError, load_audio
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig, collate
from ser_demo.text import WordVectors, load_word_vectors
from train.cache import FeatureCache
from train.pairing import BimodalSample


@dataclass
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 5e-4
    clip_norm: float = 1.0
    seed: int = 0
    select_on: str = "ua"  # dev metric that picks the kept epoch: "ua" or "wa"
    max_frames: int = 800  # crop training clips to 8 s (a random window each epoch) to bound memory
    progress: bool = True


# Part of every cache key: bump it when the way clips are read changes.
INGEST = "trim+peak-v1"


def load_clip(path: Path) -> Optional[np.ndarray]:
    """The audio exactly as the recognizer reads it at inference: 16 kHz mono, edges trimmed,
    peak-normalised. A clip with no speech in it is None: a sample without audio."""
    try:
        return load_audio(path, max_seconds=None, min_seconds=0.0, trim_silence=True)
    except AudioInputError as err:
        warnings.warn(f"{path}: {err} Used as a sample without audio.")
        return None


def clip_features(path: Path, params: FeatureParams) -> np.ndarray:
    """MFCCs of a training clip; 0 frames where it holds no speech."""
    audio = load_clip(path)
    return np.zeros((params.n_features, 0), np.float32) if audio is None else mfcc_features(audio, params)


class FeatureBank:
    """Per audio file: raw MFCC matrices and x-vectors (cached on disk by content); per text:
    word vectors. Built from a model config, so features always match what it will see."""

    def __init__(self, config: ModelConfig, cache_dir: Path, word_vectors: Optional[WordVectors] = None,
                 speaker_embedder=None):
        self.params = FeatureParams(**config.feature_params)
        if config.use_text and word_vectors is None:
            word_vectors = load_word_vectors(config.embeddings)
        if config.use_speaker and speaker_embedder is None:
            from ser_demo.speaker import SpeakerEmbedder

            speaker_embedder = SpeakerEmbedder.from_pretrained(config.speaker_model)
        self.word_vectors, self.speaker_embedder = word_vectors, speaker_embedder
        self.cache = FeatureCache(cache_dir)
        self._mfcc: dict[Path, np.ndarray] = {}
        self._speaker: dict[Path, np.ndarray] = {}
        self._words: dict[str, np.ndarray] = {}
        # what the cached matrices depend on besides the audio: the features and the ingestion
        self._key = {**self.params.to_dict(), "ingest": INGEST}

    def mfcc(self, path: Path) -> np.ndarray:
        if path not in self._mfcc:
            self._mfcc[path] = self.cache.get_or_compute(path, self._key, lambda p: clip_features(p, self.params))
        return self._mfcc[path]

    def speaker(self, path: Path) -> np.ndarray:
        if path not in self._speaker:
            key = {"speaker_model": str(self.speaker_embedder.source), "ingest": INGEST}
            self._speaker[path] = self.cache.get_or_compute(path, key, self._embed_speaker)
        return self._speaker[path]

    def _embed_speaker(self, path: Path) -> np.ndarray:
        audio = load_clip(path)  # no speech: the zero vector, as for a sample without audio
        return np.zeros(self.speaker_embedder.dim, np.float32) if audio is None else self.speaker_embedder.embed(audio)

    def words(self, text: str) -> np.ndarray:
        if text not in self._words:
            self._words[text] = self.word_vectors.encode(text).vectors
        return self._words[text]


def make_batch(
    samples: Sequence[BimodalSample],
    bank: FeatureBank,
    config: ModelConfig,
    normalizer: Normalizer,
    rng: Optional[random.Random] = None,
    max_frames: Optional[int] = None,
) -> dict[str, torch.Tensor]:
    """Pad a list of samples into model inputs; a dropped modality becomes length 0."""
    mfccs, words, speakers = [], [], []
    for s in samples:
        m = None
        if config.use_audio and s.audio_path is not None:
            m = normalizer(bank.mfcc(s.audio_path))
            if max_frames and m.shape[1] > max_frames:  # a random window: augmentation for free
                start = (rng or random).randrange(m.shape[1] - max_frames + 1)
                m = m[:, start : start + max_frames]
        mfccs.append(m)
        speakers.append(bank.speaker(s.audio_path) if config.use_speaker and s.audio_path is not None else None)
        words.append(bank.words(s.text) if config.use_text and s.text else None)
    return collate(config, mfccs, words, speakers)


def label_tensor(samples: Sequence[BimodalSample], labels: Sequence[str]) -> torch.Tensor:
    index = {label: i for i, label in enumerate(labels)}
    return torch.tensor([index[s.label] for s in samples])


@torch.no_grad()
def predict_labels(model, samples, bank, normalizer, batch_size: int = 64) -> list[str]:
    model.eval()
    config, out = model.config, []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        logits = model(**make_batch(chunk, bank, config, normalizer)).logits
        out += [config.labels[j] for j in logits.argmax(-1).tolist()]
    return out


def dev_metrics(model, samples, bank, normalizer) -> dict[str, float]:
    from train.protocol import unweighted_accuracy, weighted_accuracy

    truth = [s.label for s in samples]
    predicted = predict_labels(model, samples, bank, normalizer)
    return {"wa": weighted_accuracy(truth, predicted), "ua": unweighted_accuracy(truth, predicted, model.config.labels)}


# --- distributed helpers: no-ops on a single process -----------------------------------------


def distributed_setup() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")  # the loop runs on the CPU; GPUs would need devices moved too
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


# --- resumable state: safetensors + JSON, never pickle ------------------------------------------


def save_state(run_dir: Path, model, optimizer, best_state, info: dict) -> None:
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v.contiguous() for k, v in best_state.items()}
    for i, state in optimizer.state_dict()["state"].items():
        tensors |= {f"adam.{i}.{k}": torch.as_tensor(v).reshape(-1) if k == "step" else v for k, v in state.items()}
    tmp = run_dir / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, run_dir / "state.safetensors")
    (run_dir / "state.json").write_text(json.dumps(info, indent=1))


def load_state(run_dir: Path, model, optimizer) -> Optional[tuple[dict, dict]]:
    if not (run_dir / "state.json").is_file():
        return None
    tensors = load_file(str(run_dir / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, i, name = key.split(".", 2)
            opt["state"].setdefault(int(i), {})[name] = value.reshape(()) if name == "step" else value
    optimizer.load_state_dict(opt)
    return best, json.loads((run_dir / "state.json").read_text())


def fit(
    config: ModelConfig,
    train_epoch: Callable[[int], list[BimodalSample]],
    dev: Sequence[BimodalSample],
    bank: FeatureBank,
    settings: TrainSettings = TrainSettings(),
    run_dir: Optional[Path] = None,
    log: Callable[[str], None] = print,
    audio_files: Optional[Sequence[Path]] = None,
) -> tuple[MSCNN_SPU_ATT, dict]:
    """Train a model; returns the epoch with the best dev score (the last one without a dev set).

    `train_epoch(e)` gives epoch e's samples (label-matched pairs are re-drawn each epoch).
    Normalisation statistics are fitted on `audio_files` (default: the audio of epoch 0, which
    modality dropout has thinned) and stored in the config."""
    rank, world = distributed_setup()
    torch.manual_seed(settings.seed)
    if audio_files is None:
        audio_files = {s.audio_path for s in train_epoch(0) if s.audio_path is not None}
    if config.use_audio and config.normalizer is None:
        frames = [bank.mfcc(p) for p in sorted(set(audio_files))]
        config = replace(config, normalizer=Normalizer.fit(frames).to_dict())
    normalizer = Normalizer.from_config(config)
    model = MSCNN_SPU_ATT(config)
    trainable = model
    if world > 1:
        trainable = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    history, best_score, start_epoch = [], -math.inf, 0
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        resumed = load_state(run_dir, model, optimizer)
        if resumed is not None:
            best_state, info = resumed
            history, best_score, start_epoch = info["history"], info["best_score"], info["epoch"] + 1
            log(f"resumed from {run_dir} at epoch {start_epoch}")

    for epoch in range(start_epoch, settings.epochs):
        started = time.perf_counter()
        samples = train_epoch(epoch)
        rng = random.Random(f"{settings.seed}:{epoch}")  # same order on every rank
        order = list(range(len(samples)))
        rng.shuffle(order)
        batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        batches = batches[: len(batches) // world * world] if world > 1 else batches
        mine = batches[rank::world]
        model.train()
        total_loss = 0.0
        progress = _progress(mine, f"epoch {epoch + 1}/{settings.epochs}", settings.progress and rank == 0)
        for batch_indices in progress:
            chunk = [samples[i] for i in batch_indices]
            inputs = make_batch(chunk, bank, config, normalizer, rng, settings.max_frames)
            loss = F.cross_entropy(trainable(**inputs).logits, label_tensor(chunk, config.labels))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
            optimizer.step()
            total_loss += loss.item()
        scores = dev_metrics(model, list(dev), bank, normalizer) if dev else {"wa": 0.0, "ua": 0.0}
        record = {"epoch": epoch, "loss": total_loss / max(len(mine), 1), **scores, "seconds": time.perf_counter() - started}
        history.append(record)
        improved = scores[settings.select_on] > best_score or not dev
        if improved:
            best_score = scores[settings.select_on]
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if rank == 0:
            log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}) + (" *" if improved else ""))
            if run_dir is not None:
                save_state(run_dir, model, optimizer, best_state, {"epoch": epoch, "best_score": best_score, "history": history, "settings": asdict(settings)})
    model.load_state_dict(best_state)
    return model.eval(), {"history": history, "best_dev": best_score, "select_on": settings.select_on}


def _progress(items, description: str, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=description, leave=False)
