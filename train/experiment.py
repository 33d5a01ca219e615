"""Experiments: cross-validation under a protocol, the Table 2 ablations, the final checkpoint.

Data flow (speechbrain-style: preparation in datasets.py, pairing in pairing.py, training in
trainer.py, metrics in protocol.py; this file only wires them together):

    corpora --load--> utterances (+ text corpus) --folds--> train / dev / test utterances
      --pair (own transcripts, or label-matched texts of the matching split)--> BimodalSamples
      --fit--> model --predict per modality--> FoldResult --summarize--> Table 1 / Table 2
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from ser_demo.audio import Normalizer
from ser_demo.model import ModelConfig
from train.datasets import TextSample, Utterance, load_corpus
from train.text_corpora import TEXT_SPLITS, load_text_corpus
from train.pairing import BimodalSample, LabelMatchedPairing, ModalityDropout, natural_pairs
from train.protocol import Fold, FoldResult, evaluate, make_folds, summarize
from train.trainer import FeatureBank, TrainSettings, fit, predict_labels

MODALITY_DROPS = {"both": (False, False), "audio": (True, False), "text": (False, True)}  # (drop text, drop audio)

# Rows of the paper's Table 2 as switches of ModelConfig.
ABLATIONS = {
    "MSCNN-SPU-ATT": {},
    "w/o speaker embedding": {"use_speaker": False},
    "w/o text SPU (max pooling)": {"text_pooling": "max"},
    "w/o SWEM": {"use_swem": False},
    "w/o audio SPU (max pooling)": {"audio_pooling": "max"},
    "w/o attention": {"use_attention": False},
}


@dataclass
class Data:
    """Utterances to split, plus (optionally) texts per split for label-matched pairing."""

    utterances: list[Utterance]
    texts: Optional[dict[str, list[TextSample]]] = None  # {"train", "dev", "test"} -> texts
    reports: list[str] = field(default_factory=list)

    @property
    def pairing(self) -> str:
        if not self.texts:
            return "natural (own transcripts)"
        corpora = sorted({t.corpus for texts in self.texts.values() for t in texts})
        return f"label-matched (audio and text from different corpora; text: {', '.join(corpora)})"


def load_data(audio: Sequence[tuple[str, str]], text: Sequence[tuple[str, str]] = (), **options) -> Data:
    """`audio`: (corpus name, path) pairs. `text`: (text corpus name, path) pairs; each corpus's
    train, dev and test splits are pooled with the other corpora's same split, for pairing."""
    utterances, reports = [], []
    for name, path in audio:
        items, report = load_corpus(name, path, **({"calm_as_neutral": True} if options.get("calm_as_neutral") and name == "ravdess" else {}))
        utterances += items
        reports.append(str(report))
    texts = None
    if text:
        texts = {split: [] for split in TEXT_SPLITS}
        for name, path in text:
            for split in TEXT_SPLITS:
                items, report = load_text_corpus(name, path, split=split)
                texts[split] += items
                reports.append(f"{split}: {report}")
    return Data(utterances, texts, reports)


def samples_for(data: Data, utterances: list[Utterance], split: str, seed: int,
                dropout: ModalityDropout = ModalityDropout()) -> Callable[[int], list[BimodalSample]]:
    """Epoch -> samples of these utterances, with texts of the matching split when pairing."""
    if data.texts:
        pairing = LabelMatchedPairing(utterances, data.texts[split], seed=seed, dropout=dropout)
        return pairing.epoch
    return lambda epoch: natural_pairs(utterances, epoch=epoch, seed=seed, dropout=dropout)


def restrict(samples: list[BimodalSample], modality: str) -> list[BimodalSample]:
    """The same test samples with one modality removed, to score audio-only and text-only use."""
    drop_text, drop_audio = MODALITY_DROPS[modality]
    return [replace(s, text="" if drop_text else s.text, audio_path=None if drop_audio else s.audio_path) for s in samples]


def run_fold(data: Data, fold: Fold, config: ModelConfig, settings: TrainSettings, bank: FeatureBank,
             dropout: ModalityDropout, modalities: Sequence[str], log=print, run_dir: Optional[Path] = None):
    pick = lambda idx: [data.utterances[i] for i in idx]  # noqa: E731
    settings = replace(settings, seed=fold.seed)
    train = samples_for(data, pick(fold.train), "train", fold.seed, dropout)
    dev = samples_for(data, pick(fold.dev), "dev", fold.seed)(0)
    test = samples_for(data, pick(fold.test), "test", fold.seed)(0)
    log(f"{fold.name}: train {len(fold.train)}, dev {len(fold.dev)}, test {len(fold.test)} (held out: {fold.test_group})")
    audio_files = [u.audio_path for u in pick(fold.train) if u.audio_path is not None]
    model, info = fit(config, train, dev, bank, settings, run_dir=run_dir, log=log, audio_files=audio_files)
    normalizer = Normalizer.from_config(model.config)
    results = {}
    for modality in modalities:
        samples = restrict(test, modality)
        predicted = predict_labels(model, samples, bank, normalizer)
        results[modality] = evaluate([s.label for s in samples], predicted, fold, labels=config.labels)
        log(f"  {modality}: WA {results[modality].wa:.3f} UA {results[modality].ua:.3f}")
    return model, results, info


def supported_modalities(config: ModelConfig, dropout: ModalityDropout) -> list[str]:
    if not (config.use_audio and config.use_text):
        return ["audio" if config.use_audio else "text"]
    # Single-modality scores of a bimodal model mean something only if it saw that case in training.
    return ["both"] + (["audio"] if dropout.p_text > 0 else []) + (["text"] if dropout.p_audio > 0 else [])


def cross_validate(data: Data, protocol: str, config: ModelConfig, settings: TrainSettings, bank: FeatureBank,
                   dropout: ModalityDropout, seeds=(0, 1, 2), n_folds=10, n_speaker_groups=5,
                   max_folds: Optional[int] = None, out_dir: Optional[Path] = None, log=print) -> dict:
    """Train and test every fold; returns {modality: Summary} and the per-fold results."""
    folds = make_folds(data.utterances, protocol, seeds=seeds, n_folds=n_folds, n_speaker_groups=n_speaker_groups)
    folds = folds[:max_folds] if max_folds else folds
    modalities = supported_modalities(config, dropout)
    per_modality: dict[str, list[FoldResult]] = {m: [] for m in modalities}
    for fold in folds:
        run_dir = out_dir / "folds" / fold.name.replace("/", "_") if out_dir else None
        _, results, _ = run_fold(data, fold, config, settings, bank, dropout, modalities, log, run_dir)
        for m, r in results.items():
            per_modality[m].append(r)
        if out_dir:
            with open(out_dir / "folds.jsonl", "a") as f:
                f.write(json.dumps({"fold": fold.name, **{m: vars(r) for m, r in results.items()}}) + "\n")
    return {"summaries": {m: summarize(rs) for m, rs in per_modality.items()}, "folds": per_modality}


def make_bank(config: ModelConfig, cache_dir: Path) -> FeatureBank:
    return FeatureBank(config, cache_dir)
