"""The pictures the app shows, for a classroom: one figure drawn by matplotlib and HTML views.

The MFCC + delta + delta-delta heat maps (and Whisper's encoder states) with the audio relevance
under them are a matplotlib figure made with the object-oriented API (Agg canvas, no pyplot, no
UI toolkit). Building a figure costs about as much as drawing it twice, so each layout is built
once and later calls only replace its data (`plot_mfcc` returns that shared figure): a figure is
valid until the next call for the same layout, so callers hold `LOCK` (matplotlib is not
thread-safe either) from the plot call until `render` has copied the pixels. Drawing is mostly
text, and most of the text is the heat maps': `draw_heat_maps` draws them before the words are
known (while Whisper transcribes), and `finish_mfcc` then draws only the relevance row over them.

What is a table or a bar chart in spirit is HTML, drawn by the browser, crisp at any zoom and free
on the server: the class probabilities (`probabilities_html`), the attention weights with each
word's leave-one-word-out influence (`attention_table_html`), and the transcript shaded by them
(`attention_html`); the SPU statistics (`charts.spu_html`: heat maps of one pixel per value that
the browser scales) and the deletion curves (`charts.deletion_curves_svg`, inline SVG).
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg", force=False)  # a no-op where a backend is already chosen; we never show

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .charts import STAT_NAMES, deletion_curves_svg, spu_html  # noqa: E402

LOCK = threading.RLock()
DPI = 100
LABEL_COLORS = {"angry": "#d62728", "happy": "#ff9f1c", "sad": "#1f77b4", "neutral": "#7f7f7f"}


def _figure(width: float, height: float) -> Figure:
    # A fixed layout: constrained/tight layout would triple the drawing time of these figures.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _margins(fig: Figure, left=0.9, right=0.9, top=0.35, bottom=0.5, hspace=0.45, wspace=0.25) -> None:
    """subplots_adjust with margins in inches (the figures differ in size, the text does not)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        hspace=hspace, wspace=wspace)


def _colorbar(fig: Figure, ax, cmap: str, label: str = ""):
    """A colour bar in a slim axes just right of `ax`: a gradient image whose extent and limits
    `_set_colors` moves. (matplotlib's Colorbar rebuilds its mesh on every change of limits,
    which costs more than drawing the heat map itself.)"""
    box = ax.get_position()
    cax = fig.add_axes((box.x1 + 0.01, box.y0, 0.012, box.height))
    cax.imshow(np.linspace(0.0, 1.0, 256)[:, None], aspect="auto", cmap=cmap, origin="lower",
               extent=(0.0, 1.0, 0.0, 1.0), interpolation="nearest")
    cax.set_xticks([])
    cax.yaxis.tick_right()
    cax.yaxis.set_major_locator(MaxNLocator(3))
    cax.tick_params(labelsize=8)
    if label:
        cax.yaxis.set_label_position("right")
        cax.set_ylabel(label, fontsize=8)
    _fix_label(cax.yaxis, 0.4)
    _fix_label(cax.xaxis, -0.1)
    return cax


def _fix_label(axis, inches: float) -> None:
    """Put an axis label `inches` outside its axes (negative: left of / below it). Fixed
    coordinates also spare matplotlib measuring every tick label to place it, on every draw."""
    ax = axis.axes
    box = ax.get_position()
    width, height = box.width * ax.figure.get_figwidth(), box.height * ax.figure.get_figheight()
    if axis is ax.yaxis:
        axis.set_label_coords(inches / width if inches < 0 else 1 + inches / width, 0.5)
    else:
        axis.set_label_coords(0.5, inches / height)


def _set_colors(image, cax, low: float, high: float) -> None:
    """The colour limits of a heat map and of its colour bar."""
    high = high if high > low else low + 1e-6
    image.set_clim(low, high)
    cax.images[0].set_extent((0.0, 1.0, low, high))
    cax.set_ylim(low, high)


def render(fig: Figure) -> np.ndarray:
    """Draw `fig` into a new (H, W, 3) uint8 array."""
    with LOCK:
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _title(ax, text: str):
    """A left-aligned title as plain text: set_title re-measures the axis on every draw."""
    return ax.text(0.0, 1.03, text, transform=ax.transAxes, fontsize=10, ha="left", va="bottom")


