"""One analysis in words, as the app's page shows it: the prediction table (with the prediction
under uniform attention, and how often answers as sure were right in cross-validation), what
uniform attention would change, the deletion curves' sentences (`faithfulness.describe_words` /
`describe_windows`), the time of each stage, and the notes.

Plain Markdown / HTML strings, no UI imports: `app.py` puts them into its components.
"""

from __future__ import annotations

import html

from .faithfulness import describe_windows, describe_words


def prediction_summary_html(analysis) -> str:
    e = analysis.explanation
    rows = []
    for i, (label, p) in enumerate(zip(e.labels, e.probabilities)):
        style = ' style="font-weight: bold"' if i == e.target else ""
        uniform = f"{e.uniform_probabilities[i]:.4f}" if e.uniform_probabilities is not None else "-"
        name = html.escape(label)
        rows.append(f'<tr{style}><td>{name}</td><td class="probability" data-label="{name}">{p:.4f}</td>'
                    f"<td>{uniform}</td></tr>")
    return (
        f'<div id="prediction-summary"><p style="font-size: 1.3em">The model hears <b>{html.escape(e.label)}</b> '
        f"({e.probabilities[e.target]:.0%}).</p>"
        "<table><thead><tr><th>emotion</th><th>probability</th><th>with uniform attention</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        + (f'<p class="calibration">{html.escape(analysis.calibration)}</p>' if analysis.calibration else "")
        + "</div>"
    )


def uniform_markdown(analysis) -> str:
    e = analysis.explanation
    if e.uniform_probabilities is None:
        return ("*No uniform-attention comparison: it needs **audio + text**, at least one word, "
                "and the explanations switched on.*")
    same = e.uniform_label == e.label
    change = e.uniform_probabilities[e.target] - e.probabilities[e.target]
    return (
        f"With **uniform attention** (every word weighted equally) the model would say "
        f"**{e.uniform_label}** ({e.uniform_probabilities.max():.0%}); p({e.label}) changes by {change:+.3f}. "
        + ("The learned weights do not change the answer here." if same else
           "The learned attention weights **change the answer** here.")
    )


def faithfulness_markdown(analysis, unit: str) -> str:
    f = analysis.faithfulness
    if f is None:
        return "*No deletion curves: they need the explanations switched on.*"
    label = analysis.explanation.label
    return describe_words(f.words, label) if unit == "words" else describe_windows(f.windows, label)


def timings_markdown(analysis, timings: dict) -> str:
    names = {"ingest": "ingestion (decode, resample)", "encoder": "Whisper encoder (the model's pass)",
             "asr": "speech recognition (Whisper)",
             "audio features": "audio features (MFCC, speaker embedding)",
             "features": "words (GloVe) and batch", "model": "model (MSCNN-SPU-ATT)",
             "explanations": "explanations (leave-one-out, uniform, occlusion)",
             "faithfulness": "faithfulness (deletion curves)", "plots": "plots",
             "total": "**total**"}
    rows = "\n".join(f"| {names.get(k, k)} | {v * 1000:.0f} ms |" for k, v in timings.items())
    source = {"asr": "heard by Whisper", "typed": "typed", "none": "none"}[analysis.transcript_source]
    duration = f"{analysis.duration:.2f} s of audio, " if analysis.duration else ""
    return f"{duration}transcript {source}.\n\n| stage | time |\n|---|---|\n{rows}"


def notes_markdown(analysis) -> str:
    return "\n".join(f"- {note}" for note in analysis.notes)
