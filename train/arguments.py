"""The arguments the training commands share, and what they build: the argument groups (data,
model and training, device, protocol) and, from parsed arguments, the ModelConfig (`--set`), the
TrainSettings, the corpora with their transcripts (own, or Whisper's) and the model card's list of
training data with its licences. `python -m train` (train/__main__.py) composes them into commands.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path

from train.pairing import CONSISTENCY_TRAINS

LICENCES = {
    "ravdess": ("RAVDESS", "cc-by-nc-sa-4.0", "https://zenodo.org/record/1188976"),
    "tess": ("TESS", "cc-by-nc-nd-4.0", "https://tspace.library.utoronto.ca/handle/1807/24487"),
    "crema-d": ("CREMA-D", "odbl", "https://github.com/CheyneyComputerScience/CREMA-D"),
    "emodb": ("EmoDB", "unknown", "http://emodb.bilderbar.info"),
    "iemocap": ("IEMOCAP", "other", "https://sail.usc.edu/iemocap/"),
    "savee": ("SAVEE (processed copy)", "other", "http://kahlan.eps.surrey.ac.uk/savee/"),
    "goemotions": ("GoEmotions", "apache-2.0", "https://github.com/google-research/google-research/tree/master/goemotions"),
    "dailydialog": ("DailyDialog", "cc-by-nc-sa-4.0", "http://yanran.li/dailydialog"),
    "isear": ("ISEAR", "other", "https://www.unige.ch/cisa/research/materials-and-online-research/research-material/"),
}


def data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", action="append", default=[], metavar="CORPUS=PATH",
                   help="audio corpus (iemocap, ravdess, tess, crema-d, emodb, savee, manifest); repeatable")
    p.add_argument("--text", action="append", default=[], metavar="CORPUS=PATH",
                   help="text corpus (goemotions, dailydialog, isear; a bare PATH is a GoEmotions folder) whose "
                        "train/dev/test texts are pooled and paired with audio of the same label (for corpora whose "
                        "transcripts carry no emotion); repeatable")
    p.add_argument("--calm-as-neutral", action="store_true", help="RAVDESS: count calm as neutral")
    p.add_argument("--transcripts", choices=("own", "asr", "own+asr"), default="own",
                   help="the corpus's own transcripts, Whisper's (the paper's ASR setting; cached per clip and model), "
                        "or own+asr: the own transcript where a corpus has one and Whisper's where it has none (SAVEE)")
    asr_arguments(p)
    p.add_argument("--cache", default=".cache/features", help="feature cache folder")


def whisper_arguments(p: argparse.ArgumentParser) -> None:
    """Which Whisper transcribes (ser_demo.asr.load_transcriber); default: the offline tiny.en."""
    p.add_argument("--asr-backend", default=None, help="Whisper's backend: faster-whisper (default) or openai-whisper")
    p.add_argument("--asr-model", default=None, help="Whisper model folder, Hub id or name (default: the offline tiny.en)")


def asr_arguments(p: argparse.ArgumentParser) -> None:
    """--transcripts asr: which Whisper, and whether the words it was unsure of are read with the voice."""
    whisper_arguments(p)
    p.add_argument("--read-unsure-words", action="store_true",
                   help="score the voice with Whisper's words even where Whisper was unsure of them (the app leaves "
                        "them out, and so do scores by default; training reads them either way)")


def model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model switch or size, e.g. use_attention=false, audio_kernel_sizes=[3,5]")
    p.add_argument("--statistics-head", type=float, default=0.0, metavar="SHARE",
                   help="fit a logistic regression on clip statistics (MFCC, Whisper encoder, speaker) after the "
                        "network and mix its answer in with this share (not in the paper; 0: none)")
    p.add_argument("--statistics-head-penalty", type=float, default=0.1, metavar="L2",
                   help="the statistics head's L2 penalty (fixed: a checkpoint trained on every voice has no dev group)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--drop-text", type=float, default=0.0, help="modality dropout: fraction of samples without text")
    p.add_argument("--drop-audio", type=float, default=0.0, help="modality dropout: fraction of samples without audio")
    p.add_argument("--own-words", type=float, default=0.0,
                   help="label-matched pairing: fraction of clips that keep their own transcript instead")
    p.add_argument("--extra-texts", type=int, default=0, help="label-matched pairing: text-only samples added per epoch")
    p.add_argument("--neutral-words", type=float, default=0.0,
                   help="label-matched pairing: fraction of clips of every class paired with a neutral text instead")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--consistency", type=float, default=0.0,
                   help="weight of a KL term keeping words that carry no emotion (own scripts, --neutral-words "
                        "sentences) from moving the voice's answer")
    p.add_argument("--consistency-trains", choices=CONSISTENCY_TRAINS, default="all",
                   help="with --consistency, what the term trains: the whole model (all); the words and the layers "
                        "after the fusion, not the audio branch (fusion); only what the answer from the audio "
                        "alone does not depend on: text CNN, attention, the classifier's weights on the word features (words)")
    p.add_argument("--consistency-spares-voice", dest="consistency_trains", action="store_const", const="fusion",
                   help="the same as --consistency-trains fusion")
    p.add_argument("--time-masks", type=int, default=0, help="SpecAugment time masks per clip (each <= 1/8 of it)")
    p.add_argument("--feature-masks", type=int, default=0, help="SpecAugment feature masks per clip and front-end")
    p.add_argument("--ema", type=float, default=0.0, help="keep an exponential moving average of the weights (e.g. 0.99)")
    p.add_argument("--average-from", type=int, default=None, metavar="EPOCH",
                   help="keep the mean of the weights at the end of this epoch (1-based) and every later one "
                        "(stochastic weight averaging; with --ema, of the averaged weights)")
    p.add_argument("--decay-from", type=int, default=None, metavar="EPOCH",
                   help="from this epoch (1-based) the learning rate falls linearly: over the n epochs left, "
                        "n/(n+1) of --lr first, 1/(n+1) last (default: constant)")
    p.add_argument("--init-seed", type=int, default=0, metavar="N",
                   help="another draw of the initial weights, dropout and batch order (same folds, same pairings): "
                        "what two trainings of one recipe differ by")
    p.add_argument("--speaker-cap", type=int, default=None, metavar="N",
                   help="at most N clips of one speaker per epoch, drawn anew each epoch (default: all), so that "
                        "voices with many clips do not fill the epochs")
    p.add_argument("--speaker-adversary", type=float, default=0.0, metavar="W",
                   help="speaker-adversarial training: a speaker classifier on the audio branch's SPU vectors whose "
                        "gradient reaches the branch reversed, at weight W (ramped up over training; default off)")
    p.add_argument("--patience", type=int, default=None, help="stop after this many epochs without a better dev UA")
    p.add_argument("--speed", type=float, nargs="+", default=[], metavar="FACTOR",
                   help="speed perturbation: train also on each clip played FACTOR times as fast (e.g. 0.9 1.1; cached)")
    p.add_argument("--noise-snr", type=float, default=None, metavar="DB",
                   help="train also on each clip with white noise at this SNR (cached)")
    p.add_argument("--augment-share", type=float, default=0.5,
                   help="with --speed/--noise-snr: share of clips per epoch that hear a perturbed version")
    p.add_argument("--max-frames", type=int, default=None, help="crop training clips to this many MFCC frames")
    p.add_argument("--no-progress", action="store_true")
    device_argument(p)


def device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device_name, default=None, metavar="auto|cpu|cuda[:N]",
                   help="where the model trains and runs (default $SER_DEVICE, else auto: CUDA when available)")


def _device_name(value: str) -> str:
    from ser_demo.devices import parse_device

    try:
        return parse_device(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def no_dev_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-dev", action="store_true",
                   help="train on the dev speakers too and keep the last epoch: more voices, no model selection "
                        "(choose --epochs by CV first; cv with --no-dev measures this)")


def protocol_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=("paper", "speaker-independent", "cross-corpus"), default="speaker-independent",
                   help="cross-corpus: test on each corpus in turn, never trained on (leave-one-corpus-out)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--folds", type=int, default=10, help="paper protocol: number of folds")
    p.add_argument("--groups", type=int, default=5,
                   help="speaker-independent: number of speaker groups (cross-corpus: the dev set is one such "
                        "group of the other corpora)")
    p.add_argument("--max-folds", type=int, default=None, help="stop after this many folds (quick runs)")
    no_dev_argument(p)
    p.add_argument("--baselines", nargs="*", default=None, metavar="NAME",
                   help="also score logistic-regression baselines on the same folds (no NAME: all of "
                        "'MFCC stats', 'Whisper encoder stats', 'speaker embedding', 'MFCC + Whisper + speaker')")
    p.add_argument("--class-texts", action="store_true",
                   help="also score each test clip paired with a text corpus test sentence of its own class and of "
                        "another class: words that carry an emotion (the own class carries the label: a measure of "
                        "the text branch and of the words gate, never of what a user gets)")
    p.add_argument("--out", required=True, help="run folder: logs, per-fold results, results.md/json")


def model_config(args, **extra):
    from ser_demo.model import ModelConfig

    types = {f.name: f.type for f in fields(ModelConfig)}
    values = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        if key not in types:
            raise SystemExit(f"--set: unknown setting {key!r}; known: {', '.join(sorted(types))}")
        if types[key] == "bool":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {key}: expected true or false, got {raw!r}")
            values[key] = raw.lower() in ("true", "1")
            continue
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    values.update(extra)  # an ablation row's own switches win over --set
    try:
        config = ModelConfig(**values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--set: {err}") from None
    if not getattr(args, "statistics_head", 0):
        return config
    from train.statistics_head import head_settings

    try:
        return replace(config, statistics_head=head_settings(config, args.statistics_head, args.statistics_head_penalty))
    except ValueError as err:
        raise SystemExit(f"--statistics-head: {err}") from None


def settings_of(args):
    from ser_demo.devices import parse_device
    from train.trainer import TrainSettings

    return TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, progress=not args.no_progress,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        consistency=args.consistency,
        consistency_trains=args.consistency_trains, time_masks=args.time_masks,
        feature_masks=args.feature_masks, ema=args.ema, average_from=args.average_from,
        decay_from=args.decay_from, speaker_cap=args.speaker_cap, speaker_adversary=args.speaker_adversary,
        patience=args.patience, max_frames=args.max_frames,
        speed_factors=tuple(args.speed), noise_snr_db=args.noise_snr, augment_share=args.augment_share,
        device=parse_device(args.device), seed=args.init_seed,
    )


def text_corpora_of(items) -> list[tuple[str, str]]:
    """--text values as (corpus, path); a bare path is GoEmotions, as before there were others."""
    from train.text_corpora import TEXT_CORPORA

    out = []
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or "/" in name or "\\" in name:
            name, path = "goemotions", item
        name = name.lower().replace("-", "").replace("_", "")
        if name not in TEXT_CORPORA or not path:
            raise SystemExit(f"--text expects CORPUS=PATH with CORPUS one of {', '.join(TEXT_CORPORA)}, got {item!r}")
        out.append((name, path))
    return out


def data_of(args):
    from train.experiment import load_data
    from train.transcripts import with_missing_transcripts

    audio = []
    for item in args.audio:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--audio expects CORPUS=PATH, got {item!r}")
        audio.append((name, path))
    try:
        data = load_data(audio, text_corpora_of(args.text), calm_as_neutral=args.calm_as_neutral)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise SystemExit(f"error: {err.args[0] if err.args else err}") from None
    if data.texts:
        audio_labels = {u.label for u in data.utterances}
        for split, texts in data.texts.items():
            missing = sorted(audio_labels - {t.label for t in texts})
            if missing:
                raise SystemExit(f"--text: no {', '.join(missing)} texts in the {split} split of "
                                 f"{', '.join(n for n, _ in text_corpora_of(args.text))}, so those clips cannot be "
                                 "paired; add a corpus that has them (goemotions and dailydialog have all four)")
    if args.transcripts == "asr":
        data.utterances, recogniser = with_asr(data.utterances, args)
        data.reports.append(f"transcripts: ASR ({recogniser}), cached in {Path(args.cache) / 'transcripts'}")
    elif args.transcripts == "own+asr":
        # Clips of corpora without transcripts hear Whisper's words, so that "own words" in
        # training covers their sentences too, as a user's recording would carry them.
        data.utterances, recogniser, heard = with_missing_transcripts(data.utterances, lambda us: with_asr(us, args))
        if heard:
            data.reports.append(f"transcripts: own, and ASR ({recogniser}) for the {heard} clips without one")
    unsure = sum(u.unsure_words for u in data.utterances)
    if unsure:
        from ser_demo.transcript import UNSURE_LOG_PROBABILITY

        data.reports.append(f"transcripts: Whisper was unsure of the words of {unsure} of {len(data.utterances)} clips "
                            f"(mean log-probability below {UNSURE_LOG_PROBABILITY:g}): scores with the voice leave them "
                            "out, as the app does; training reads them")
    return data


def with_asr(utterances, args):
    """The utterances carrying Whisper's words (--asr-backend, --asr-model), and its name."""
    from ser_demo.asr import TranscriptionUnavailable, load_transcriber
    from train.transcripts import transcribed_for, with_transcripts

    try:
        transcriber = load_transcriber(args.asr_backend, args.asr_model)
    except TranscriptionUnavailable as err:
        raise SystemExit(f"error: --transcripts asr: {err}") from None
    heard = transcribed_for(utterances, transcriber, Path(args.cache) / "transcripts")
    if getattr(args, "read_unsure_words", False):
        heard = [text for text, _ in heard]  # no confidence: every transcript is read with the voice
    return with_transcripts(utterances, heard), transcriber.name


def training_data_of(args) -> list[dict]:
    names = [item.partition("=")[0] for item in args.audio] + [name for name, _ in text_corpora_of(args.text)]
    out = []
    for n in names:
        name, licence, url = LICENCES.get(n, (n, "unknown", ""))
        out.append({"name": name, "licence": licence, "url": url})
    return out
