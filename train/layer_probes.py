"""Which layer of Whisper's encoder carries the emotion that travels to new voices?

A linear probe per layer, on the folds `cv` deals: each clip becomes the mean and std over time of
one layer's states (`WhisperEncoder.every_layer`: the convolutions' output, every block, the
encoder's output), and a class-balanced logistic regression (`train.baselines.LogisticRegression`,
standardised inputs, one L2 for every layer) trains on the fold's other speakers (its dev group
too, as `cv --no-dev` trains) and is scored on the held-out ones:

    python -m train layer-probes --audio ravdess=PATH --audio tess=PATH --audio savee=PATH \\
        --protocol speaker-independent cross-corpus --seeds 0 1 --out runs/layer-probes

UA (%) per layer and L2, over all test clips and per test corpus (the mean over the folds that
test it), to --out as layer-probes.md and .json. `--together 2+3` adds a probe that reads the
statistics of several layers side by side (indices as `encoder_layer` counts them: 0 the
convolutions, N block N). The cross-corpus protocol deals one fold per
held-out corpus (seed 0 only: its folds do not depend on the seed). This chose the block that
`encoder_layer` reads (README, "Which layer of Whisper").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ser_demo.statistics_head import clip_statistics
from train.baselines import LogisticRegression
from train.protocol import make_folds, unweighted_accuracy


def layer_statistics(layers: list[np.ndarray]) -> np.ndarray:
    """(layers, 2 x width): per layer the mean and std over the clip's states, as the baselines and
    the statistics head take them (`ser_demo.statistics_head.clip_statistics`)."""
    return np.stack([clip_statistics(("whisper",), states=layer) for layer in layers])


def layer_names(n_blocks: int) -> list[str]:
    return ["convolutions", *(f"block {i}" for i in range(1, n_blocks + 1)), "output (layer norm)"]


def together_rows(x: np.ndarray, names: list[str], groups: list[str]) -> list[tuple[str, np.ndarray]]:
    """(name, clip statistics) of each `--together` group ("2+3": blocks 2 and 3 side by side)."""
    rows = []
    for group in groups:
        layers = [int(i) for i in group.split("+")]
        if len(layers) < 2 or len(set(layers)) != len(layers) or not all(0 <= i < len(names) for i in layers):
            raise ValueError(f"--together {group!r}: two or more distinct layers of 0..{len(names) - 1} joined by '+'")
        rows.append((" + ".join(names[i] for i in layers), x[:, layers].reshape(len(x), -1)))
    return rows


def probe_folds(x: np.ndarray, labels: np.ndarray, corpora: np.ndarray, folds, penalty: float,
                n_classes: int) -> dict[str, float]:
    """UA (%) of one layer's probe: over all test clips and per test corpus, averaged over folds."""
    scores: dict[str, list[float]] = {}
    for fold in folds:
        train, test = np.array(fold.train + fold.dev), np.array(fold.test)
        predicted = LogisticRegression(penalty).fit(x[train], labels[train], n_classes).predict(x[test])
        groups = {"all": np.ones(len(test), bool)} | {c: corpora[test] == c for c in np.unique(corpora[test])}
        for name, keep in groups.items():
            scores.setdefault(name, []).append(
                100 * unweighted_accuracy(labels[test][keep].tolist(), predicted[keep].tolist(), list(range(n_classes))))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def markdown(results: dict) -> str:
    lines = [f"Linear probes per layer of {results['encoder']} (context {results['context']}); "
             "UA in %, mean over folds; L2 per row.", ""]
    for protocol, rows in results["protocols"].items():
        corpora = [c for c in rows[0]["ua"] if c != "all"]
        lines += [f"**{protocol}** ({rows[0]['folds']} folds)", "",
                  "| layer | L2 | all test clips | " + " | ".join(corpora) + " |",
                  "|---|---|---|" + "---|" * len(corpora)]
        lines += [f"| {r['layer']} | {r['penalty']:g} | {r['ua']['all']:.1f} | "
                  + " | ".join(f"{r['ua'][c]:.1f}" for c in corpora) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def command(args) -> int:
    from ser_demo.encoder import WhisperEncoder
    from train.arguments import data_of
    from train.cache import FeatureCache
    from train.features import INGEST, load_clip
    from train.trainer import _progress

    data = data_of(args)
    utterances = [u for u in data.utterances if u.audio_path is not None]
    encoder = WhisperEncoder.load(context=args.context)
    port_key = {"every_layer": encoder.spec() | {"compute_type": "float32"}, "ingest": INGEST}
    cache = FeatureCache(Path(args.cache))

    def statistics(path: Path) -> np.ndarray:
        audio = load_clip(path)
        return layer_statistics(encoder.every_layer(audio)) if audio is not None and len(audio) >= 320 else np.zeros(0, np.float32)

    stats = [cache.get_or_compute(u.audio_path, port_key, statistics) for u in _progress(utterances, "layers", not args.no_progress)]
    kept = [i for i, s in enumerate(stats) if s.size]  # a clip that trims to nothing has no states
    utterances = [utterances[i] for i in kept]
    x = np.stack([stats[i] for i in kept])
    labels_of = sorted({u.label for u in utterances})
    labels = np.array([labels_of.index(u.label) for u in utterances])
    corpora = np.array([u.corpus for u in utterances])
    names = layer_names(x.shape[1] - 2)
    probes = [(name, x[:, layer]) for layer, name in enumerate(names)] + together_rows(x, names, args.together)
    results = {"encoder": encoder.spec()["model"], "context": args.context, "clips": len(utterances), "protocols": {}}
    for protocol in args.protocol:
        folds = make_folds(utterances, protocol, seeds=args.seeds[:1] if protocol == "cross-corpus" else args.seeds,
                           n_speaker_groups=args.groups)
        rows = []
        for name, statistics_of_layer in probes:
            for penalty in args.penalties:
                rows.append({"layer": name, "penalty": penalty, "folds": len(folds),
                             "ua": probe_folds(statistics_of_layer, labels, corpora, folds, penalty, len(labels_of))})
                print(f"{protocol}: {name}, L2 {penalty:g}: "
                      + ", ".join(f"{c} {v:.1f}" for c, v in rows[-1]["ua"].items()), flush=True)
        results["protocols"][folds[0].protocol] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layer-probes.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "layer-probes.md").write_text(markdown(results))
    print(f"wrote {out / 'layer-probes.md'} and {out / 'layer-probes.json'}")
    return 0


def add_arguments(p) -> None:
    p.add_argument("--audio", action="append", default=[], metavar="CORPUS=PATH", help="audio corpus; repeatable")
    p.add_argument("--calm-as-neutral", action="store_true", help="RAVDESS: count calm as neutral")
    p.add_argument("--cache", default=".cache/features", help="feature cache folder")
    p.set_defaults(text=[], transcripts="own")  # what data_of reads: no texts, no transcripts needed
    p.add_argument("--protocol", nargs="+", choices=("speaker-independent", "cross-corpus"),
                   default=["speaker-independent", "cross-corpus"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="speaker-independent dealings (cv --seeds)")
    p.add_argument("--groups", type=int, default=5, help="speaker groups (cv --groups)")
    p.add_argument("--penalties", type=float, nargs="+", default=[0.01, 0.1], metavar="L2")
    p.add_argument("--together", nargs="+", default=[], metavar="I+J",
                   help="also probe these layers side by side (0 convolutions, N block N), e.g. 2+3")
    p.add_argument("--context", choices=("clip", "window"), default="clip", help="what the encoder reads (encoder_context)")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
