"""Results tables in the paper's layout, as markdown (for READMEs) and JSON (for machines).

Table 1 compares models and settings (ground-truth vs ASR transcripts, audio/text/both);
Table 2 is the ablation study (the full model with one component removed at a time). Both show
WA and UA in percent as mean ± std over all folds and repeats, and always name the protocol.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from train.protocol import Summary


@dataclass
class ResultRow:
    model: str  # e.g. "MSCNN-SPU-ATT", "w/o SPU"
    setting: str  # e.g. "audio + ground-truth text", "audio + ASR text", "audio only"
    summary: Summary


def _percent(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _protocol_note(rows: Sequence[ResultRow]) -> str:
    protocols = sorted({row.summary.protocol for row in rows})
    runs = sorted({row.summary.n_runs for row in rows})
    return (
        f"Protocol: {', '.join(protocols)}; runs per row: {', '.join(map(str, runs))}. "
        "WA = overall accuracy, UA = mean per-class recall; mean ± std (n - 1) in %."
    )


def table1_markdown(rows: Sequence[ResultRow], title: str = "Table 1. Comparison of models and settings") -> str:
    lines = [
        f"**{title}**",
        "",
        "| Model | Setting | Protocol | WA (%) | UA (%) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        s = row.summary
        lines.append(
            f"| {row.model} | {row.setting} | {s.protocol} | {_percent(s.wa_mean, s.wa_std)} | {_percent(s.ua_mean, s.ua_std)} |"
        )
    return "\n".join(lines + ["", _protocol_note(rows), ""])


def table2_markdown(
    rows: Sequence[ResultRow],
    reference: str | None = None,
    title: str = "Table 2. Ablation study",
) -> str:
    """Ablation rows; with ``reference`` (a row's model name), also the UA change against it."""
    reference_row = next((r for r in rows if r.model == reference), None)
    if reference is not None and reference_row is None:
        raise ValueError(f"reference row {reference!r} is not among the rows")
    header = "| Model | Setting | Protocol | WA (%) | UA (%) |" + (" ΔUA (pp) |" if reference_row else "")
    lines = [f"**{title}**", "", header, "|---" * (6 if reference_row else 5) + "|"]
    for row in rows:
        s = row.summary
        line = f"| {row.model} | {row.setting} | {s.protocol} | {_percent(s.wa_mean, s.wa_std)} | {_percent(s.ua_mean, s.ua_std)} |"
        if reference_row:
            line += f" {100 * (s.ua_mean - reference_row.summary.ua_mean):+.2f} |"
        lines.append(line)
    return "\n".join(lines + ["", _protocol_note(rows), ""])


def rows_json(rows: Sequence[ResultRow]) -> list[dict]:
    return [
        {"model": row.model, "setting": row.setting, **row.summary.as_dict()}
        for row in rows
    ]


def write_report(
    folder: str | os.PathLike,
    table1: Sequence[ResultRow],
    table2: Sequence[ResultRow] = (),
    *,
    ablation_reference: str | None = None,
) -> tuple[Path, Path]:
    """Write results.md and results.json into folder; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = [table1_markdown(table1)] if table1 else []  # an ablation run has only Table 2
    if table2:
        parts.append(table2_markdown(table2, reference=ablation_reference))
    markdown = "\n".join(parts)
    markdown_path = folder / "results.md"
    json_path = folder / "results.json"
    markdown_path.write_text(markdown, encoding="utf-8")
    json_path.write_text(
        json.dumps({"table1": rows_json(table1), "table2": rows_json(table2)}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return markdown_path, json_path
