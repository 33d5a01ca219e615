"""A real browser on the page: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
with a fake microphone that plays a speech file. It records, stops, presses Analyse, and checks
the transcript, the four probabilities, the figures and the HTML views; the screenshot goes to
artifacts/. (bench/bench_browser.py times the same steps.)"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_app import ARTIFACTS, SPEECH_FILE, app_server

CHROMIUM = "/usr/bin/chromium"
RECORD_SECONDS = 5.5

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} not installed")


@pytest.fixture(scope="module")
def microphone_file(tmp_path_factory) -> Path:
    """The fake microphone plays this file in a loop: the sentence, then a second of silence, as
    16-bit PCM WAV (what Chromium's fake capture reads)."""
    speech, rate = sf.read(SPEECH_FILE, dtype="float32")
    clip = np.concatenate([np.zeros(int(0.2 * rate), np.float32), speech, np.zeros(rate, np.float32)])
    path = tmp_path_factory.mktemp("mic") / "microphone.wav"
    sf.write(path, clip, rate, subtype="PCM_16")
    return path


def chromium_args(microphone_file: Path) -> list[str]:
    """Headless Chromium whose fake microphone plays `microphone_file` in a loop."""
    return [
        "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone_file}",
        "--autoplay-policy=no-user-gesture-required",
    ]


@contextlib.contextmanager
def app_page(url: str, microphone_file: Path):
    """The app's page in headless Chromium with a fake microphone playing `microphone_file`;
    yields the page and the list its JavaScript errors are collected in."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(microphone_file))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url, wait_until="domcontentloaded")
            yield page, errors
        finally:
            browser.close()


def test_record_analyse_and_show_everything(microphone_file):
    server = app_server()
    ARTIFACTS.mkdir(exist_ok=True)
    with app_page(server.url, microphone_file) as (page, errors):
        audio = page.locator("#audio-input")
        record = audio.locator("button.record-button")
        record.wait_for(state="visible", timeout=60_000)
        record.click()
        audio.locator("button.stop-button").wait_for(state="visible", timeout=10_000)
        page.wait_for_timeout(RECORD_SECONDS * 1000)
        audio.locator("button.stop-button").click()
        # the recording is uploaded and shown as a player before it can be analysed
        audio.locator("button.record-button").wait_for(state="detached", timeout=30_000)
        page.wait_for_timeout(1000)
        page.locator("#analyse").click()
        page.locator("#summary td.probability").first.wait_for(timeout=90_000)

        transcript = page.locator("#transcript textarea").input_value()
        shown = {
            cell.get_attribute("data-label"): float(cell.inner_text())
            for cell in page.locator("#summary td.probability").all()
        }
        page.wait_for_function(
            "ids => ids.every(id => { const img = document.querySelector(`#${id} img`);"
            " return img && img.complete && img.naturalWidth > 100; })",
            arg=["mfcc-plot"], timeout=30_000,
        )
        for chart in ("#spu-plot .ser-spu img", "#word-curves-plot svg polyline", "#window-curves-plot svg polyline"):
            page.locator(chart).first.wait_for(timeout=10_000)
        page.locator("#probabilities-plot .ser-probabilities").wait_for(timeout=10_000)
        calibration = page.locator("#summary p.calibration").inner_text()
        attention_cells = page.locator("#attention-plot td").count()
        page.locator("#attention-text span").first.wait_for(timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "app-browser.png"), full_page=True)
        error_toasts = page.locator(".toast-body.error").count()

        # one click on an example fills the inputs and analyses it
        before = page.locator("#summary").inner_html()
        page.get_by_text("happy: ", exact=False).first.click()
        page.wait_for_function(
            "old => { const s = document.querySelector('#summary');"
            " return s && s.innerHTML !== old && s.querySelector('td.probability'); }",
            arg=before, timeout=60_000,
        )
        example_transcript = page.locator("#transcript textarea").input_value()
        example_error_toasts = page.locator(".toast-body.error").count()

    words = transcript.lower()
    assert "believe" in words or "wonderful" in words, transcript
    assert len(shown) == 4 and set(shown) == {"angry", "happy", "sad", "neutral"}
    assert sum(shown.values()) == pytest.approx(1.0, abs=0.002)
    # the bundled checkpoint's cross-validation record for answers as sure as this one
    assert "of the time on RAVDESS actors it never heard" in calibration and "not the chance of being right" in calibration
    assert error_toasts == 0 and example_error_toasts == 0 and not errors, errors
    assert example_transcript == "That is wonderful news, I am so happy for you!"
    assert (ARTIFACTS / "app-browser.png").stat().st_size > 50_000
    assert attention_cells >= 4 * len(transcript.split())  # 3 attention rows + leave-one-out per word


def test_the_browser_benchmark_runs():
    """bench/bench_browser.py end to end, once (its figures are printed, never asserted on)."""
    import os
    import re
    import subprocess
    import sys

    pytest.importorskip("playwright.sync_api")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "bench/bench_browser.py", "--runs", "1", "--seconds", "3"], cwd=root,
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = {name: float(ms) for name, ms in re.findall(r"^\s*(click -> all outputs visible|server|handler|the rest)"
                                                          r"[^\d-]*(-?\d+) ms", result.stdout, re.M)}
    assert set(figures) == {"click -> all outputs visible", "server", "handler", "the rest"}, result.stdout
    assert 0 < figures["handler"] <= figures["server"] <= figures["click -> all outputs visible"]
    assert "believe" in result.stdout.lower()  # the run's transcript: Whisper heard the fake microphone
