"""A checkpoint's calibration table (`ser_demo.calibration`) from its recipe's cross-validation.

Every test clip's answer of every fold (the per-clip answers `cv` keeps: `train.predictions`),
mixed with the statistics head at the checkpoint's own share, binned by its top probability:
per protocol and setting, over all test clips and per test corpus, how many answers fell in each
bin and how many were right.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ser_demo.calibration import EDGES, FILE, Calibration, bin_of
from train.predictions import mixed


def calibration_table(records: Sequence[dict], share: float, edges=EDGES) -> dict:
    """{"edges", "share", "folds": protocol -> n, "protocols": protocol -> setting -> bins over all
    test clips, "corpora": protocol -> test corpus -> setting -> bins} of cv fold records."""
    protocols: dict = defaultdict(dict)
    corpora: dict = defaultdict(lambda: defaultdict(dict))
    folds: dict = defaultdict(int)
    empty = lambda: [{"answers": 0, "right": 0} for _ in edges[1:]]  # noqa: E731
    for record in records:
        protocol = record["protocol"]
        folds[protocol] += 1
        for setting, data in record["settings"].items():
            pooled = protocols[protocol].setdefault(setting, empty())
            for p, label, corpus in zip(mixed(data, share), data["label"], data["corpus"]):
                right = int(record["labels"][int(np.argmax(p))] == label)
                for bins in (pooled, corpora[protocol][corpus].setdefault(setting, empty())):
                    cell = bins[bin_of(float(p.max()), edges)]
                    cell["answers"] += 1
                    cell["right"] += right
    return {"edges": list(edges), "share": share, "folds": dict(folds), "protocols": dict(protocols),
            "corpora": {protocol: {corpus: dict(s) for corpus, s in by.items()} for protocol, by in corpora.items()}}


def write_calibration(checkpoint: Path, table: dict) -> Path:
    Calibration.from_dict(table)  # the page must be able to read what is written
    path = Path(checkpoint) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path


def calibration_markdown(table: dict) -> str:
    """The table for people: per protocol, test clips and setting, the fraction right in each bin (answers)."""
    edges = table["edges"]
    heads = [f"{lo:.0%}–{hi:.0%}" for lo, hi in zip(edges, edges[1:])]
    lines = []
    for protocol, settings in table["protocols"].items():
        lines += ["", f"{protocol} ({table['folds'][protocol]} folds), right / answers by top probability:", "",
                  "| test clips | setting | " + " | ".join(heads) + " | all |", "|---" * (len(heads) + 3) + "|"]
        rows = [("all", settings)] + sorted(table.get("corpora", {}).get(protocol, {}).items())
        for clips, by_setting in rows:
            for setting, bins in by_setting.items():
                cells = [f"{b['right'] / b['answers']:.0%} ({b['answers']})" if b["answers"] else "-" for b in bins]
                right, answers = sum(b["right"] for b in bins), sum(b["answers"] for b in bins)
                lines.append(f"| {clips} | {setting} | " + " | ".join(cells) + f" | {right / answers:.0%} ({answers}) |")
    return "\n".join(lines[1:])


def command(args) -> int:
    """`python -m train calibration`: write a checkpoint's calibration table from cv runs of its recipe."""
    from ser_demo.model import MSCNN_SPU_ATT
    from train import predictions

    checkpoint = Path(args.checkpoint)
    try:
        config = MSCNN_SPU_ATT.from_pretrained(str(checkpoint)).config
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot load the checkpoint {checkpoint}: {err}") from None
    records = predictions.load(*map(Path, args.run))
    if not records:
        raise SystemExit(f"no per-clip predictions under {' '.join(args.run)} (folds/*/{predictions.FILE}: cv writes them)")
    if list(config.labels) != list(records[0]["labels"]):
        raise SystemExit(f"the runs scored {records[0]['labels']}, the checkpoint answers {list(config.labels)}")
    share = (config.statistics_head or {}).get("share", 0.0)
    if share and not any("head" in s for r in records for s in r["settings"].values()):
        raise SystemExit("the checkpoint carries a statistics head and these folds have none: run cv with the recipe's head")
    table = calibration_table(records, share)
    print(calibration_markdown(table))
    print(f"wrote {write_calibration(checkpoint, table)}")
    return 0


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder: its head's share; the table goes to results/")
    p.add_argument("--run", required=True, nargs="+",
                   help="cv runs of the checkpoint's recipe (--out folders; e.g. speaker-independent and leave-one-corpus-out)")