def _spoken_words(tokens: Sequence[str], token_times: Sequence) -> list[tuple[str, tuple]]:
    """Tokens that share one ASR word ("ca" + "n't") become one label at that word's time."""
    merged: list[tuple[str, tuple]] = []
    for tok, tt in zip(tokens, token_times):
        if not tt:
            continue
        if merged and merged[-1][1] == tuple(tt):
            merged[-1] = (merged[-1][0] + tok, merged[-1][1])
        else:
            merged.append((tok, tuple(tt)))
    return merged


# --- 1. class probabilities (HTML) -----------------------------------------------------------


def probabilities_html(labels: Sequence[str], probabilities: Sequence[float],
                       uniform: Optional[Sequence[float]] = None) -> str:
    """Horizontal bars of the class probabilities, the predicted class outlined; under each bar a
    thin hatched grey one: the same recording with uniform attention (when given)."""
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
    return (f'<div class="ser-probabilities"><div style="font-size: 1.1em">Prediction: '
            f"<b>{html.escape(labels[top])}</b> ({probabilities[top]:.0%})</div>{''.join(rows)}{legend}</div>")


# --- 2. MFCC + delta + delta-delta, with the audio relevance under it -------------------------

_FIGURES: dict = {}  # layout key -> the figure and the artists that a new call updates
_MAX_LAYOUTS = 12  # a few layouts per app (checkpoints, with/without relevance, curves); bounded anyway


def _layout(key, build):
    with LOCK:
        if key not in _FIGURES:
            if len(_FIGURES) >= _MAX_LAYOUTS:
                _FIGURES.pop(next(iter(_FIGURES)))
            _FIGURES[key] = build()
        return _FIGURES[key]


def _audio_blocks(mfcc: Optional[np.ndarray], frame_seconds: float, encoder_states: Optional[np.ndarray]) -> list:
    """What the audio branch reads, as heat maps: (title, matrix, seconds per column, colour map,
    (low, high))."""
    blocks = []
    if mfcc is not None:
        n = mfcc.shape[0] // 3
        for i, name in enumerate(("MFCC", "delta (change)", "delta-delta (acceleration)")):
            block = mfcc[i * n:(i + 1) * n]
            if i == 0:  # c0 (loudness) is far larger than the rest: scale the colours without it
                low, high = np.percentile(block[1:], [1, 99]) if n > 1 else (block.min(), block.max())
                blocks.append((name, block, frame_seconds, "magma", (float(low), float(high))))
            else:
                high = float(np.percentile(np.abs(block), 99)) or 1.0
                blocks.append((name, block, frame_seconds, "coolwarm", (-high, high)))
    if encoder_states is not None:
        high = float(np.percentile(np.abs(encoder_states), 99)) or 1.0
        blocks.append((f"Whisper encoder states ({encoder_states.shape[0]} numbers per 20 ms)", encoder_states,
                       2 * frame_seconds, "coolwarm", (-high, high)))
    return blocks


