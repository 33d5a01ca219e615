"""Charts the browser draws: the class probabilities as bars, the attention weights with each
word's leave-one-word-out influence (a heat table, and the transcript shaded by them), the deletion
curves as inline SVG, the SPU statistics as HTML.

A chart of a few lines and a dozen points is text the browser draws: crisp at any zoom, with the
page's own font and colours (currentColor, so a dark theme works too), a tooltip per point, and
well under a millisecond on the server where matplotlib took about 70 ms to draw the same chart.
A small heat map (7 kernel sizes x 128 filters) is a PNG of one pixel per value that the browser
scales up, with its labels and colour bar in HTML: a few milliseconds where matplotlib took 55 ms
and Gradio another 12 ms to encode its 1000 x 400 pixels.
No UI imports: the app puts the strings into HTML components.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Callable, Optional, Sequence

import numpy as np

STAT_NAMES = {"max": "max", "avg": "mean", "std": "std"}
LABEL_COLORS = {"angry": "#d62728", "happy": "#ff9f1c", "sad": "#1f77b4", "neutral": "#7f7f7f"}

# order -> (colour, SVG dash pattern); the random baseline is grey and dashed
ORDER_STYLES = {
    "attention": ("#ff7f0e", ""), "leave-one-out": ("#2ca02c", ""), "gradient": ("#1f77b4", ""),
    "occlusion": ("#2ca02c", ""), "random": ("#7f7f7f", "5 3"),
}
WIDTH, HEIGHT = 600, 240  # the size the matplotlib figure had (6 x 2.4 in at 100 dpi)
LEFT, RIGHT, TOP, BOTTOM = 56, 170, 30, 46  # plot margins; the legend sits right of the plot


def integer_ticks(high: int, bins: int = 6) -> list[int]:
    """At most about `bins` + 1 round integer ticks from 0 to `high` (1, 2 or 5 times a power of 10 apart)."""
    high = max(int(high), 1)
    step = 1
    for scale in (1, 10, 100, 1000, 10_000):
        step = next((m * scale for m in (1, 2, 5) if high / (m * scale) <= bins), None)
        if step:
            break
    return list(range(0, high + 1, step or high))


def _text(x: float, y: float, text: str, anchor: str = "middle", size: int = 11, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="currentColor"{extra}>'
            f"{html.escape(text)}</text>")


def line_chart_svg(x: Sequence[float], lines: dict, *, title: str, x_label: str, y_label: str,
                   legend: dict, tooltip: Callable[[str, float, float], str], x_max: float) -> str:
    """An SVG chart of `lines` (name -> y values over `x`, in [0, 1]) with a legend (name ->
    text) and `tooltip(name, x, y)` on every point."""
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_max = max(float(x_max), 1.0)

    def px(v):
        return LEFT + w * float(v) / x_max

    def py(v):
        return TOP + h * (1.0 - float(np.clip(v, 0.0, 1.0)))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'style="width: 100%; max-width: {WIDTH}px; height: auto; font-family: inherit" '
             f'aria-label="{html.escape(title, quote=True)}">',
             f"<title>{html.escape(title)}</title>",
             _text(LEFT, TOP - 10, title, "start", 13)]
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):  # horizontal grid and y ticks
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="currentColor" '
                     f'stroke-opacity="{0.45 if v in (0.0, 1.0) else 0.15}"/>')
        if v in (0.0, 0.5, 1.0):
            parts.append(_text(LEFT - 6, py(v) + 4, f"{v:g}", "end", 10))
    for t in integer_ticks(int(np.ceil(x_max))):  # vertical grid and x ticks
        parts.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{TOP}" y2="{TOP + h}" stroke="currentColor" '
                     'stroke-opacity="0.15"/>')
        parts.append(_text(px(t), TOP + h + 15, str(t), "middle", 10))
    parts.append(_text(LEFT + w / 2, HEIGHT - 8, x_label, "middle", 11))
    parts.append(_text(16, TOP + h / 2, y_label, "middle", 11, f' transform="rotate(-90 16 {TOP + h / 2:.1f})"'))
    for i, (name, y) in enumerate(lines.items()):
        colour, dash = ORDER_STYLES.get(name, ("#444444", ""))
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"{dashes}/>')
        for a, b in zip(x, y):
            tip = html.escape(tooltip(name, a, b))
            parts.append(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{colour}"><title>{tip}</title></circle>')
        ly = TOP + 8 + 18 * i  # legend entry
        parts.append(f'<line x1="{LEFT + w + 14}" x2="{LEFT + w + 38}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                     f'stroke-width="1.8"{dashes}/>')
        parts.append(_text(LEFT + w + 44, ly + 4, legend.get(name, name), "start", 10))
    parts.append("</svg>")
    return "".join(parts)


def deletion_curves_svg(curves, label: str) -> str:
    """A `deletion_curves.DeletionCurves` as a chart: p(label) as the top-ranked units of each order
    are removed, one line per order (a faithful order falls fast; random is dashed)."""
    unit = "words" if curves.unit == "word" else "windows"
    how = {"mask": "masked", "delete": "deleted"}[curves.removal] if curves.unit == "word" else (
        "hidden" if curves.removal == "mask" else "cut out")
    legend = {name: name if name != "random" else f"random ({curves.permutations} orders)" for name in curves.deletion}
    return line_chart_svg(
        curves.steps.tolist(), {name: np.asarray(p).tolist() for name, p in curves.deletion.items()},
        title=f"p({label}) as the top {unit} are {how}", x_label=f"number of {unit}", y_label=f"p({label})",
        legend=legend, tooltip=lambda name, k, p: f"{name}: {k} {unit if k != 1 else unit[:-1]} {how}, p({label}) = {p:.3f}", x_max=curves.n_units)


# --- heat maps -------------------------------------------------------------------------------


def heat_map_png(values: np.ndarray, low: float, high: float, cmap: str = "viridis") -> str:
    """A data: URI of a PNG with one pixel per value (first row on top), coloured as matplotlib's
    imshow would colour it between `low` and `high`."""
    from matplotlib import colormaps
    from PIL import Image

    scaled = np.clip((np.asarray(values, dtype=np.float64) - low) / ((high - low) or 1.0), 0.0, 1.0)
    rgb = (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gradient_css(cmap: str = "viridis", stops: int = 11) -> str:
    """A CSS linear-gradient (bottom to top) of a matplotlib colour map: a colour bar."""
    from matplotlib import colormaps

    colours = colormaps[cmap](np.linspace(0.0, 1.0, stops))[:, :3]
    return "linear-gradient(to top, " + ", ".join(
        f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f}) {100 * i / (stops - 1):.0f}%"
        for i, (r, g, b) in enumerate(colours)) + ")"


def kernel_label(kernel, frame_seconds: float = 0.01) -> str:
    """A row of the SPU chart: a kernel size in MFCC frames, or (front-end, size) from
    `ModelConfig.audio_kernels` (a Whisper encoder state spans two MFCC frames)."""
    frontend, k = kernel if isinstance(kernel, (tuple, list)) else ("mfcc", kernel)
    step = frame_seconds * (2 if frontend == "whisper" else 1)
    return f"{'Whisper' if frontend == 'whisper' else 'MFCC'} {k} ({k * step * 1000:.0f} ms)"


def spu_html(audio_statistics: np.ndarray, kernel_sizes: Sequence, statistics: Sequence[str],
             frame_seconds: float = 0.01, row_height: int = 26) -> str:
    """One heat map per pooling view (max, mean, std): kernel sizes as rows, the filters as
    columns sorted by their mean value (the pattern is easier to read), on one shared colour
    scale so the three views can be compared directly, with a colour bar."""
    stats = np.asarray(audio_statistics, dtype=np.float64)  # (Ka, S, F)
    order = np.argsort(stats.mean(axis=(0, 1)))[::-1]
    high = float(stats.max()) or 1.0
    rows, filters = stats.shape[0], stats.shape[2]
    height = rows * row_height
    cell = "font-size: 0.85em"
    labels = "".join(f'<div style="height: {row_height}px; line-height: {row_height}px; white-space: nowrap">'
                     f"{html.escape(kernel_label(k, frame_seconds))}</div>" for k in kernel_sizes)
    heads = "".join(f'<div style="text-align: center">{html.escape(STAT_NAMES.get(s, s))} over time</div>'
                    for s in statistics)
    maps = "".join(
        f'<img src="{heat_map_png(stats[:, j, order], 0.0, high)}" alt="{html.escape(STAT_NAMES.get(s, s))} of every '
        f'filter per kernel size" style="width: 100%; height: {height}px; image-rendering: pixelated; display: block">'
        for j, s in enumerate(statistics))
    bar = (f'<div style="display: flex; gap: 4px; height: {height}px"><div style="width: 12px; '
           f'background: {gradient_css()}"></div><div style="display: flex; flex-direction: column; '
           f'justify-content: space-between; {cell}"><span>{high:.2g}</span><span>{high / 2:.2g}</span><span>0</span>'
           f'</div><div style="writing-mode: vertical-rl; transform: rotate(180deg); text-align: center; {cell}">'
           "filter output</div></div>")
    n = len(statistics)
    return (f'<div class="ser-spu" style="display: grid; grid-template-columns: max-content repeat({n}, 1fr) '
            f'max-content; gap: 4px 8px; align-items: end">'
            f'<div style="{cell}; text-align: right">kernel size</div>{heads}<div></div>'
            f'<div style="{cell}; text-align: right">{labels}</div>{maps}{bar}'
            f'<div></div><div style="grid-column: span {n}; text-align: center; {cell}">{filters} filters, '
            "sorted by mean output</div><div></div></div>")


# --- class probabilities ---------------------------------------------------------------------


def probabilities_html(labels: Sequence[str], probabilities: Sequence[float],
                       uniform: Optional[Sequence[float]] = None, mixed_from: Optional[tuple] = None) -> str:
    """Horizontal bars of the class probabilities, the predicted class outlined; under each bar a
    thin hatched grey one: the same recording with uniform attention (when given). `mixed_from`:
    (network's probabilities, statistics head's, head's share) when the answer mixes the two."""
    probabilities = np.asarray(probabilities, dtype=float)
    top = int(np.argmax(probabilities))
    rows = []
    for i, (label, p) in enumerate(zip(labels, probabilities)):
        name = html.escape(label)
        outline = " outline: 2px solid currentColor;" if i == top else ""
        bars = (f'<div title="{name}: {p:.1%}" style="width: {p * 100:.1f}%; height: 16px; '
                f'background: {LABEL_COLORS.get(label, "#444444")};{outline}"></div>')
        if uniform is not None:
            bars += (f'<div title="{name} with uniform attention: {uniform[i]:.1%}" style="width: '
                     f'{uniform[i] * 100:.1f}%; height: 6px; margin-top: 2px; background: '
                     'repeating-linear-gradient(135deg, #bbbbbb 0 3px, #777777 3px 5px)"></div>')
        weight = "bold" if i == top else "normal"
        rows.append(
            f'<div style="display: flex; align-items: center; gap: 8px; margin: 5px 0">'
            f'<span style="width: 4.5em; text-align: right; font-weight: {weight}">{name}</span>'
            f'<span style="flex: 1; background: rgba(127,127,127,0.12)">{bars}</span>'
            f'<span class="bar-value" style="width: 3em; font-weight: {weight}">{p:.0%}</span></div>'
        )
    legend = ('<div style="font-size: 0.85em; opacity: 0.8">hatched: the prediction with uniform attention</div>'
              if uniform is not None else "")
    if mixed_from is not None:
        network, head, share = (np.asarray(mixed_from[0]), np.asarray(mixed_from[1]), mixed_from[2])
        answer = lambda p: f"<b>{html.escape(labels[int(np.argmax(p))])}</b> ({np.max(p):.0%})"  # noqa: E731
        legend += (f'<div class="mixed-from" style="font-size: 0.85em; opacity: 0.8">mixed from two answers: '
                   f"MSCNN-SPU-ATT's own, {answer(network)}, weighted {1 - share:.0%}, and a linear head on the "
                   f"clip's statistics, {answer(head)}, weighted {share:.0%}</div>")
    return (f'<div class="ser-probabilities"><div style="font-size: 1.1em">Prediction: '
            f"<b>{html.escape(labels[top])}</b> ({probabilities[top]:.0%})</div>{''.join(rows)}{legend}</div>")


# --- attention and word influence ------------------------------------------------------------


def attention_table_html(
    tokens: Sequence[str],
    attention: Optional[np.ndarray],
    statistics: Sequence[str],
    influence: Optional[np.ndarray] = None,
    token_times: Optional[Sequence] = None,
) -> str:
    """A heat table: how much each audio context vector (rows max, mean, std; each row sums to 1)
    looks at each word (columns, with the time Whisper heard it); under it, leave-one-word-out:
    how much the predicted class's probability drops without the word (a bar up, green: the word
    supports the answer; down, purple: it speaks against it)."""
    tokens = list(tokens)
    if not tokens or (attention is None and influence is None):
        return "<p><em>No words to show (audio only, or an empty transcript).</em></p>"
    cell = "padding: 2px 4px; text-align: center; min-width: 3.2em; border: none"
    head = "".join(
        f'<th style="{cell}; font-weight: normal">{html.escape(t)}'
        + (f'<br><small style="opacity: 0.7">{tt[0]:.2f}s</small>' if tt else "") + "</th>"
        for t, tt in zip(tokens, list(token_times or []) + [None] * len(tokens))
    )
    rows = []
    if attention is not None:
        att = np.asarray(attention, dtype=float)
        peak = max(float(att.max()), 1e-9)
        for j, s in enumerate(statistics):
            cells = "".join(
                f'<td style="{cell}; background: rgba(230,85,13,{w / peak:.2f}); '
                f'color: {"white" if w > 0.6 * peak else "inherit"}">{w:.2f}</td>'
                for w in att[j]
            )
            rows.append(f'<tr><th style="{cell}; text-align: right">{html.escape(STAT_NAMES.get(s, s))} context</th>'
                        f"{cells}</tr>")
    if influence is not None:
        infl = np.asarray(influence, dtype=float)
        peak = max(float(np.abs(infl).max()), 1e-9)
        cells = []
        for v in infl:
            size = abs(v) / peak * 50
            where = f"bottom: 50%; height: {size:.0f}%" if v >= 0 else f"top: 50%; height: {size:.0f}%"
            color = "#2ca02c" if v >= 0 else "#9467bd"
            cells.append(
                f'<td style="{cell}"><div style="position: relative; height: 44px; border-bottom: none">'
                f'<div style="position: absolute; left: 0; right: 0; top: 50%; border-top: 1px solid currentColor; '
                f'opacity: 0.5"></div><div style="position: absolute; left: 25%; right: 25%; {where}; '
                f'background: {color}"></div></div><small>{v:+.3f}</small></td>'
            )
        rows.append(f'<tr><th style="{cell}; text-align: right">leave one out<br><small style="font-weight: '
                    f'normal">p lost without the word</small></th>{"".join(cells)}</tr>')
    return ('<div class="ser-attention-table" style="overflow-x: auto"><table style="border-collapse: collapse; '
            f'width: auto; margin: 0"><thead><tr><th style="{cell}"></th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def attention_html(
    tokens: Sequence[str],
    attention: Optional[np.ndarray],
    statistics: Sequence[str],
    influence: Optional[np.ndarray] = None,
    token_times: Optional[Sequence] = None,
) -> str:
    """The transcript once per context vector, each word shaded by its attention weight, and once
    more coloured by its leave-one-word-out influence (green: supports the answer)."""
    if not tokens:
        return "<p><em>No words: audio only, or an empty transcript.</em></p>"

    def word(tok: str, alpha: float, rgb: str, title: str) -> str:
        return (f'<span title="{html.escape(title, quote=True)}" style="background: rgba({rgb},{alpha:.2f});'
                f' padding: 1px 3px; margin: 1px; border-radius: 3px; display: inline-block">'
                f"{html.escape(tok)}</span>")

    def when(i: int) -> str:
        tt = token_times[i] if token_times and i < len(token_times) else None
        return f" at {tt[0]:.2f}-{tt[1]:.2f} s" if tt else ""

    lines = []
    if attention is not None:
        att = np.asarray(attention, dtype=float)
        for j, s in enumerate(statistics):
            peak = max(float(att[j].max()), 1e-9)
            spans = " ".join(word(t, float(att[j, i]) / peak, "255,127,14", f"weight {att[j, i]:.3f}{when(i)}")
                             for i, t in enumerate(tokens))
            lines.append(f'<div style="margin: 4px 0"><b style="display: inline-block; width: 9em">'
                         f"{html.escape(STAT_NAMES.get(s, s))} context</b> {spans}</div>")
    if influence is not None:
        infl = np.asarray(influence, dtype=float)
        peak = max(float(np.abs(infl).max()), 1e-9)
        spans = " ".join(
            word(t, abs(float(infl[i])) / peak, "44,160,44" if infl[i] >= 0 else "148,103,189",
                 # influence = p(with) - p(without): the change without the word is its negative
                 f"change in probability without this word: {-infl[i]:+.4f}{when(i)}")
            for i, t in enumerate(tokens)
        )
        lines.append('<div style="margin: 4px 0"><b style="display: inline-block; width: 9em">'
                     f"leave one out</b> {spans}</div>")
    return '<div class="ser-highlight" style="line-height: 2">' + "".join(lines) + "</div>"
