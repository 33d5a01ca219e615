"""python -m train {cv,ablate,fit,report,shares,evaluate,features,card,faithfulness,calibration,unsure-words} ... - see README "Training" for the recipes.

    cv        cross-validate under a protocol (paper 10-fold 8/1/1, or speaker-independent)
    ablate    the rows of the paper's Table 2 under a protocol
    report    the tables of the folds a stopped cv run finished
    shares    UA of a cv run's networks at other shares of the statistics head, from its predictions
    fit       train one checkpoint on all the data (dev = held-out speakers), write its model card
    evaluate  score any checkpoint on any supported corpus; the last line printed is JSON
    features  extract and cache a config's audio features (MFCC, Whisper encoder, speaker) once
    faithfulness  is attention an explanation? deletion curves, AOPC, rank agreement over a corpus
    calibration   how often answers of each confidence were right in cv runs: a checkpoint's table
    unsure-words  what Whisper's words for speech in another language cost the voice, and leaving them out
Devices: --device auto|cpu|cuda|cuda:N (default $SER_DEVICE, else auto: CUDA when there is a GPU).
Multi-process: `torchrun --nproc_per_node 2 -m train fit ...` (DistributedDataParallel; NCCL when
every rank has a GPU, else gloo).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from train.arguments import (asr_arguments, data_arguments, data_of, device_argument, model_arguments, model_config,
                             no_dev_argument, protocol_arguments, settings_of, text_corpora_of, training_data_of, with_asr)


def _logger(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "log.txt", "a")

    def log(message: str) -> None:
        print(message, flush=True)
        log_file.write(message + "\n")
        log_file.flush()

    return log


def command_cv(args, rows_for=None) -> int:
    from train.experiment import cross_validate, make_bank
    from train.pairing import ModalityDropout
    from train.report import ResultRow, write_report

    if args.class_texts and not args.text:
        raise SystemExit("--class-texts pairs the test clips with the text corpora's test sentences: give them with --text")
    out = Path(args.out)
    log = _logger(out)
    data = data_of(args)
    for line in data.reports:
        log(line)
    dropout = ModalityDropout(args.drop_text, args.drop_audio)
    variants = rows_for or {"MSCNN-SPU-ATT": {}}
    table = []
    for row_name, switches in variants.items():
        config = model_config(args, **switches)
        log(f"== {row_name}: {json.dumps({k: v for k, v in config.to_dict().items() if k != 'feature_params'})}")
        result = cross_validate(
            data, args.protocol, config, settings_of(args), make_bank(config, Path(args.cache)), dropout,
            seeds=args.seeds, n_folds=args.folds, n_speaker_groups=args.groups, max_folds=args.max_folds,
            out_dir=out / row_name.replace("/", "_").replace(" ", "_"), log=log,
            baselines=baselines_of(args) if not rows_for or row_name == "MSCNN-SPU-ATT" else (),
            own_words=args.own_words, extra_texts=args.extra_texts, neutral_words=args.neutral_words,
            train_on_dev=args.no_dev, class_texts=args.class_texts,
        )
        table += result_rows(result["summaries"], row_name, args.transcripts, log)
    if rows_for:
        _, both_setting = describe_setting("both", "", args.transcripts)  # audio + words, over all test clips
        both = [r for r in table if r.setting == both_setting and r.model in variants]
        md, js = write_report(out, table1=[], table2=both, ablation_reference="MSCNN-SPU-ATT")
    else:
        md, js = write_report(out, table1=table)
    log(f"wrote {md} and {js}")
    return 0


def result_rows(summaries: dict, row_name: str, transcripts: str, log=print) -> list:
    from train.report import ResultRow

    rows = []
    for key, summary in summaries.items():
        model, setting = describe_setting(key, row_name, transcripts)
        rows.append(ResultRow(model, setting, summary))
        log(f"{model} / {setting}: WA {summary.wa_mean:.4f} ± {summary.wa_std:.4f}, UA {summary.ua_mean:.4f} ± {summary.ua_std:.4f} over {summary.n_runs} runs ({summary.protocol})")
    return rows


def command_report(args) -> int:
    """Tables of a cv run from the folds it finished (folds.jsonl), e.g. one stopped early."""
    from train.experiment import fold_records
    from train.protocol import FoldResult, summarize
    from train.report import write_report

    out = Path(args.run)
    table = []
    for folds_file in sorted(out.glob("*/folds.jsonl")):
        per_key: dict[str, list] = {}
        for record in fold_records(folds_file).values():
            for key, result in record.items():
                if key != "fold":
                    per_key.setdefault(key, []).append(FoldResult(**result))
        summaries = {key: summarize(results) for key, results in per_key.items()}
        table += result_rows(summaries, folds_file.parent.name.replace("_", " "), args.transcripts)
    if not table:
        raise SystemExit(f"no finished folds under {out} (*/folds.jsonl)")
    md, js = write_report(out, table1=table)
    print(f"wrote {md} and {js}")
    return 0


def command_shares(args) -> int:
    """UA of a cv run's very networks at other shares of the statistics head (no training)."""
    from train import predictions
    from train.experiment import SETTINGS

    records = predictions.load(*map(Path, args.run))
    if not records:
        raise SystemExit(f"no per-clip predictions under {' '.join(args.run)} (folds/*/{predictions.FILE}: cv writes them)")
    if args.average:
        others = [predictions.load(Path(run)) for run in args.average]
        try:
            records = predictions.averaged(records, *others)
        except ValueError as err:
            raise SystemExit(f"--average: {err}") from None
        print(f"each network's answer averaged with the same folds' networks of {' '.join(args.average)}")
    if args.clips_of:
        try:
            records = predictions.restricted(records, predictions.load(*map(Path, args.clips_of)))
        except ValueError as err:
            raise SystemExit(f"--clips-of: {err}") from None
        print(f"only the test clips that {' '.join(args.clips_of)} tested")
    reference = predictions.load(*map(Path, args.against)) if args.against else []
    if args.against and not reference:
        raise SystemExit(f"--against: no per-clip predictions under {' '.join(args.against)}")
    if not any("head" in setting for r in records for setting in r["settings"].values()):
        print("note: these folds have no statistics head; every share gives the model's own answer")
    for setting in args.setting:
        if any(setting in r["settings"] for r in records):
            print(f"\n{SETTINGS[setting]}, UA in % (mean ± std over folds, number of folds); {records[0]['protocol']}:\n")
            print(predictions.shares_markdown(records, setting, args.shares))
            if reference:
                print(f"\nthe same, minus {' '.join(args.against)} fold by fold, in points:\n")
                try:
                    print(predictions.paired_markdown(records, reference, setting, args.shares))
                except ValueError as err:
                    raise SystemExit(f"--against: {err}") from None
    return 0


