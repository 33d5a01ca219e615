"""Experiments: cross-validation under a protocol, the Table 2 ablations, the final checkpoint.

Data flow (speechbrain-style: preparation in datasets.py, pairing in pairing.py, features in
features.py, training in trainer.py, metrics in protocol.py; this file only wires them together):

    corpora --load--> utterances (+ text corpus) --folds--> train / dev / test utterances
      --pair (own transcripts, or label-matched texts of the matching split)--> BimodalSamples
      --fit--> model --predict per modality--> FoldResult --summarize--> Table 1 / Table 2
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from ser_demo.model import ModelConfig
from train.datasets import TextSample, Utterance, load_corpus
from train.features import FeatureBank
from train.text_corpora import TEXT_SPLITS, load_text_corpus
from train.pairing import (BimodalSample, LabelMatchedPairing, ModalityDropout, class_text_pairs, natural_pairs,
                           text_samples)
from train.protocol import Fold, FoldResult, evaluate, make_folds, summarize
from train import predictions
from train.trainer import TrainSettings, fit, is_main_process, most_likely, predict_parts
from train.transcripts import words_read_with_the_voice

MODALITY_DROPS = {"both": (False, False), "audio": (True, False), "text": (False, True)}  # (drop text, drop audio)
# What each test setting means. Test clips are always paired with their *own* words (the
# corpus transcript, or Whisper's with --transcripts asr): a label-matched text would carry the
# answer. The text branch is scored separately, on the text corpora's test sentences.
SETTINGS = {
    "audio": "audio only",
    "both": "audio + the clip's words",
    "text": "the clip's words only",
    "text corpus": "text only (text corpora's test sentences)",
    # `cv --class-texts`: words that do carry an emotion (the text corpora's test sentences). A
    # text of the clip's own class carries its label: these measure the text branch and what the
    # words gate lets through, never what a user gets.
    "own-class text": "audio + a text of the clip's own class (label-matched: measures the text branch)",
    "other-class text": "audio + a text of another class (measures the text branch)",
}
CLASS_TEXTS = {"own-class text": True, "other-class text": False}

# Rows of the paper's Table 2 as switches of ModelConfig.
ABLATIONS = {
    "MSCNN-SPU-ATT": {},
    "w/o speaker embedding": {"use_speaker": False},
    "w/o text SPU (max pooling)": {"text_pooling": "max"},
    "w/o SWEM": {"use_swem": False},
    "w/o audio SPU (max pooling)": {"audio_pooling": "max"},
    "w/o attention": {"use_attention": False},
}

DEV_TRAINED = ", dev trained on"  # protocol suffix of a model that also trained on its dev speakers (--no-dev)


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
                dropout: ModalityDropout = ModalityDropout(), own_words: float = 0.0,
                extra_texts: int = 0, neutral_words: float = 0.0) -> Callable[[int], list[BimodalSample]]:
    """Epoch -> samples of these utterances, with texts of the matching split when pairing
    (a share `own_words` keeping their own transcripts, plus `extra_texts` text-only samples)."""
    if data.texts:
        pairing = LabelMatchedPairing(utterances, data.texts[split], seed=seed, dropout=dropout,
                                      own_words=own_words, extra_texts=extra_texts, neutral_words=neutral_words)
        return pairing.epoch
    return lambda epoch: natural_pairs(utterances, epoch=epoch, seed=seed, dropout=dropout)


def restrict(samples: list[BimodalSample], modality: str) -> list[BimodalSample]:
    """The same test samples with one modality removed, to score audio-only and text-only use."""
    drop_text, drop_audio = MODALITY_DROPS[modality]
    return [replace(s, text="" if drop_text else s.text, audio_path=None if drop_audio else s.audio_path) for s in samples]


def score(samples: Sequence[BimodalSample], predicted: Sequence[str], fold: Fold, labels, key: str,
          per_corpus: bool) -> dict[str, FoldResult]:
    """FoldResults of one test setting: overall under `key`, and per corpus as "key [corpus]"."""
    truth = [s.label for s in samples]
    results = {key: evaluate(truth, predicted, fold, labels=labels)}
    corpora = sorted({s.corpus for s in samples})
    if per_corpus and len(corpora) > 1:
        for corpus in corpora:
            keep = [i for i, s in enumerate(samples) if s.corpus == corpus]
            results[f"{key} [{corpus}]"] = evaluate([truth[i] for i in keep], [predicted[i] for i in keep], fold, labels=labels)
    return results


def text_corpus_samples(data: Data, split: str = "test") -> list[BimodalSample]:
    """The text corpora's sentences of one split, as text-only samples."""
    return text_samples((data.texts or {}).get(split, []), split)


