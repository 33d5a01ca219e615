"""ser_demo.plotting: the heat maps (Agg only, built once per layout and updated in place, exactly
as a fresh figure would look, safe from two threads) and the HTML views of ser_demo.charts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from conftest import run_in_threads

from ser_demo import charts, plotting
from ser_demo.analysis import Analysis
from ser_demo.explain import Explanation

LABELS = ("angry", "happy", "sad", "neutral")
TOKENS = ["i", "ca", "n't", "<b>believe</b>"]


STATES = np.random.default_rng(2).normal(size=(384, 150)).astype(np.float32)  # 3 s of Whisper states


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


def test_the_encoder_map_names_the_block_the_model_reads():
    def titles(**layer):
        with plotting.LOCK:
            fig = plotting.plot_mfcc(None, 0.01, encoder_states=STATES, **layer)
            return [t.get_text() for ax in fig.axes for t in ax.texts]

    assert any(t.startswith("Whisper encoder, block 2 (384 numbers") for t in titles(encoder_layer=2))
    assert any(t.startswith("Whisper encoder output (384 numbers") for t in titles())
    assert not any("block" in t for t in titles())


def test_every_figure_function_returns_a_figure_that_renders():
    e, a = explanation(), analysis()
    draw = [
        lambda: plotting.plot_mfcc(a.mfcc, 0.01, e.frame_relevance, "occlusion", e.tokens, a.token_times),
        lambda: plotting.plot_mfcc(a.mfcc, 0.01),
        lambda: plotting.plot_mfcc(None, 0.01, e.frame_relevance, encoder_states=STATES),  # encoder checkpoint
        lambda: plotting.plot_mfcc(a.mfcc, 0.01, e.frame_relevance, encoder_states=STATES),  # both front-ends
    ]
    for make in draw:
        with plotting.LOCK:
            fig = make()
            assert isinstance(fig, Figure)
            image = plotting.render(fig)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] > 100 and image.shape[1] > 300
        assert image.std() > 5  # something was drawn, not a blank canvas


def _render_mfcc(a: Analysis) -> np.ndarray:
    e = a.explanation
    with plotting.LOCK:
        return plotting.render(plotting.plot_mfcc(a.mfcc, 0.01, e.frame_relevance, "occlusion", e.tokens, a.token_times))


def test_a_figure_updated_in_place_looks_exactly_like_a_fresh_one(monkeypatch):
    first = analysis()
    other = analysis(tokens=["so", "sad"])
    other.mfcc = other.mfcc[:, :120] * 3 + 5  # shorter, louder, other words, other relevance
    other.explanation.frame_relevance = -other.explanation.frame_relevance[:120] * 4
    monkeypatch.setattr(plotting, "_FIGURES", {})
    fresh = _render_mfcc(first)
    fresh_other = _render_mfcc(other)
    assert fresh_other.shape == fresh.shape and not np.array_equal(fresh_other, fresh)
    np.testing.assert_array_equal(_render_mfcc(first), fresh)  # nothing of `other` is left over
    monkeypatch.setattr(plotting, "_FIGURES", {})
    np.testing.assert_array_equal(_render_mfcc(other), fresh_other)


def test_layouts_are_built_once_and_their_number_is_bounded(monkeypatch):
    monkeypatch.setattr(plotting, "_FIGURES", {})
    a = analysis()
    with plotting.LOCK:
        first = plotting.plot_mfcc(a.mfcc, 0.01, a.explanation.frame_relevance)
        assert plotting.plot_mfcc(a.mfcc[:, :50], 0.01, a.explanation.frame_relevance[:50]) is first
        assert plotting.plot_mfcc(a.mfcc, 0.01) is not first  # no relevance row: another layout
        for n in range(2, 20):
            plotting.plot_mfcc(np.zeros((3 * n, 10)), 0.01)
    assert len(plotting._FIGURES) <= plotting._MAX_LAYOUTS


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
    plotting.draw_analysis(analysis())
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_draw_analysis_gives_one_view_per_section():
    images = plotting.draw_analysis(analysis())
    assert set(images) == {"probabilities", "mfcc", "spu", "attention"}
    assert isinstance(images["mfcc"], np.ndarray) and isinstance(images["probabilities"], str)
    assert isinstance(images["spu"], str)
    text_only = plotting.draw_analysis(analysis(audio=False))
    assert set(text_only) == {"probabilities", "attention"} and "<table" in text_only["attention"]
    audio_only = plotting.draw_analysis(analysis(tokens=[]))
    assert set(audio_only) == {"probabilities", "mfcc", "spu", "attention"}
    assert "No words" in audio_only["attention"]


def test_probability_bars():
    page = charts.probabilities_html(LABELS, [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.4, 0.1])
    assert "Prediction: <b>happy</b> (60%)" in page
    assert 'width: 60.0%' in page and 'width: 40.0%' in page  # the bar, and the uniform-attention bar
    assert page.count("outline") == 1 and "hatched" in page
    plain = charts.probabilities_html(["<i>x</i>", "y"], [0.3, 0.7])
    assert "<i>x</i>" not in plain and "&lt;i&gt;x&lt;/i&gt;" in plain and "hatched" not in plain


def test_attention_table():
    e, a = explanation(), analysis()
    page = charts.attention_table_html(e.tokens, e.attention, e.statistics, e.word_influence, a.token_times)
    assert "&lt;b&gt;believe&lt;/b&gt;" in page and "<b>believe</b>" not in page
    for name in ("max context", "mean context", "std context", "leave one out"):
        assert name in page
    assert page.count("<td") == 4 * len(TOKENS)  # 3 attention rows and the influence row
    assert f"{e.attention[0, 0]:.2f}</td>" in page and f"{e.word_influence[0]:+.3f}" in page
    assert "0.30s" in page  # when Whisper heard the word
    only_influence = charts.attention_table_html(e.tokens, None, e.statistics, e.word_influence)
    assert "context" not in only_influence and "leave one out" in only_influence
    assert "No words" in charts.attention_table_html([], None, e.statistics)


def test_drawing_from_two_threads_at_once():
    a, results = analysis(), []

    def work(_):
        for _ in range(2):
            results.append(plotting.draw_analysis(a))

    run_in_threads(work, 2)
    assert len(results) == 4
    for r in results[1:]:
        np.testing.assert_array_equal(r["mfcc"], results[0]["mfcc"])


def test_attention_html_escapes_and_shades_words():
    e, a = explanation(), analysis()
    page = charts.attention_html(e.tokens, e.attention, e.statistics, e.word_influence, a.token_times)
    assert "<b>believe</b>" not in page and "&lt;b&gt;believe&lt;/b&gt;" in page
    for name in ("max context", "mean context", "std context", "leave one out"):
        assert name in page
    assert page.count("<span") == 4 * len(TOKENS)
    assert "at 0.30-0.60 s" in page
    assert "No words" in charts.attention_html([], None, e.statistics)


def deletion_curves(unit="word", n=4):
    from ser_demo.deletion_curves import DeletionCurves

    steps = np.arange(n + 1)
    fall = np.linspace(0.6, 0.25, n + 1)
    return DeletionCurves(unit, "mask", 1, n, steps,
                          deletion={"attention": fall, "leave-one-out": fall ** 2, "random": fall},
                          kept={"attention": fall[::-1], "leave-one-out": fall[::-1], "random": fall[::-1]},
                          permutations=5, without_all=np.array([0.25] * 4))


def test_deletion_curves_chart_and_its_place_in_the_analysis():
    """The curves are an SVG chart: well-formed, one line per order through the measured points
    (y = 1 at the top of the plot, 0 at its bottom), a legend, a tooltip per point, text escaped."""
    import xml.etree.ElementTree as ET

    curves = deletion_curves()
    svg = charts.deletion_curves_svg(curves, "happy")
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "p(happy) as the top words are masked" in texts and "p(happy)" in texts and "number of words" in texts
    assert {"attention", "leave-one-out", "random (5 orders)"} <= set(texts)
    lines = root.findall("s:polyline", ns)
    assert len(lines) == 3 and lines[2].get("stroke-dasharray")  # random is dashed
    top, bottom = charts.TOP, charts.HEIGHT - charts.BOTTOM
    for line, p in zip(lines, curves.deletion.values()):
        points = np.array([[float(v) for v in xy.split(",")] for xy in line.get("points").split()])
        np.testing.assert_allclose(points[:, 1], bottom - (bottom - top) * p, atol=0.06)
        assert np.all(np.diff(points[:, 0]) > 0) and points[0, 0] == charts.LEFT
    tips = [c.find("s:title", ns).text for c in root.findall("s:circle", ns)]
    assert len(tips) == 3 * len(curves.steps) and "leave-one-out: 2 words masked, p(happy) = 0.181" in tips
    assert "random: 1 word masked, p(happy) = 0.512" in tips
    odd = ET.fromstring(charts.deletion_curves_svg(deletion_curves("window", 12), "<b>&"))  # escaped, still XML
    assert "p(<b>&) as the top windows are hidden" in [t.text for t in odd.iter("{http://www.w3.org/2000/svg}text")]
    assert charts.integer_ticks(12) == [0, 2, 4, 6, 8, 10, 12] and charts.integer_ticks(1) == [0, 1]
    assert charts.integer_ticks(40) == [0, 10, 20, 30, 40] and charts.integer_ticks(0) == [0, 1]
    from ser_demo.faithfulness import Faithfulness

    a = analysis()
    a.faithfulness = Faithfulness(words=deletion_curves(), windows=deletion_curves("window", 12))
    images = plotting.draw_analysis(a)
    assert images["word_curves"].startswith("<svg") and "windows are hidden" in images["window_curves"]


def test_a_long_transcript_scrolls_inside_the_attention_table():
    """The attention view never runs off the page: 30 words scroll sideways inside their table."""
    tokens = [f"word{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    page = charts.attention_table_html(tokens, rng.random((3, 30)), ("max", "avg", "std"), rng.normal(size=30))
    assert page.startswith('<div class="ser-attention-table" style="overflow-x: auto">')
    assert all(f">{t}" in page for t in tokens) and "p lost without the word" in page


def test_word_influence_tooltip_has_the_sign_of_the_change_without_the_word():
    """influence = p(with) - p(without): a word that supports the answer (+0.2) costs 0.2 when removed."""
    page = charts.attention_html(["good", "bad"], None, (), np.array([0.2, -0.05]))
    assert "change in probability without this word: -0.2000" in page
    assert "change in probability without this word: +0.0500" in page


def test_spu_heat_maps_are_html_with_one_pixel_per_value_on_one_colour_scale():
    import base64
    import io
    import re

    from matplotlib import colormaps
    from PIL import Image

    rng = np.random.default_rng(0)
    stats = rng.random((7, 3, 16))
    stats[2, 1, 5] = 3.0  # the largest value, in the "mean" view: the top of the shared scale
    kernels = [("mfcc", 3), ("mfcc", 5), ("mfcc", 7), ("mfcc", 9), ("whisper", 1), ("whisper", 3), ("whisper", 5)]
    page = charts.spu_html(stats, kernels, ("max", "avg", "std"))
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))))
              for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert len(images) == 3 and all(im.shape == (7, 16, 3) for im in images)
    order = np.argsort(stats.mean(axis=(0, 1)))[::-1]  # filters sorted by their mean output
    expected = (colormaps["viridis"](stats[:, 1, order] / 3.0)[..., :3] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(images[1], expected)
    assert tuple(images[1][2, list(order).index(5)]) == tuple(
        (np.array(colormaps["viridis"](1.0)[:3]) * 255).round().astype(np.uint8))
    for text in ("max over time", "mean over time", "std over time", "MFCC 9 (90 ms)", "Whisper 5 (100 ms)",
                 "16 filters, sorted by mean output", "filter output", ">3<"):
        assert text in page, text


def test_heat_maps_first_and_the_relevance_row_later_look_exactly_like_the_whole_figure(monkeypatch):
    """What the app draws while Whisper transcribes, finished once the relevance is known, is the
    figure `render` draws in one go: for every front-end, with another recording drawn in the same
    layout in between (two requests at once), and without a relevance row."""
    monkeypatch.setattr(plotting, "_FIGURES", {})
    first, other = analysis(), analysis(tokens=["so", "sad"])
    other.mfcc = other.mfcc[:, :120] * 3 + 5
    other.explanation.frame_relevance = -other.explanation.frame_relevance[:120] * 4
    for mfcc, states in ((True, None), (False, STATES), (True, STATES)):
        def inputs(a):
            return (a.mfcc if mfcc else None), 0.01, (states[:, : a.mfcc.shape[1] // 2] if states is not None else None)

        def whole(a, relevance=True):
            e = a.explanation
            with plotting.LOCK:
                return plotting.render(plotting.plot_mfcc(*inputs(a)[:2], e.frame_relevance if relevance else None,
                                                          "occlusion", e.tokens, a.token_times, inputs(a)[2]))

        expected, expected_other = whole(first), whole(other)
        heat_maps = plotting.draw_heat_maps(*inputs(first))
        assert not np.array_equal(whole(other), expected)  # another request draws in between
        e = first.explanation
        np.testing.assert_array_equal(plotting.finish_mfcc(heat_maps, e.frame_relevance, "occlusion", e.tokens,
                                                           first.token_times), expected)
        np.testing.assert_array_equal(plotting.draw_analysis(first, plotting.draw_heat_maps(*inputs(first)))["mfcc"],
                                      expected)
        np.testing.assert_array_equal(whole(other), expected_other)
        bare = plotting.draw_heat_maps(*inputs(first), relevance=False)
        np.testing.assert_array_equal(plotting.finish_mfcc(bare), whole(first, relevance=False))
        assert plotting.finish_mfcc(bare, e.frame_relevance) is None  # not this layout: draw it whole
    heat_maps = plotting.draw_heat_maps(first.mfcc, 0.01)
    plotting._FIGURES.clear()  # the layout left the cache meanwhile: draw_analysis draws it whole
    np.testing.assert_array_equal(plotting.draw_analysis(first, heat_maps)["mfcc"], plotting.draw_analysis(first)["mfcc"])
    assert plotting.draw_heat_maps(None, 0.01, None) is None
