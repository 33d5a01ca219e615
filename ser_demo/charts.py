"""Charts the browser draws: the deletion curves as inline SVG, the SPU statistics as HTML.

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
from typing import Callable, Sequence

import numpy as np

STAT_NAMES = {"max": "max", "avg": "mean", "std": "std"}

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
    """A `faithfulness.DeletionCurves` as a chart: p(label) as the top-ranked units of each order
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