def dev_samples(data: Data, utterances: list[Utterance], seed: int) -> list[BimodalSample]:
    """What model selection scores: the dev clips with their own words (real use, never a
    label-carrying text) plus as many of the text corpora's dev sentences (the text branch)."""
    texts = text_corpus_samples(data, "dev")
    random.Random(f"dev-texts:{seed}").shuffle(texts)
    return natural_pairs(utterances, epoch=0, seed=seed) + texts[: len(utterances)]


def run_fold(data: Data, fold: Fold, config: ModelConfig, settings: TrainSettings, bank: FeatureBank,
             dropout: ModalityDropout, modalities: Sequence[str], log=print, run_dir: Optional[Path] = None,
             baselines: Sequence[str] = (), per_corpus: bool = True, own_words: float = 0.0, extra_texts: int = 0,
             neutral_words: float = 0.0, train_on_dev: bool = False):
    """One fold: fit, then score each test setting (and the baselines). `train_on_dev` trains the
    model on the dev speakers too and keeps its last epoch, as `fit --no-dev` makes a checkpoint;
    its scores then name that protocol. The baselines pick their L2 on the dev speakers after
    training on the others, and then (`train_on_dev`) train on the dev speakers too, as the model did."""
    pick = lambda idx: [data.utterances[i] for i in idx]  # noqa: E731
    model_fold = replace(fold, protocol=fold.protocol + DEV_TRAINED) if train_on_dev else fold
    # the fold's seed deals its pairings; --init-seed N draws other weights for the same fold
    settings = replace(settings, seed=fold.seed + 1000 * settings.seed)
    trained_on = fold.train + fold.dev if train_on_dev else fold.train
    train = samples_for(data, pick(trained_on), "train", fold.seed, dropout, own_words, extra_texts, neutral_words)
    dev = [] if train_on_dev else dev_samples(data, pick(fold.dev), fold.seed)
    tested = pick(fold.test)
    test = natural_pairs(tested, epoch=0, seed=fold.seed)  # the clips with their own words
    # with the voice, as the app reads them: Whisper's words it was unsure of left out
    test_with_voice = natural_pairs(words_read_with_the_voice(tested), epoch=0, seed=fold.seed)
    log(f"{model_fold.name}: train {len(trained_on)}, dev {len(fold.dev) if dev else 0}, test {len(fold.test)} "
        f"(held out: {fold.test_group})")
    unsure = sum(u.unsure_words for u in tested)
    if unsure:
        log(f"  {unsure} test clips with Whisper's words it was unsure of: scored with the voice alone when the voice is read")
    clips = [(u.audio_path, u.label) for u in pick(trained_on) if u.audio_path is not None]
    model, info = fit(config, train, dev, bank, settings, run_dir=run_dir, log=log, labelled_clips=clips)
    results, answers = {}, {}
    for modality in modalities:
        if modality == "text corpus":
            samples = text_corpus_samples(data)
        elif modality in CLASS_TEXTS:
            samples = class_text_pairs(tested, data.texts["test"], fold.seed, own_class=CLASS_TEXTS[modality])
        else:
            samples = [s for s in restrict(test_with_voice if modality == "both" else test, modality)
                       if modality != "text" or s.text]
        if not samples:
            continue
        parts = predict_parts(model, samples, bank)
        predicted = most_likely(config.labels, parts["probabilities"])
        results.update(score(samples, predicted, model_fold, config.labels, modality, per_corpus))
        if modality != "text corpus":  # thousands of sentences, and no audio for a head to mix in
            answers[modality] = predictions.setting_record(samples, parts)
        if "set_aside" in parts and parts["set_aside"].any():
            log(f"  {SETTINGS[modality]}: the words gate set aside the words of {int(parts['set_aside'].sum())} of "
                f"{len(samples)} clips ({config.words_gate_rule}): the voice answered alone")
        log(f"  {SETTINGS[modality]}: WA {results[modality].wa:.3f} UA {results[modality].ua:.3f}")
    if run_dir is not None:
        predictions.save(run_dir, model_fold, config.labels, answers)
        if is_main_process():
            save_fold_model(run_dir, model, model_fold, sorted({u.speaker for u in tested}))
    if baselines:
        from train.baselines import baseline_predictions

        audio_test = [s for s in test if s.audio_path is not None]
        for name in baselines:
            predicted = baseline_predictions(name, bank, config.labels, pick(fold.train), pick(fold.dev), audio_test, log,
                                             refit_on_dev=train_on_dev)
            results.update(score(audio_test, predicted, model_fold, config.labels, f"baseline:{name}", per_corpus))
            log(f"  baseline {name}: WA {results[f'baseline:{name}'].wa:.3f} UA {results[f'baseline:{name}'].ua:.3f}")
    return model, results, info