def baselines_of(args) -> list[str]:
    from train.baselines import BASELINES

    if args.baselines is None:
        return []
    unknown = [b for b in args.baselines if b not in BASELINES]
    if unknown:
        raise SystemExit(f"--baselines: unknown {unknown}; known: {list(BASELINES)}")
    return args.baselines or list(BASELINES)


def describe_setting(key: str, model: str, transcripts: str) -> tuple[str, str]:
    """A results key ("both [ravdess]", "baseline:MFCC stats", ...) -> (model, setting) for tables."""
    from train.experiment import SETTINGS

    key, _, corpus = key.partition(" [")
    corpus = f", test corpus {corpus[:-1]}" if corpus else ""
    if key.startswith("baseline:"):
        return f"logistic regression on {key[len('baseline:'):]}", f"audio only{corpus}"
    setting = SETTINGS[key]
    if key in ("both", "text"):
        setting = setting.replace("the clip's words", "Whisper's transcript" if transcripts == "asr" else "the clip's own words")
    return model, setting + corpus


def command_ablate(args) -> int:
    from train.experiment import ABLATIONS

    rows = dict(ABLATIONS)
    if not model_config(args).use_speaker:
        rows.pop("w/o speaker embedding")  # identical to the full model when no x-vector is used
    return command_cv(args, rows_for=rows)


