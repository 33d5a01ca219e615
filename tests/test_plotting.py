"""ser_demo.plotting: one figure per function, Agg only, nothing leaks, safe from two threads."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from ser_demo import plotting
from ser_demo.explain import Analysis, Explanation

LABELS = ("angry", "happy", "sad", "neutral")
TOKENS = ["i", "ca", "n't", "<b>believe</b>"]


def explanation(tokens=TOKENS, audio=True) -> Explanation:
    rng = np.random.default_rng(0)
    n = len(tokens)
    att = rng.random((3, n)) if n else None
    return Explanation(
        labels=LABELS,
        probabilities=np.array([0.1, 0.6, 0.2, 0.1]),
        target=1,
        tokens=list(tokens),
        known=[True] * n,
        statistics=("max", "avg", "std"),
        kernel_sizes=(3, 5, 7, 9),
        audio_statistics=rng.random((4, 3, 128)) if audio else None,
        attention=att / att.sum(1, keepdims=True) if n else None,
        word_influence=rng.normal(size=n) * 0.05 if n else None,
        uniform_probabilities=np.array([0.2, 0.5, 0.2, 0.1]) if n and audio else None,
        relevance_method="occlusion" if audio else "none",
        frame_relevance=rng.normal(size=300) * 0.05 if audio else None,
    )


def analysis(tokens=TOKENS, audio=True) -> Analysis:
    rng = np.random.default_rng(1)
    times = [(0.0, 0.3), (0.3, 0.6), (0.3, 0.6), None][: len(tokens)]
    return Analysis(
        modality="both", transcript=" ".join(tokens), transcript_source="asr", words=[],
        token_times=times, duration=3.0 if audio else None,
        mfcc=rng.normal(size=(96, 300)).astype(np.float32) * 10 if audio else None,
        explanation=explanation(tokens, audio), timings={},
    )


def test_every_figure_function_returns_a_figure_that_renders():
    e, a = explanation(), analysis()
    figures = [
        plotting.plot_probabilities(LABELS, e.probabilities, e.uniform_probabilities),
        plotting.plot_probabilities(LABELS, e.probabilities),
        plotting.plot_mfcc(a.mfcc, 0.01, e.frame_relevance, "occlusion", e.tokens, a.token_times),
        plotting.plot_mfcc(a.mfcc, 0.01),
        plotting.plot_spu(e.audio_statistics, e.kernel_sizes, e.statistics),
        plotting.plot_attention(e.tokens, e.attention, e.statistics, e.word_influence, a.token_times),
        plotting.plot_attention(e.tokens, None, e.statistics, e.word_influence),
        plotting.plot_attention([], None, e.statistics),
    ]
    for fig in figures:
        assert isinstance(fig, Figure)
        image = plotting.render(fig)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] > 100 and image.shape[1] > 300
        assert image.std() > 5  # something was drawn, not a blank canvas


def test_mfcc_plot_time_axis_is_in_seconds():
    a = analysis()
    fig = plotting.plot_mfcc(a.mfcc, 0.01, a.explanation.frame_relevance)
    assert len(fig.axes) >= 4
    assert fig.axes[0].get_xlim() == pytest.approx((0.0, 3.0))
    assert "time (s)" in [ax.get_xlabel() for ax in fig.axes]


def test_no_pyplot_and_no_global_figures():
    """pyplot keeps global figures (a leak per request in a server) and picks a GUI backend: the
    module must never import it. Checked in a fresh interpreter, where no other test could have
    imported it first, after drawing every section."""
    import subprocess

    script = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_plotting import analysis\n"
        "from ser_demo import plotting\n"
        "images = plotting.draw_analysis(analysis())\n"
        "assert set(images) == {'probabilities', 'mfcc', 'spu', 'attention'}, images\n"
        "print('pyplot imported' if 'matplotlib.pyplot' in sys.modules else 'no pyplot')\n"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "no pyplot"
    # and in this process: drawing leaves no figure in pyplot's registry, if another test loaded it
    plotting.render(plotting.plot_spu(explanation().audio_statistics, (3, 5, 7, 9), ("max", "avg", "std")))
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_draw_analysis_gives_one_image_per_section():
    images = plotting.draw_analysis(analysis())
    assert set(images) == {"probabilities", "mfcc", "spu", "attention"}
    text_only = plotting.draw_analysis(analysis(audio=False))
    assert set(text_only) == {"probabilities", "attention"}
    audio_only = plotting.draw_analysis(analysis(tokens=[]))
    assert set(audio_only) == {"probabilities", "mfcc", "spu"}


def test_drawing_from_two_threads_at_once():
    a, results, errors = analysis(), [], []

    def work():
        try:
            for _ in range(2):
                results.append(plotting.draw_analysis(a))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for r in results[1:]:
        np.testing.assert_array_equal(r["mfcc"], results[0]["mfcc"])


def test_attention_html_escapes_and_shades_words():
    e, a = explanation(), analysis()
    page = plotting.attention_html(e.tokens, e.attention, e.statistics, e.word_influence, a.token_times)
    assert "<b>believe</b>" not in page and "&lt;b&gt;believe&lt;/b&gt;" in page
    for name in ("max context", "mean context", "std context", "leave one out"):
        assert name in page
    assert page.count("<span") == 4 * len(TOKENS)
    assert "at 0.30-0.60 s" in page
    assert "No words" in plotting.attention_html([], None, e.statistics)


def deletion_curves(unit="word", n=4):
    from ser_demo.faithfulness import DeletionCurves

    steps = np.arange(n + 1)
    fall = np.linspace(0.6, 0.25, n + 1)
    return DeletionCurves(unit, "mask", 1, n, steps,
                          deletion={"attention": fall, "leave-one-out": fall ** 2, "random": fall},
                          kept={"attention": fall[::-1], "leave-one-out": fall[::-1], "random": fall[::-1]},
                          permutations=5, without_all=np.array([0.25] * 4))


def test_deletion_curves_figure_and_its_place_in_the_analysis():
    fig = plotting.plot_deletion_curves(deletion_curves(), "happy")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [fig.axes[0].get_ylabel()]
    assert "p(happy) as the top words are masked" in texts and "p(happy)" in texts
    assert {line.get_label() for line in fig.axes[0].lines} == {"attention", "leave-one-out", "random (5 orders)"}
    assert plotting.render(fig).shape[2] == 3
    from ser_demo.faithfulness import Faithfulness

    a = analysis()
    a.faithfulness = Faithfulness(words=deletion_curves(), windows=deletion_curves("window", 12))
    assert {"word_curves", "window_curves"} <= set(plotting.draw_analysis(a))


@pytest.mark.parametrize("tokens", [["so", "happy"], TOKENS, [f"word{i}" for i in range(30)]])
def test_attention_titles_fit_inside_the_figure(tokens):
    """The leave-one-word-out title used to run off the right edge of a short transcript's figure."""
    rng = np.random.default_rng(0)
    fig = plotting.plot_attention(tokens, rng.random((3, len(tokens))), ("max", "avg", "std"),
                                  rng.normal(size=len(tokens)))
    plotting.render(fig)
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    titles = [t for ax in fig.axes for t in ax.texts if "Attention:" in t.get_text() or "Leave one" in t.get_text()]
    assert len(titles) == 2
    for t in titles:
        box = t.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height, (t.get_text(), box, width)
    # and the title does not run into the heat map's tick labels above it
    upper = fig.axes[0].get_tightbbox(renderer)
    lower_title = next(t for t in titles if "Leave one" in t.get_text()).get_window_extent(renderer)
    assert lower_title.y1 <= upper.y0 + 1


def test_word_influence_tooltip_has_the_sign_of_the_change_without_the_word():
    """influence = p(with) - p(without): a word that supports the answer (+0.2) costs 0.2 when removed."""
    page = plotting.attention_html(["good", "bad"], None, (), np.array([0.2, -0.05]))
    assert "change in probability without this word: -0.2000" in page
    assert "change in probability without this word: +0.0500" in page
