"""Every test clip's answer, kept per fold, so that a cross-validation can be read again later.

`cv` writes `<model>/folds/<fold>/predictions.json` next to each fold's training state: for every test
setting, each clip's corpus, file, truth and class probabilities, and, when the checkpoint has a
statistics head, the two answers it mixes (the network's and the head's). From these
`python -m train shares` scores any other share of the head on the very same folds and networks,
without training again, with `--average`, the ensemble of several trainings of the same folds, and,
with `--against`, the difference fold by fold from another run of the same folds (another training,
or the same run without the ensemble; `--clips-of` first keeps only the clips another run tested):

    p(class) = (1 - share) * p_network + share * p_head       (clips with audio; share 0: the network)
    p_network = mean of the trainings' p_network               (with --average)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ser_demo.statistics_head import StatisticsHead
from train.protocol import Fold, FoldResult, Summary, evaluate, summarize
from train.trainer import most_likely

FILE = "predictions.json"
PARTS = ("probabilities", "network", "head")


def setting_record(samples: Sequence, parts: dict[str, np.ndarray]) -> dict:
    """One test setting of one fold: who each clip is, and what the model answered."""
    record = {
        "corpus": [s.corpus for s in samples],
        "audio": [str(s.audio_path) if s.audio_path is not None else None for s in samples],
        "label": [s.label for s in samples],
    }
    for name in PARTS:
        if name in parts:
            record[name] = np.round(parts[name].astype(float), 5).tolist()
    if "heard" in parts:
        record["heard"] = parts["heard"].astype(bool).tolist()
    if "set_aside" in parts:  # the words gate left these clips' words out: the voice answered alone
        record["set_aside"] = parts["set_aside"].astype(bool).tolist()
    return record


def save(folder: Path, fold: Fold, labels: Sequence[str], settings: dict[str, dict]) -> None:
    """Write a fold's predictions (atomically: a resumed fold overwrites its earlier file)."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"fold": fold.name, "protocol": fold.protocol, "index": fold.index, "seed": fold.seed,
            "labels": list(labels), "settings": settings}
    tmp = folder / (FILE + ".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, folder / FILE)


def load(*runs: Path) -> list[dict]:
    """Every fold's predictions under cv run folders (their --out), in fold order."""
    records = [json.loads(path.read_text()) for run in runs for path in sorted(Path(run).glob(f"**/folds/*/{FILE}"))]
    return sorted(records, key=lambda r: (r["seed"], r["index"]))


def averaged(records: Sequence[dict], *others: Sequence[dict]) -> list[dict]:
    """The folds of `records` with each clip's answers averaged over other trainings of the same
    folds (`cv --init-seed`): an ensemble of the trainings' networks. The statistics head depends
    on the training clips alone, so it is the same in every training and is kept as it is."""
    out = []
    for record in records:
        partners = [same_fold(record, run, "average with") for run in others]
        settings = {}
        for name, data in record["settings"].items():
            group = [data] + [p["settings"][name] for p in partners]
            settings[name] = {**data, **{part: np.mean([g[part] for g in group], axis=0).tolist()
                                         for part in ("probabilities", "network") if part in data}}
        out.append({**record, "settings": settings})
    return out


def restricted(records: Sequence[dict], reference: Sequence[dict]) -> list[dict]:
    """The folds of `records` scored on only the clips that the same folds of `reference` tested:
    a run that trained and tested on more clips (e.g. RAVDESS calm as neutral) against one without."""
    out = []
    for record in records:
        partner = same_fold(record, reference, "keep the clips of", settings=())
        settings = {}
        for name, data in record["settings"].items():
            if name not in partner["settings"]:
                continue
            wanted = set(partner["settings"][name]["audio"])
            keep = [i for i, audio in enumerate(data["audio"]) if audio in wanted]
            settings[name] = {key: [value[i] for i in keep] if isinstance(value, list) else value
                              for key, value in data.items()}
        out.append({**record, "settings": settings})
    return out


def same_fold(record: dict, run: Sequence[dict], purpose: str, settings: Optional[Sequence[str]] = None) -> dict:
    """`record`'s fold in another run of the same folds, which must have tested the same clips in
    `settings` (default: every setting of `record`): other trainings of one fold, never other folds."""
    partner = next((r for r in run if r["fold"] == record["fold"]), None)
    if partner is None:
        raise ValueError(f"fold {record['fold']} is missing from a run to {purpose}")
    for name, data in record["settings"].items():
        if settings is not None and name not in settings:
            continue
        other = partner["settings"].get(name, {})
        if other.get("audio") != data["audio"] or other.get("label") != data["label"]:
            raise ValueError(f"fold {record['fold']}, {name}: the runs tested other clips, not other trainings")
    return partner


def mixed(setting: dict, share: float) -> np.ndarray:
    """(n, n_labels) probabilities with the head at `share` (the model's own answer where the
    fold has no head; the network's alone where the clip had no audio or share is 0)."""
    if "head" not in setting:
        return np.asarray(setting["probabilities"])
    network = torch.tensor(setting["network"], dtype=torch.float64)
    head = torch.tensor(setting["head"], dtype=torch.float64)
    heard = torch.tensor(setting["heard"])
    # StatisticsHead.fuse takes logits; log-probabilities are logits of the same softmax.
    return StatisticsHead.fuse(network.clamp_min(1e-12).log(), head.clamp_min(1e-12).log(), share, heard).softmax(-1).numpy()


def fold_result(record: dict, setting: str, share: float, corpus: Optional[str] = None) -> Optional[FoldResult]:
    """UA, WA and the rest of one fold's setting at `share`, for one corpus or all clips."""
    if setting not in record["settings"]:
        return None
    data = record["settings"][setting]
    keep = [i for i, c in enumerate(data["corpus"]) if corpus is None or c == corpus]
    if not keep:
        return None
    labels = record["labels"]
    predicted = most_likely(labels, mixed(data, share)[keep])
    fold = Fold(protocol=record["protocol"], index=record["index"], seed=record["seed"], train=(), dev=(), test=tuple(keep))
    return evaluate([data["label"][i] for i in keep], predicted, fold, labels=labels)


def corpus_columns(records: Sequence[dict], setting: str) -> list[Optional[str]]:
    """The columns of a setting's tables: all clips (None), then each test corpus when there are several."""
    corpora = sorted({c for r in records for c in r["settings"].get(setting, {}).get("corpus", [])})
    return [None, *corpora] if len(corpora) > 1 else [None]


def share_table(columns: Sequence[Optional[str]], shares: Sequence[float], cell) -> str:
    """A markdown table with a row per share and a column per corpus; `cell(share, corpus)` fills it."""
    lines = [f"| head share | {' | '.join(c or 'all clips' for c in columns)} |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {share:g} | {' | '.join(cell(share, corpus) for corpus in columns)} |" for share in shares]
    return "\n".join(lines)


def share_summaries(records: Sequence[dict], setting: str, shares: Sequence[float]) -> dict[str, dict[float, Summary]]:
    """{"all clips" or corpus: {share: Summary over the folds}} for one test setting."""
    table = {}
    for corpus in corpus_columns(records, setting):
        row = {}
        for share in shares:
            results = [x for x in (fold_result(r, setting, share, corpus) for r in records) if x is not None]
            if results:
                row[share] = summarize(results)
        table[corpus or "all clips"] = row
    return table


def shares_markdown(records: Sequence[dict], setting: str, shares: Sequence[float]) -> str:
    """UA (mean ± std over folds, in %) of one setting at each share, per test corpus."""
    table = share_summaries(records, setting, shares)

    def cell(share: float, corpus: Optional[str]) -> str:
        summary = table[corpus or "all clips"].get(share)
        return f"{100 * summary.ua_mean:.1f} ± {100 * summary.ua_std:.1f} ({summary.n_runs})" if summary else "–"

    return share_table(corpus_columns(records, setting), shares, cell)


def paired_markdown(records: Sequence[dict], reference: Sequence[dict], setting: str, shares: Sequence[float]) -> str:
    """UA of `records` minus UA of the same folds in `reference`, fold by fold, at each share, per test
    corpus: the mean difference in points, the folds higher and lower, and the mean and largest |difference|."""
    pairs = [(r, same_fold(r, reference, "compare with", [setting])) for r in records if setting in r["settings"]]

    def cell(share: float, corpus: Optional[str]) -> str:
        results = [(fold_result(r, setting, share, corpus), fold_result(o, setting, share, corpus)) for r, o in pairs]
        # rounded: the same answers give UAs that differ in the last bits, which is no change
        gaps = np.round([100 * (a.ua - b.ua) for a, b in results if a is not None], 6)
        if not len(gaps):
            return "–"
        return (f"{gaps.mean():+.1f} (↑{(gaps > 0).sum()} ↓{(gaps < 0).sum()} of {len(gaps)}; "
                f"mean abs {np.abs(gaps).mean():.1f}, max {np.abs(gaps).max():.1f})")

    return share_table(corpus_columns([r for r, _ in pairs], setting), shares, cell)
