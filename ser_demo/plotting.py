"""The pictures the app shows, one function per figure, for a classroom.

Every function takes plain arrays and returns a `matplotlib.figure.Figure` made with the
object-oriented API (Agg canvas, no pyplot): nothing is registered globally, so a figure is freed
as soon as it is dropped, and no UI toolkit is imported. `render` turns a figure into an RGB
array and releases it. Matplotlib is not thread-safe, so `render`/`draw_analysis` hold `LOCK`
(a web server answers several requests at once); `attention_html` gives the highlighted-text view.
"""

from __future__ import annotations

import html
import threading
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg", force=False)  # a no-op where a backend is already chosen; we never show

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

LOCK = threading.RLock()
DPI = 100
STAT_NAMES = {"max": "max", "avg": "mean", "std": "std"}
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


def _colorbar(fig: Figure, ax, mappable, label: str = "", visible: bool = True):
    """A colour bar in a slim axes just right of `ax` (no layout engine needed)."""
    box = ax.get_position()
    cax = fig.add_axes((box.x1 + 0.01, box.y0, 0.012, box.height))
    if not visible:
        cax.set_visible(False)
        return None
    bar = fig.colorbar(mappable, cax=cax, ticks=MaxNLocator(3))
    bar.ax.tick_params(labelsize=8)
    if label:
        bar.set_label(label, fontsize=8)
    return bar


def render(fig: Figure) -> np.ndarray:
    """Draw `fig` into an (H, W, 3) uint8 array. The figure belongs to no global registry, so it
    is freed as soon as the caller drops it (fig.clear() would only cost time)."""
    with LOCK:
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _title(ax, text: str) -> None:
    """A left-aligned title as plain text: set_title re-measures the axis on every draw."""
    ax.text(0.0, 1.03, text, transform=ax.transAxes, fontsize=10, ha="left", va="bottom")


