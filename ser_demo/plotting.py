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
on the server (`charts`); `draw_analysis` gathers the figure and those views of one analysis, and
`analyze_and_draw` runs an analysis with them drawn while it works.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg", force=False)  # a no-op where a backend is already chosen; we never show

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .charts import attention_table_html, deletion_curves_svg, probabilities_html, spu_html  # noqa: E402

LOCK = threading.RLock()
DPI = 100


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


# --- MFCC + delta + delta-delta, with the audio relevance under it ----------------------------

_FIGURES: dict = {}  # layout key -> the figure and the artists that a new call updates
_MAX_LAYOUTS = 12  # a few layouts per app (checkpoints, with/without relevance, curves); bounded anyway


def _layout(key, build):
    with LOCK:
        if key not in _FIGURES:
            if len(_FIGURES) >= _MAX_LAYOUTS:
                _FIGURES.pop(next(iter(_FIGURES)))
            _FIGURES[key] = build()
        return _FIGURES[key]


def encoder_states_title(n_dims: int, layer: Optional[int] = None) -> str:
    """Which of Whisper's states the model reads: a block inside the encoder, or its output."""
    where = "Whisper encoder output" if layer is None else f"Whisper encoder, block {layer}"
    return f"{where} ({n_dims} numbers per 20 ms)"


def _audio_blocks(mfcc: Optional[np.ndarray], frame_seconds: float, encoder_states: Optional[np.ndarray],
                  encoder_layer: Optional[int] = None) -> list:
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
        blocks.append((encoder_states_title(encoder_states.shape[0], encoder_layer), encoder_states,
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


def _heat_maps(mfcc, frame_seconds: float, encoder_states, relevance: bool,
               encoder_layer: Optional[int] = None) -> tuple[tuple, dict, float]:
    """The layout for these heat maps (with or without the relevance row), their data set in;
    -> (layout key, layout, duration in seconds). Hold LOCK."""
    blocks = _audio_blocks(mfcc, frame_seconds, encoder_states, encoder_layer)
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
    encoder_layer: Optional[int] = None,
) -> Figure:
    """What the audio branch reads, over time in seconds: the MFCC, delta and delta-delta heat
    maps and/or the Whisper encoder states (one column per 20 ms; `encoder_layer`: the block they
    come from, None for the output); under them, when given, how much each moment pushed the
    decision towards the predicted class. Returns the shared figure of this layout (valid until
    the next call; hold LOCK until it is rendered)."""
    with LOCK:
        _, layout, _ = _heat_maps(mfcc, frame_seconds, encoder_states, relevance is not None, encoder_layer)
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
                   relevance: bool = True, encoder_layer: Optional[int] = None) -> Optional[HeatMaps]:
    """Draw everything of the MFCC figure but the relevance row, which needs the words (the app
    draws this while Whisper transcribes); None when there is no audio to draw. Text is what costs
    (glyphs, measured on every draw), and most of it is here."""
    if not any(x is not None and x.shape[1] > 0 for x in (mfcc, encoder_states)):
        return None
    with LOCK:
        key, layout, duration = _heat_maps(mfcc, frame_seconds, encoder_states, relevance, encoder_layer)
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


# --- everything for one analysis -------------------------------------------------------------


def draw_analysis(analysis, heat_maps: Optional[HeatMaps] = None) -> dict:
    """The pictures of an `analysis.Analysis`: "mfcc" as an RGB array and "spu" as HTML (when there
    is audio), the deletion curves "word_curves" / "window_curves" as SVG (when faithfulness was
    measured), and "probabilities" and "attention" as HTML (the latter says so when there are no
    words). `heat_maps`: this analysis's `draw_heat_maps`, if it was drawn already."""
    e = analysis.explanation
    mixed_from = None if e.head_probabilities is None else (e.network_probabilities, e.head_probabilities, e.head_share)
    images = {"probabilities": probabilities_html(e.labels, e.probabilities, e.uniform_probabilities, mixed_from)}
    with LOCK:
        encoder_states = getattr(analysis, "encoder_states", None)
        if heat_maps is not None:
            images["mfcc"] = finish_mfcc(heat_maps, e.frame_relevance, e.relevance_method, e.tokens,
                                         analysis.token_times)
        if images.get("mfcc") is None and any(x is not None and x.shape[1] > 0 for x in (analysis.mfcc, encoder_states)):
            images["mfcc"] = render(plot_mfcc(analysis.mfcc, e.frame_seconds, e.frame_relevance,
                                              e.relevance_method, e.tokens, analysis.token_times,
                                              encoder_states, getattr(analysis, "encoder_layer", None)))
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


def analyze_and_draw(recognizer, audio, transcript, modality, *, relevance: str = "occlusion",
                     explanations: bool = True, **options) -> tuple:
    """`analysis.analyze` (`options` go to it) with the pictures drawn while it works: the heat maps
    while Whisper transcribes, the rest while the deletion curves are measured, then the curves.
    Returns (analysis, images, timings), with the plots' time and the total in the timings."""
    from .analysis import analyze

    start = time.perf_counter()
    drawn = {}

    def draw_while_whisper_transcribes(heard):  # the heat maps need no words; the relevance row does
        sound = heard.features
        drawn["heat_maps"] = draw_heat_maps(
            sound.mfcc, recognizer.feature_params.hop_length / recognizer.feature_params.sample_rate,
            None if sound.encoded is None else sound.encoded.states, relevance=explanations and relevance != "none",
            encoder_layer=recognizer.config.encoder_layer)

    images, drawing = {}, {}

    def draw_while_curves_are_measured(analysis):
        t = time.perf_counter()
        images.update(draw_analysis(analysis, drawn.get("heat_maps")))
        drawing["seconds"] = time.perf_counter() - t

    analysis = analyze(recognizer, audio, transcript, modality, relevance=relevance, explanations=explanations,
                       alongside=draw_while_whisper_transcribes, while_measuring=draw_while_curves_are_measured,
                       **options)
    t = time.perf_counter()
    images |= draw_deletion_curves(analysis)
    timings = dict(analysis.timings)
    timings["plots"] = drawing["seconds"] + time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    return analysis, images, timings