def command_fit(args) -> int:
    from train.experiment import dev_samples, make_bank, samples_for
    from train.hub import push_to_hub, write_card
    from train.pairing import ModalityDropout
    from train.protocol import speaker_groups
    from train.trainer import fit, is_main_process

    out = Path(args.out)
    log = _logger(out)
    data = data_of(args)
    for line in data.reports:
        log(line)
    config = model_config(args)
    # Model selection needs unseen speakers: hold out one speaker group as dev, unless --no-dev
    # (the epoch count is then CV's, and the last epoch is kept).
    dev_speakers = set() if args.no_dev else set(speaker_groups([u.speaker for u in data.utterances], args.groups, seed=0)[0])
    train = [u for u in data.utterances if u.speaker not in dev_speakers]
    dev = [u for u in data.utterances if u.speaker in dev_speakers]
    log(f"train {len(train)} utterances, dev {len(dev)} (speakers {sorted(dev_speakers)})")
    dropout = ModalityDropout(args.drop_text, args.drop_audio)
    model, info = fit(config, samples_for(data, train, "train", 0, dropout, args.own_words, args.extra_texts,
                                          args.neutral_words),
                      dev_samples(data, dev, 0),
                      make_bank(config, Path(args.cache)), settings_of(args), run_dir=out / "state", log=log,
                      labelled_clips=[(u.audio_path, u.label) for u in train if u.audio_path is not None])
    if not is_main_process():
        return 0
    model.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({
        "command": "python -m train " + shlex.join(sys.argv[1:]), "pairing": data.pairing, "data": data.reports,
        "training_data": training_data_of(args), "dev_speakers": sorted(dev_speakers), **info}, indent=1))
    write_card(out, model.config, args.results, args.protocol_note, args.push_to_hub)
    log(f"saved checkpoint and model card to {out}")
    if args.push_to_hub:
        push_to_hub(out, args.push_to_hub)
        log(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return 0


def command_card(args) -> int:
    """Rewrite a checkpoint's model card, e.g. once the cross-validation of its recipe is done."""
    from ser_demo.model import MSCNN_SPU_ATT
    from train.hub import DEFAULT_PROTOCOL_NOTE, protocol_note_of, write_card

    out = Path(args.checkpoint)
    note = args.protocol_note or protocol_note_of(out) or DEFAULT_PROTOCOL_NOTE
    print(write_card(out, MSCNN_SPU_ATT.from_pretrained(out).config, args.results, note))
    return 0


def command_evaluate(args) -> int:
    from ser_demo.model import MSCNN_SPU_ATT
    from train.scoring import audio_corpus_set, is_text_corpus, score, seen_in_training, text_corpus_set

    from ser_demo.devices import resolve_device

    try:
        model = MSCNN_SPU_ATT.from_pretrained(args.checkpoint).to(resolve_device(args.device))
    except (OSError, ValueError, RuntimeError) as err:  # no such folder, an unreachable Hub id, a damaged file
        raise SystemExit(f"error: cannot load the checkpoint {args.checkpoint}: {err}") from None
    split = None
    try:
        if is_text_corpus(args.corpus):
            if args.transcripts != "own" or args.label_matched_text:
                raise ValueError(f"{args.corpus} is a text corpus: --transcripts and --label-matched-text are for audio corpora")
            if (args.modality or "text") != "text":
                raise ValueError(f"{args.corpus} is a text corpus: it is scored with --modality text")
            # the held-out split by default; a single GoEmotions file is scored whole
            split = args.split or ("all" if Path(args.data).is_file() else "test")
            evaluation = text_corpus_set(args.corpus, args.data, split, model.config)
        else:
            if args.split:
                raise ValueError("--split is for text corpora; an audio corpus is scored whole")
            evaluation = audio_corpus_set(
                args.corpus, args.data, model.config, args.modality or "both", args.transcripts,
                asr=lambda utterances: with_asr(utterances, args), label_matched=text_corpora_of(args.label_matched_text),
                calm_as_neutral=args.calm_as_neutral,
            )
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise SystemExit(f"error: {err.args[0] if err.args else err}") from None
    for line in evaluation.reports:
        print(line, file=sys.stderr)
    named_split = Path(args.data).stem if Path(args.data).is_file() and Path(args.data).stem in ("train", "dev", "test") else split
    warning = seen_in_training(args.checkpoint, args.corpus, named_split)  # a GoEmotions file is named by its split
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    result = score(model, evaluation, Path(args.cache))
    print(f"WA {result.wa:.4f}, UA {result.ua:.4f} | {evaluation.protocol} | {evaluation.data} | checkpoint {args.checkpoint}")
    print(json.dumps({
        "checkpoint": args.checkpoint, "corpus": args.corpus, "split": split, "modality": args.modality,
        "protocol": evaluation.protocol, "data": evaluation.data, "warning": warning, "n": result.n,
        "wa": result.wa, "ua": result.ua, "recall": result.recall, "labels": result.labels, "confusion": result.confusion,
    }))
    return 0


def command_features(args) -> int:
    """Fill the feature cache for every clip (and its --speed/--noise-snr variants), timing each
    kind: what training then reads."""
    import time

    from train.augment import variants_of
    from train.experiment import make_bank
    from train.trainer import _progress

    data = data_of(args)
    config = model_config(args)
    bank = make_bank(config, Path(args.cache))
    kinds = {"mfcc": bank.mfcc} if "mfcc" in config.audio_frontends else {}
    if "whisper" in config.audio_frontends:
        kinds["whisper encoder"] = bank.encoder_states
    if config.use_speaker:
        kinds["speaker"] = bank.speaker
    paths = sorted({u.audio_path for u in data.utterances if u.audio_path is not None})
    seconds = dict.fromkeys(kinds, 0.0)
    versions = [None] + variants_of(args.speed, args.noise_snr)
    for path in _progress(paths, "features", not args.no_progress):
        for kind, extract in kinds.items():
            start = time.perf_counter()
            for variant in versions:
                extract(path, variant)
            seconds[kind] += time.perf_counter() - start
    described = ", ".join(str(v or "clean") for v in versions)
    for kind, total in seconds.items():
        print(f"{kind}: {len(paths)} clips x {len(versions)} versions ({described}) in {total:.1f} s "
              f"({1000 * total / max(len(paths) * len(versions), 1):.0f} ms per version, cache hits included)")
    return 0


def main(argv=None) -> int:
    from train.hub import DEFAULT_PROTOCOL_NOTE

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("cv", "cross-validate"), ("ablate", "Table 2 ablations")):
        p = commands.add_parser(name, help=help_text)
        data_arguments(p), model_arguments(p), protocol_arguments(p)
    p = commands.add_parser("fit", help="train the checkpoint on all the data")
    data_arguments(p), model_arguments(p)
    p.add_argument("--groups", type=int, default=5, help="one of this many speaker groups is the dev set")
    no_dev_argument(p)
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--results", nargs="+", default=None, metavar="JSON",
                   help="results.json of cv runs, for the model card (several: their rows together)")
    p.add_argument("--protocol-note", default=DEFAULT_PROTOCOL_NOTE)
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID")
    p = commands.add_parser("report", help="results.md/json of a cv run from the folds it finished")
    p.add_argument("--run", required=True, help="the cv run's --out folder")
    p.add_argument("--transcripts", choices=("own", "asr"), default="own", help="what the run's test clips carried")
    p = commands.add_parser("shares", help="UA at other shares of the statistics head, from a cv run's per-clip predictions")
    p.add_argument("--run", required=True, nargs="+", help="the cv run's --out folder (several: their folds together)")
    p.add_argument("--shares", type=float, nargs="+", default=[0, 0.25, 0.33, 0.4, 0.5, 1], metavar="SHARE")
    p.add_argument("--setting", nargs="+", choices=("audio", "both", "text"), default=["audio", "both"])
    p.add_argument("--average", nargs="+", default=[], metavar="RUN",
                   help="other trainings of the same folds (cv --init-seed N): their networks' answers are averaged "
                        "with --run's, each fold with its own (an ensemble of the trainings)")
    p.add_argument("--clips-of", nargs="+", default=[], metavar="RUN",
                   help="score only the test clips that these runs of the same folds tested (a run that tested "
                        "more clips, e.g. trained with --calm-as-neutral, against one that did not)")
    p.add_argument("--against", nargs="+", default=[], metavar="RUN",
                   help="also show, fold by fold, --run (after --average) minus these runs of the same folds: "
                        "mean difference, folds higher and lower, mean and largest |difference|")
    p = commands.add_parser("card", help="rewrite a checkpoint's model card from a cv run's results")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder written by fit")
    p.add_argument("--results", nargs="+", required=True, metavar="JSON",
                   help="results.json of cv runs of the recipe (several, e.g. own words then Whisper's: their rows together)")
    p.add_argument("--protocol-note", default=None,
                   help="how the results were measured (default: the card's current note, else a one-line one)")
    p = commands.add_parser("features", help="extract and cache the audio features of a config")
    data_arguments(p), model_arguments(p)
    p = commands.add_parser("evaluate", help="score a checkpoint on a corpus")
    p.add_argument("--checkpoint", required=True, help="folder or Hub repo id")
    p.add_argument("--corpus", required=True,
                   help="audio: iemocap, ravdess, tess, crema-d, emodb, savee, manifest; text: goemotions, dailydialog, isear")
    p.add_argument("--data", required=True, help="the corpus folder (or the manifest CSV, isear.csv, a GoEmotions TSV)")
    p.add_argument("--split", choices=("train", "dev", "test", "all"), default=None,
                   help="text corpora: which split to score (default test; a single GoEmotions TSV is scored whole)")
    p.add_argument("--modality", choices=("both", "audio", "text"), default=None,
                   help="what the model is given (default: text for text corpora, every branch it has for audio corpora)")
    p.add_argument("--transcripts", choices=("own", "asr"), default="own",
                   help="audio corpora: the words given with each clip: its own transcript, or what Whisper hears in it")
    asr_arguments(p)
    p.add_argument("--label-matched-text", "--text", action="append", default=[], metavar="CORPUS=PATH",
                   help="pair each clip with a test-split text of its own class from this text corpus instead of its own "
                        "words; that measures the text branch with label-carrying text, not the model on speech")
    p.add_argument("--calm-as-neutral", action="store_true", help="RAVDESS: count calm as neutral")
    p.add_argument("--cache", default=".cache/features")
    device_argument(p)
    from train import calibration, faithfulness, layer_probes, unsure_words

    faithfulness.add_arguments(commands.add_parser("faithfulness", help="faithfulness of the explanations over a corpus"))
    calibration.add_arguments(commands.add_parser(
        "calibration", help="how often answers of each confidence were right in cv runs: the checkpoint's calibration table"))
    unsure_words.add_arguments(commands.add_parser(
        "unsure-words", help="what Whisper's words for speech in another language cost the voice, and leaving them out"))
    layer_probes.add_arguments(commands.add_parser(
        "layer-probes", help="a linear probe per layer of Whisper's encoder on the cv folds: where the emotion is"))
    args = parser.parse_args(argv)
    return {"cv": command_cv, "ablate": command_ablate, "fit": command_fit, "evaluate": command_evaluate,
            "features": command_features, "card": command_card,
            "report": command_report, "shares": command_shares, "faithfulness": faithfulness.command,
            "calibration": calibration.command, "unsure-words": unsure_words.command,
            "layer-probes": layer_probes.command}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
