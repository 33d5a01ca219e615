"""`python -m train faithfulness`: is attention an explanation, over a whole corpus?

For every clip of a corpus (its own transcripts, or Whisper's) the checkpoint's answer is
explained (`ser_demo.explain`) and the explanations are measured (`ser_demo.deletion_curves`):

- rank agreement (Kendall's tau-b) between attention (summed over the context vectors) and
  leave-one-word-out influence;
- AOPC (comprehensiveness) and sufficiency of four word orders: attention, leave-one-out,
  gradient x input and random; and of two audio-window orders: occlusion and random;
- how often uniform attention changes the predicted label, and how often removing every word does.
One row per way of removing a word (masking with the unknown-word vector, deletion). The table is
printed and written as markdown and JSON (with every clip's numbers) to --out.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ser_demo import deletion_curves as D
from ser_demo import faithfulness as F
from ser_demo.explain import explain
from ser_demo.recognizer import EmotionRecognizer

WORD_ORDERS = (D.ATTENTION, D.LEAVE_ONE_OUT, D.GRADIENT, D.RANDOM)
WINDOW_ORDERS = (D.OCCLUSION, D.RANDOM)


@dataclass
class ClipResult:
    utterance_id: str
    label: str  # the corpus's label
    predicted: str
    n_words: int
    words: dict = field(default_factory=dict)  # removal -> {"tau", "aopc": {...}, "sufficiency": {...}, "label_changes"}
    uniform_changes: Optional[bool] = None
    windows: Optional[dict] = None  # {"aopc": {...}, "sufficiency": {...}}


def measure_clip(recognizer: EmotionRecognizer, audio: np.ndarray, transcript: str, *,
                 removals: Sequence[str] = D.REMOVALS, permutations: int = 10, windows: bool = True,
                 window_permutations: int = 3) -> Optional[ClipResult]:
    """Every faithfulness number of one clip, or None when there are no words to rank."""
    inputs = recognizer.prepare(audio, transcript, "both")
    if not inputs.tokens.words:
        return None
    model = recognizer.model
    e = explain(recognizer, inputs, relevance="occlusion" if windows else "none", words=False)
    statistics = torch.as_tensor(e.audio_statistics)[None] if e.audio_statistics is not None else None
    gradient = D.word_gradient(model, inputs.batch, e.target)
    result = ClipResult("", "", e.label, len(e.tokens))
    if e.uniform_probabilities is not None:
        result.uniform_changes = e.uniform_label != e.label
    for removal in removals:
        curves = D.word_deletion_curves(model, inputs.batch, e.target, attention=e.attention, gradient=gradient,
                                        removal=removal, permutations=permutations, audio_statistics=statistics)
        tau = None
        if e.attention is not None:
            tau = D.rank_agreement(curves.scores[D.ATTENTION], curves.scores[D.LEAVE_ONE_OUT])
        result.words[removal] = {
            "tau": tau,
            "aopc": {name: curves.aopc(name) for name in curves.deletion},
            "sufficiency": {name: curves.sufficiency(name) for name in curves.kept},
            "label_changes": curves.label_changes,
        }
    if windows and e.window_relevance is not None:
        w = F.measure(model, inputs.batch, e, words=False, window_permutations=window_permutations,
                      window_sufficiency=True).windows
        result.windows = {"aopc": {n: w.aopc(n) for n in w.deletion},
                          "sufficiency": {n: w.sufficiency(n) for n in w.kept}, "n_windows": w.n_units}
    return result


def _mean_std(values: list) -> Optional[list]:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


def _rate(flags: list) -> Optional[float]:
    flags = [f for f in flags if f is not None]
    return float(np.mean(flags)) if flags else None


def summarize(results: Sequence[ClipResult], removals: Sequence[str] = D.REMOVALS) -> dict:
    """Means ± std (n - 1) over clips; rates as fractions of the clips where they are defined."""
    summary = {"clips": len(results), "words": {}, "windows": None,
               "uniform_changes_label": _rate([r.uniform_changes for r in results])}
    for removal in removals:
        rows = [r.words[removal] for r in results if removal in r.words]
        taus = [row["tau"] for row in rows]
        summary["words"][removal] = {
            "kendall_tau": _mean_std(taus),
            "clips_with_tau": sum(t is not None for t in taus),
            "aopc": {name: _mean_std([row["aopc"].get(name) for row in rows]) for name in WORD_ORDERS},
            "sufficiency": {name: _mean_std([row["sufficiency"].get(name) for row in rows]) for name in WORD_ORDERS},
            "removing_words_changes_label": _rate([row["label_changes"] for row in rows]),
        }
    with_windows = [r.windows for r in results if r.windows]
    if with_windows:
        summary["windows"] = {
            "clips": len(with_windows),
            "aopc": {name: _mean_std([w["aopc"].get(name) for w in with_windows]) for name in WINDOW_ORDERS},
            "sufficiency": {name: _mean_std([w["sufficiency"].get(name) for w in with_windows]) for name in WINDOW_ORDERS},
        }
    return summary


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return f"{value[0]:+.{digits}f} ± {value[1]:.{digits}f}"
    return f"{100 * value:.1f} %"


def table_markdown(summary: dict, title: str) -> str:
    words = summary["words"]
    lines = [f"**{title}**", "",
             "| removal of a word | clips | Kendall τ attention vs LOO | AOPC attention | AOPC leave-one-out "
             "| AOPC gradient | AOPC random | uniform attention changes the label | removing the words changes it |",
             "|---|---|---|---|---|---|---|---|---|"]
    names = {"mask": "masked (unknown-word vector)", "delete": "deleted"}
    for removal, row in words.items():
        aopc = row["aopc"]
        lines.append(
            f"| {names.get(removal, removal)} | {summary['clips']} | {_cell(row['kendall_tau'])} | "
            + " | ".join(_cell(aopc[name]) for name in WORD_ORDERS)
            + f" | {_cell(summary['uniform_changes_label'])} | {_cell(row['removing_words_changes_label'])} |")
    lines += ["", "| removal of a word | sufficiency attention | leave-one-out | gradient | random |",
              "|---|---|---|---|---|"]
    for removal, row in words.items():
        lines.append(f"| {names.get(removal, removal)} | "
                     + " | ".join(_cell(row["sufficiency"][name]) for name in WORD_ORDERS) + " |")
    if summary["windows"]:
        w = summary["windows"]
        lines += ["", "| audio windows (0.25 s, hidden) | clips | AOPC occlusion | AOPC random "
                  "| sufficiency occlusion | sufficiency random |", "|---|---|---|---|---|---|",
                  f"| occlusion vs random | {w['clips']} | {_cell(w['aopc'][D.OCCLUSION])} | {_cell(w['aopc'][D.RANDOM])} "
                  f"| {_cell(w['sufficiency'][D.OCCLUSION])} | {_cell(w['sufficiency'][D.RANDOM])} |"]
    lines += ["", "Mean ± std over clips. AOPC: mean drop of p(predicted class) as the top 1..n units are "
              "removed (higher: the order found what the answer rests on); sufficiency: mean drop with only "
              "the top 0..n-1 kept (lower: the top units carry the answer alone). τ over clips with ≥ 2 words "
              f"and a ranking ({', '.join(str(r['clips_with_tau']) for r in words.values())})."]
    return "\n".join(lines) + "\n"


def run(recognizer: EmotionRecognizer, utterances: Sequence, read_audio: Callable, *, removals=D.REMOVALS,
        permutations: int = 10, windows: bool = True, log: Callable[[str], None] = print) -> tuple[list, dict]:
    """Measure every utterance (audio read by `read_audio(path)`, None = no speech: skipped)."""
    results, skipped = [], {"no speech": 0, "no words": 0}
    for i, u in enumerate(utterances):
        audio = read_audio(u.audio_path) if u.audio_path is not None else None
        if audio is None:
            skipped["no speech"] += 1
            continue
        clip = measure_clip(recognizer, audio, u.transcript or "", removals=removals, permutations=permutations,
                            windows=windows)
        if clip is None:
            skipped["no words"] += 1
            continue
        clip.utterance_id, clip.label = u.utterance_id, u.label
        results.append(clip)
        if (i + 1) % 50 == 0:
            log(f"{i + 1}/{len(utterances)} clips")
    if any(skipped.values()):
        log("skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items() if v))
    summary = summarize(results, removals)
    summary["skipped"] = skipped
    return results, summary


def command(args) -> int:
    from train.datasets import load_speakers
    from train.features import load_clip
    from train.transcripts import transcripts_for, with_transcripts

    if args.permutations < 1:
        raise SystemExit("--permutations must be at least 1")
    recognizer = EmotionRecognizer.from_pretrained(args.checkpoint)
    if not (recognizer.config.use_audio and recognizer.config.use_text):
        raise SystemExit("faithfulness needs a checkpoint with both an audio and a text branch")
    # --speakers: e.g. a cv fold's test speakers (its model's fold.json): voices it was not trained on
    utterances, report = load_speakers(args.corpus, args.data, args.speakers)
    if args.limit:  # a seeded sample keeps every class and speaker in play
        order = np.random.default_rng(0).permutation(len(utterances))[: args.limit]
        utterances = [utterances[i] for i in sorted(order)]
    print(str(report), file=sys.stderr)
    source = "own"
    if args.transcripts == "asr":
        from ser_demo.asr import load_transcriber

        transcriber = load_transcriber(args.asr_backend, args.asr_model)
        texts = transcripts_for(utterances, transcriber, Path(args.cache) / "transcripts")
        utterances = with_transcripts(utterances, texts)
        source = f"ASR ({transcriber.name})"
    removals = D.REMOVALS if args.removal == "both" else (args.removal,)
    results, summary = run(recognizer, utterances, load_clip, removals=removals, permutations=args.permutations,
                           windows=not args.no_windows, log=lambda m: print(m, file=sys.stderr, flush=True))
    summary.update(checkpoint=args.checkpoint, corpus=args.corpus, transcripts=source, permutations=args.permutations,
                   speakers=args.speakers)
    name, fold = Path(args.checkpoint).name, Path(args.checkpoint) / "fold.json"
    if fold.is_file():  # a cv fold's model (train.experiment.save_fold_model): name the fold
        name = f"the model of {json.loads(fold.read_text())['fold']}"
    title = (f"Faithfulness of {name} on {args.corpus} ({summary['clips']} clips, "
             f"{source} transcripts, {args.permutations} random orders)")
    markdown = table_markdown(summary, title)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faithfulness.md").write_text(markdown, encoding="utf-8")
    (out / "faithfulness.json").write_text(json.dumps(
        {"summary": summary, "clips": [vars(r) for r in results]}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(markdown)
    print(f"wrote {out / 'faithfulness.md'} and {out / 'faithfulness.json'}", file=sys.stderr)
    return 0


def add_arguments(p) -> None:
    from train.arguments import whisper_arguments

    p.add_argument("--checkpoint", required=True, help="folder or Hub repo id (audio + text)")
    p.add_argument("--corpus", required=True, help="iemocap, ravdess, tess, crema-d, emodb, manifest")
    p.add_argument("--data", required=True, help="the corpus folder (or the manifest CSV)")
    p.add_argument("--transcripts", choices=("own", "asr"), default="own",
                   help="the corpus's own transcripts, or Whisper's (cached per clip and model)")
    whisper_arguments(p)
    p.add_argument("--removal", choices=("both", *D.REMOVALS), default="both",
                   help="how a word is removed: masked with the unknown-word vector, deleted, or both (one row each)")
    p.add_argument("--permutations", type=int, default=10, help="random orders averaged per clip")
    p.add_argument("--speakers", default=None, help="only these speakers, comma-separated (e.g. ravdess_06,ravdess_11)")
    p.add_argument("--limit", type=int, default=None, help="measure a seeded sample of this many clips")
    p.add_argument("--no-windows", action="store_true", help="skip the audio windows (occlusion vs random)")
    p.add_argument("--cache", default=".cache/features", help="cache folder (ASR transcripts)")
    p.add_argument("--out", default="runs/faithfulness", help="folder for faithfulness.md and faithfulness.json")