def save_fold_model(run_dir: Path, model, fold: Fold, test_speakers: Sequence[str]) -> Path:
    """The fold's trained model as a checkpoint folder, `RUN/folds/FOLD/model/` (statistics head
    included), with `fold.json` naming the speakers it never heard: any command that takes a
    checkpoint can then study the recipe on voices it never heard (`train faithfulness
    --checkpoint RUN/folds/FOLD/model --speakers ...`), which the bundled checkpoint, trained on
    every shared speaker, cannot show."""
    folder = run_dir / "model"
    model.save_pretrained(folder)
    (folder / "fold.json").write_text(json.dumps({"fold": fold.name, "protocol": fold.protocol,
                                                  "test_speakers": list(test_speakers)}, indent=1))
    return folder


def supported_modalities(config: ModelConfig, dropout: ModalityDropout, has_text_corpus: bool = False,
                         class_texts: bool = False) -> list[str]:
    """Test settings that mean something for this model (see SETTINGS); `class_texts` adds the
    clips paired with texts of their own and of another class (needs the text corpora)."""
    text_corpus = ["text corpus"] if has_text_corpus else []
    if not (config.use_audio and config.use_text):
        return ["audio"] if config.use_audio else ["text"] + text_corpus
    # Single-modality scores of a bimodal model mean something only if it saw that case in training.
    return ((["audio"] if dropout.p_text > 0 else []) + ["both"] + (["text"] + text_corpus if dropout.p_audio > 0 else [])
            + (list(CLASS_TEXTS) if class_texts and has_text_corpus else []))


def cross_validate(data: Data, protocol: str, config: ModelConfig, settings: TrainSettings, bank: FeatureBank,
                   dropout: ModalityDropout, seeds=(0, 1, 2), n_folds=10, n_speaker_groups=5,
                   max_folds: Optional[int] = None, out_dir: Optional[Path] = None, log=print,
                   baselines: Sequence[str] = (), own_words: float = 0.0, extra_texts: int = 0,
                   neutral_words: float = 0.0, train_on_dev: bool = False, class_texts: bool = False) -> dict:
    """Train and test every fold; returns {setting: Summary} and the per-fold results. Settings
    are the keys of SETTINGS, "baseline:NAME", and each of them per corpus as "KEY [corpus]"."""
    folds = make_folds(data.utterances, protocol, seeds=seeds, n_folds=n_folds, n_speaker_groups=n_speaker_groups)
    folds = folds[:max_folds] if max_folds else folds
    modalities = supported_modalities(config, dropout, bool(data.texts), class_texts)
    per_modality: dict[str, list[FoldResult]] = {}
    for fold in folds:
        folder = fold.name.replace("/", "_") + ("_dev-trained" if train_on_dev else "")  # never resume the other kind
        run_dir = out_dir / "folds" / folder if out_dir else None
        _, results, _ = run_fold(data, fold, config, settings, bank, dropout, modalities, log, run_dir, baselines,
                                 own_words=own_words, extra_texts=extra_texts, neutral_words=neutral_words,
                                 train_on_dev=train_on_dev)
        for m, r in results.items():
            per_modality.setdefault(m, []).append(r)
        if out_dir:
            record_fold(out_dir / "folds.jsonl", {"fold": fold.name, **{m: vars(r) for m, r in results.items()}})
    return {"summaries": {m: summarize(rs) for m, rs in per_modality.items()}, "folds": per_modality}


def fold_records(path: Path) -> dict[str, dict]:
    """folds.jsonl as {fold name: its record}, one per fold, the last line of a fold winning: a
    resumed run scores its finished folds again, and files written before `record_fold` repeat them."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return {record["fold"]: record for record in map(json.loads, lines)}


def record_fold(path: Path, record: dict) -> None:
    """Add one fold's results to folds.jsonl, in place of an earlier line of the same fold, so a
    report counts each fold once."""
    records = fold_records(path) | {record["fold"]: record}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    os.replace(tmp, path)


def make_bank(config: ModelConfig, cache_dir: Path) -> FeatureBank:
    return FeatureBank(config, cache_dir)