def _wrap(text: str, inches: float, fontsize: float = 10) -> str:
    """Break `text` into lines that fit `inches` (0.58 em per character: DejaVu Sans, generous),
    so that a title never runs off a narrow figure."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, int(inches / (0.58 * fontsize / 72)))))


def _token_labels(tokens: Sequence[str], token_times: Optional[Sequence] = None) -> list[str]:
    if not token_times:
        return list(tokens)
    return [f"{t}\n{tt[0]:.2f}s" if tt else t for t, tt in zip(tokens, token_times)]


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


# --- 1. class probabilities ------------------------------------------------------------------


def plot_probabilities(labels: Sequence[str], probabilities: Sequence[float],
                       uniform: Optional[Sequence[float]] = None) -> Figure:
    """Horizontal bars of the four class probabilities; thin grey bars: the same recording with
    uniform attention (when given)."""
    probabilities = np.asarray(probabilities, dtype=float)
    fig = _figure(6.0, 2.6)
    _margins(fig, left=0.85, right=0.25, top=0.4, bottom=0.5)
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    top = int(np.argmax(probabilities))
    colors = [LABEL_COLORS.get(l, "#444444") for l in labels]
    bars = ax.barh(y + (0.12 if uniform is not None else 0), probabilities,
                   height=0.5 if uniform is not None else 0.7, color=colors,
                   edgecolor=["black" if i == top else "none" for i in range(len(labels))])
    for bar, p in zip(bars, probabilities):
        ax.text(min(p + 0.01, 0.9), bar.get_y() + bar.get_height() / 2, f"{p:.0%}", va="center", fontsize=10)
    if uniform is not None:
        ax.barh(y - 0.3, np.asarray(uniform, dtype=float), height=0.18, color="#bbbbbb",
                hatch="///", edgecolor="#777777", label="uniform attention")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_yticks(y, labels, fontsize=11)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.text(0.0, 1.04, f"Prediction: {labels[top]} ({probabilities[top]:.0%})", transform=ax.transAxes,
            fontsize=12, ha="left", va="bottom")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


# --- 2. MFCC + delta + delta-delta, with the audio relevance under it -------------------------


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
    much each moment pushed the decision towards the predicted class."""
    blocks = []  # (title, matrix, seconds per column, colour map, (low, high))
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
    duration = max(block.shape[1] * step for _, block, step, _, _ in blocks)
    rows = len(blocks) + (relevance is not None)
    fig = _figure(10.0, 1.55 * rows + 0.6)
    _margins(fig, left=0.75, right=0.8, top=0.3, bottom=0.5, hspace=0.4)
    # Not sharex: the upper rows carry no time ticks at all (each tick is an artist to build).
    axes = fig.subplots(rows, 1, squeeze=False,
                        gridspec_kw={"height_ratios": [1.0] * len(blocks) + ([0.9] if relevance is not None else [])})[:, 0]
    for i, (ax, (name, block, step, cmap, (low, high))) in enumerate(zip(axes, blocks)):
        n = block.shape[0]
        im = ax.imshow(block, aspect="auto", origin="lower", extent=(0.0, block.shape[1] * step, -0.5, n - 0.5),
                       cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_ylabel("coef." if step == frame_seconds else "dim.", fontsize=9)
        ax.set_yticks([0, n // 2, n - 1])
        ax.set_xlim(0, duration)
        if i < rows - 1:
            ax.set_xticks([])
        _title(ax, name)
        _colorbar(fig, ax, im)
    if relevance is not None:
        ax = axes[-1]
        t = (np.arange(len(relevance)) + 0.5) * frame_seconds
        ax.fill_between(t, 0, np.maximum(relevance, 0), color="#2ca02c", step="mid")
        ax.fill_between(t, 0, np.minimum(relevance, 0), color="#9467bd", step="mid")
        ax.axhline(0, color="black", linewidth=0.6)
        what = ("drop in probability when hidden" if relevance_method == "occlusion"
                else "gradient x input")
        _title(ax, f"Which moments drive the decision ({what}; green: supports the answer, "
                   "purple: speaks against it)")
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.set_ylabel("relevance", fontsize=9)
        if tokens and token_times:  # the words, where the ASR said when they were spoken
            for text, (start, end) in _spoken_words(tokens, token_times):
                ax.axvline(start, color="#cccccc", linewidth=0.6, zorder=0)
                ax.text((start + end) / 2, 0.97, text, ha="center", va="top", fontsize=8,
                        transform=ax.get_xaxis_transform(),
                        bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1})
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, duration)
    return fig


# --- 3. the SPU statistics -------------------------------------------------------------------


def kernel_label(kernel, frame_seconds: float = 0.01) -> str:
    """A row of the SPU plot: a kernel size in MFCC frames, or (front-end, size) from
    `ModelConfig.audio_kernels` (a Whisper encoder state spans two MFCC frames)."""
    frontend, k = kernel if isinstance(kernel, (tuple, list)) else ("mfcc", kernel)
    step = frame_seconds * (2 if frontend == "whisper" else 1)
    return f"{'Whisper' if frontend == 'whisper' else 'MFCC'} {k}\n({k * step * 1000:.0f} ms)"


def plot_spu(audio_statistics: np.ndarray, kernel_sizes: Sequence, statistics: Sequence[str],
             frame_seconds: float = 0.01) -> Figure:
    """One heat map per pooling view (max, mean, std), kernel sizes as rows and the 128 filters
    as columns, on one shared colour scale so the three views can be compared directly. Filters
    are sorted by their mean value so the pattern is easier to read."""
    stats = np.asarray(audio_statistics, dtype=float)  # (Ka, S, F)
    order = np.argsort(stats.mean(axis=(0, 1)))[::-1]
    vmax = float(stats.max()) or 1.0
    fig = _figure(10.0, 1.2 + 0.4 * len(kernel_sizes))
    _margins(fig, left=1.1, right=1.0, top=0.35, bottom=0.5, wspace=0.08)
    axes = fig.subplots(1, len(statistics), sharey=True, squeeze=False)[0]
    for j, (ax, s) in enumerate(zip(axes, statistics)):
        im = ax.imshow(stats[:, j, order], aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.text(0.5, 1.03, f"{STAT_NAMES.get(s, s)} over time", transform=ax.transAxes, fontsize=10,
                ha="center", va="bottom")
        ax.set_xlabel("filter (sorted)", fontsize=9)
    axes[0].set_yticks(range(len(kernel_sizes)), [kernel_label(k, frame_seconds) for k in kernel_sizes], fontsize=8)
    axes[0].set_ylabel("kernel size")
    _colorbar(fig, axes[-1], im, "filter output")
    return fig


# --- 4. attention and word influence ---------------------------------------------------------


def plot_attention(
    tokens: Sequence[str],
    attention: Optional[np.ndarray],
    statistics: Sequence[str],
    influence: Optional[np.ndarray] = None,
    token_times: Optional[Sequence] = None,
) -> Figure:
    """Heat map of each context vector's attention weight per word (rows max, mean, std; each row
    sums to 1), and under it the leave-one-word-out change in the predicted class's probability."""
    tokens = list(tokens)
    rows = (1 if attention is not None else 0) + (1 if influence is not None else 0)
    width = min(14.0, max(6.0, 0.55 * len(tokens) + 2.0))
    fig = _figure(width, 0.9 + 1.7 * rows if rows else 1.5)
    if not rows or not tokens:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no words to show (audio only, or an empty transcript)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    titles = [_wrap(t, width - 1.1 - 0.7) for t in (
        "Attention: how much each audio context vector looks at each word",
        "Leave one word out: how much the predicted class loses without the word")]
    extra = 0.17 * max(t.count("\n") for t in titles)  # inches for a second line of title
    fig.set_size_inches(width, fig.get_size_inches()[1] + extra * rows)
    _margins(fig, left=1.1, right=0.7, top=0.3 + extra, bottom=0.55, hspace=0.75 + 0.5 * extra)
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    labels = _token_labels(tokens, token_times)
    x = np.arange(len(tokens))
    i = 0
    if attention is not None:
        ax = axes[i]
        i += 1
        att = np.asarray(attention, dtype=float)
        im = ax.imshow(att, aspect="auto", cmap="Oranges", vmin=0, vmax=max(float(att.max()), 1e-6),
                       interpolation="nearest")
        for r in range(att.shape[0]):
            for c in range(att.shape[1]):
                ax.text(c, r, f"{att[r, c]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if att[r, c] > 0.6 * att.max() else "black")
        ax.set_yticks(range(len(statistics)), [f"{STAT_NAMES.get(s, s)} context" for s in statistics], fontsize=9)
        ax.set_xticks(x, labels, fontsize=9)
        _title(ax, titles[0])
        _colorbar(fig, ax, im)
    if influence is not None:
        ax = axes[i]
        infl = np.asarray(influence, dtype=float)
        ax.bar(x, infl, color=np.where(infl >= 0, "#2ca02c", "#9467bd"), width=0.7)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, labels, fontsize=9)
        ax.set_xlim(-0.5, len(tokens) - 0.5)
        ax.set_ylabel("change in p", fontsize=9)
        _title(ax, titles[1])
        ax.yaxis.set_major_locator(MaxNLocator(4))
    return fig


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


# --- 5. faithfulness: deletion curves ---------------------------------------------------------

ORDER_STYLES = {  # order -> (colour, line style); the random baseline is grey and dashed
    "attention": ("#ff7f0e", "-"), "leave-one-out": ("#2ca02c", "-"), "gradient": ("#1f77b4", "-"),
    "occlusion": ("#2ca02c", "-"), "random": ("#7f7f7f", "--"),
}


def plot_deletion_curves(curves, label: str) -> Figure:
    """A small plot of a `faithfulness.DeletionCurves`: p(label) as the top-ranked units of each
    order are removed, one line per order (a faithful order falls fast; random is dashed)."""
    fig = _figure(6.0, 2.4)
    _margins(fig, left=0.7, right=1.7, top=0.35, bottom=0.5)
    ax = fig.add_subplot()
    unit = "words" if curves.unit == "word" else "windows"
    how = {"mask": "masked", "delete": "deleted"}[curves.removal] if curves.unit == "word" else (
        "hidden" if curves.removal == "mask" else "cut out")
    for name, p in curves.deletion.items():
        colour, style = ORDER_STYLES.get(name, ("#444444", "-"))
        ax.plot(curves.steps, p, style, color=colour, marker="o", markersize=3, linewidth=1.5,
                label=name if name != "random" else f"random ({curves.permutations} orders)")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max(curves.n_units, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.set_xlabel(f"number of {unit}", fontsize=9)
    ax.grid(alpha=0.3)
    _title(ax, f"p({label}) as the top {unit} are {how}")
    ax.set_ylabel(f"p({label})", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return fig


# --- everything for one analysis -------------------------------------------------------------


def draw_analysis(analysis) -> dict[str, np.ndarray]:
    """Render the figures of an `explain.Analysis` (held under LOCK)."""
    e = analysis.explanation
    images = {}
    with LOCK:
        images["probabilities"] = render(plot_probabilities(e.labels, e.probabilities, e.uniform_probabilities))
        encoder_states = getattr(analysis, "encoder_states", None)
        if any(x is not None and x.shape[1] > 0 for x in (analysis.mfcc, encoder_states)):
            images["mfcc"] = render(plot_mfcc(analysis.mfcc, e.frame_seconds, e.frame_relevance,
                                              e.relevance_method, e.tokens, analysis.token_times,
                                              encoder_states))
        if e.audio_statistics is not None:
            images["spu"] = render(plot_spu(e.audio_statistics, e.kernel_sizes, e.statistics, e.frame_seconds))
        if e.tokens:
            images["attention"] = render(plot_attention(e.tokens, e.attention, e.statistics,
                                                        e.word_influence, analysis.token_times))
        faithful = getattr(analysis, "faithfulness", None)
        if faithful is not None and faithful.words is not None:
            images["word_curves"] = render(plot_deletion_curves(faithful.words, e.label))
        if faithful is not None and faithful.windows is not None:
            images["window_curves"] = render(plot_deletion_curves(faithful.windows, e.label))
    return images