def _build_mfcc(spec: tuple, relevance: bool, frame_seconds: float) -> dict:
    """The figure for heat maps `spec` ((title, rows, seconds per column, colour map), ...) and,
    when `relevance`, the relevance row under them."""
    rows = len(spec) + relevance
    fig = _figure(10.0, 1.55 * rows + 0.6)
    _margins(fig, left=0.75, right=0.8, top=0.3, bottom=0.5, hspace=0.4)
    # Not sharex: the upper rows carry no time ticks at all (each tick is an artist to draw).
    axes = fig.subplots(rows, 1, squeeze=False,
                        gridspec_kw={"height_ratios": [1.0] * len(spec) + ([0.9] if relevance else [])})[:, 0]
    images, bars = [], []
    for i, (ax, (name, n, step, cmap)) in enumerate(zip(axes, spec)):
        im = ax.imshow(np.zeros((n, 2)), aspect="auto", origin="lower", extent=(0.0, 1.0, -0.5, n - 0.5),
                       cmap=cmap, interpolation="nearest")
        ax.set_ylabel("coef." if step == frame_seconds else "dim.", fontsize=9)
        _fix_label(ax.yaxis, -0.33)
        _fix_label(ax.xaxis, -0.28)
        ax.set_yticks([0, n // 2, n - 1])
        if i < rows - 1:
            ax.set_xticks([])
        _title(ax, name)
        bars.append(_colorbar(fig, ax, cmap))
        images.append(im)
    layout = {"fig": fig, "axes": axes, "images": images, "bars": bars, "relevance": []}
    if relevance:
        ax = axes[-1]
        ax.axhline(0, color="black", linewidth=0.6)
        layout["relevance_title"] = _title(ax, "")
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.set_ylabel("relevance", fontsize=9)
        _fix_label(ax.yaxis, -0.55)
        _fix_label(ax.xaxis, -0.28)
    axes[-1].set_xlabel("time (s)")
    return layout


def _heat_maps(mfcc, frame_seconds: float, encoder_states, relevance: bool) -> tuple[tuple, dict, float]:
    """The layout for these heat maps (with or without the relevance row), their data set in;
    -> (layout key, layout, duration in seconds). Hold LOCK."""
    blocks = _audio_blocks(mfcc, frame_seconds, encoder_states)
    duration = max(block.shape[1] * step for _, block, step, _, _ in blocks)
    spec = tuple((name, block.shape[0], step, cmap) for name, block, step, cmap, _ in blocks)
    key = ("mfcc", spec, relevance, float(frame_seconds))
    layout = _layout(key, lambda: _build_mfcc(spec, relevance, frame_seconds))
    for ax, im, bar, (_, block, step, _, (low, high)) in zip(layout["axes"], layout["images"], layout["bars"], blocks):
        im.set_data(block)
        im.set_extent((0.0, block.shape[1] * step, -0.5, block.shape[0] - 0.5))
        _set_colors(im, bar, low, high)
        ax.set_xlim(0, duration)
    layout["axes"][-1].set_xlim(0, duration)
    return key, layout, duration


def plot_mfcc(
    mfcc: Optional[np.ndarray],
    frame_seconds: float,
    relevance: Optional[np.ndarray] = None,
    relevance_method: str = "occlusion",
    tokens: Optional[Sequence[str]] = None,
    token_times: Optional[Sequence] = None,
    encoder_states: Optional[np.ndarray] = None,
) -> Figure:
    """What the audio branch reads, over time in seconds: the MFCC, delta and delta-delta heat
    maps and/or the Whisper encoder states (one column per 20 ms); under them, when given, how
    much each moment pushed the decision towards the predicted class. Returns the shared figure
    of this layout (valid until the next call; hold LOCK until it is rendered)."""
    with LOCK:
        _, layout, _ = _heat_maps(mfcc, frame_seconds, encoder_states, relevance is not None)
        if relevance is not None:
            _draw_relevance(layout, layout["axes"][-1], np.asarray(relevance, dtype=float), frame_seconds,
                            relevance_method, tokens, token_times)
        return layout["fig"]


@dataclass
class HeatMaps:
    """The MFCC figure drawn before the words are known (`draw_heat_maps`): its pixels, with the
    relevance row left blank for `finish_mfcc` to draw in."""

    key: tuple  # the layout's
    pixels: object  # the whole canvas (matplotlib BufferRegion)
    duration: float
    frame_seconds: float
    relevance: bool  # whether the layout has a relevance row


def draw_heat_maps(mfcc: Optional[np.ndarray], frame_seconds: float, encoder_states: Optional[np.ndarray] = None,
                   relevance: bool = True) -> Optional[HeatMaps]:
    """Draw everything of the MFCC figure but the relevance row, which needs the words (the app
    draws this while Whisper transcribes); None when there is no audio to draw. Text is what costs
    (glyphs, measured on every draw), and most of it is here."""
    if not any(x is not None and x.shape[1] > 0 for x in (mfcc, encoder_states)):
        return None
    with LOCK:
        key, layout, duration = _heat_maps(mfcc, frame_seconds, encoder_states, relevance)
        fig, row = layout["fig"], layout["axes"][-1]
        row.set_visible(not relevance)
        try:
            fig.canvas.draw()
        finally:
            row.set_visible(True)
        return HeatMaps(key, fig.canvas.copy_from_bbox(fig.bbox), duration, frame_seconds, relevance)


def finish_mfcc(heat_maps: HeatMaps, relevance: Optional[np.ndarray] = None, relevance_method: str = "occlusion",
                tokens: Optional[Sequence[str]] = None, token_times: Optional[Sequence] = None) -> Optional[np.ndarray]:
    """The MFCC figure of `heat_maps` with its relevance row drawn in: the same pixels as `render`
    of `plot_mfcc` with the same data. None when the layout has left the cache meanwhile, or when
    `relevance` does not match the layout (draw the whole figure then)."""
    with LOCK:
        layout = _FIGURES.get(heat_maps.key)
        if layout is None or heat_maps.relevance != (relevance is not None):
            return None
        canvas = layout["fig"].canvas
        canvas.restore_region(heat_maps.pixels)
        if relevance is not None:
            ax = layout["axes"][-1]
            ax.set_xlim(0, heat_maps.duration)
            _draw_relevance(layout, ax, np.asarray(relevance, dtype=float), heat_maps.frame_seconds,
                            relevance_method, tokens, token_times)
            layout["fig"].draw_artist(ax)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _draw_relevance(layout: dict, ax, relevance: np.ndarray, frame_seconds: float, method: str,
                    tokens, token_times) -> None:
    for artist in layout["relevance"]:  # the previous recording's
        artist.remove()
    t = (np.arange(len(relevance)) + 0.5) * frame_seconds
    artists = [ax.fill_between(t, 0, np.maximum(relevance, 0), color="#2ca02c", step="mid"),
               ax.fill_between(t, 0, np.minimum(relevance, 0), color="#9467bd", step="mid")]
    what = "drop in probability when hidden" if method == "occlusion" else "gradient x input"
    layout["relevance_title"].set_text(
        f"Which moments drive the decision ({what}; green: supports the answer, purple: speaks against it)")
    if tokens and token_times:  # the words, where the ASR said when they were spoken
        for text, (start, end) in _spoken_words(tokens, token_times):
            artists.append(ax.axvline(start, color="#cccccc", linewidth=0.6, zorder=0))
            artists.append(ax.text((start + end) / 2, 0.97, text, ha="center", va="top", fontsize=8,
                                   transform=ax.get_xaxis_transform(),
                                   bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1}))
    layout["relevance"] = artists
    low, high = min(0.0, float(relevance.min(initial=0.0))), max(0.0, float(relevance.max(initial=0.0)))
    margin = 0.05 * (high - low) or 1e-3
    ax.set_ylim(low - margin, high + margin)


# --- 4. attention and word influence (HTML) --------------------------------------------------


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


# --- everything for one analysis -------------------------------------------------------------


def draw_analysis(analysis, heat_maps: Optional[HeatMaps] = None) -> dict:
    """The pictures of an `analysis.Analysis`: "mfcc" as an RGB array and "spu" as HTML (when there
    is audio), the deletion curves "word_curves" / "window_curves" as SVG (when faithfulness was
    measured), and "probabilities" and "attention" as HTML (the latter says so when there are no
    words). `heat_maps`: this analysis's `draw_heat_maps`, if it was drawn already."""
    e = analysis.explanation
    images = {"probabilities": probabilities_html(e.labels, e.probabilities, e.uniform_probabilities)}
    with LOCK:
        encoder_states = getattr(analysis, "encoder_states", None)
        if heat_maps is not None:
            images["mfcc"] = finish_mfcc(heat_maps, e.frame_relevance, e.relevance_method, e.tokens,
                                         analysis.token_times)
        if images.get("mfcc") is None and any(x is not None and x.shape[1] > 0 for x in (analysis.mfcc, encoder_states)):
            images["mfcc"] = render(plot_mfcc(analysis.mfcc, e.frame_seconds, e.frame_relevance,
                                              e.relevance_method, e.tokens, analysis.token_times,
                                              encoder_states))
    if e.audio_statistics is not None:
        images["spu"] = spu_html(e.audio_statistics, e.kernel_sizes, e.statistics, e.frame_seconds)
    images |= draw_deletion_curves(analysis)
    images["attention"] = attention_table_html(e.tokens, e.attention, e.statistics, e.word_influence,
                                               analysis.token_times)
    return images


def draw_deletion_curves(analysis) -> dict:
    """"word_curves" / "window_curves" as SVG, for the curves the analysis's faithfulness has."""
    faithful, label = getattr(analysis, "faithfulness", None), analysis.explanation.label
    if faithful is None:
        return {}
    curves = {"word_curves": faithful.words, "window_curves": faithful.windows}
    return {name: deletion_curves_svg(c, label) for name, c in curves.items() if c is not None}
