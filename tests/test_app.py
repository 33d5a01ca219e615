"""The app through its API: `python app.py` is launched once per test session (offline:
HF_HUB_OFFLINE=1) and driven with gradio_client, including bad inputs and a load check.

The bundled checkpoint is used when present; otherwise a random-weight checkpoint is made, so
the assertions are about the app's behaviour, never about which emotion is right."""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_demo.ingest import load_audio

ROOT = Path(__file__).resolve().parent.parent
SPEECH_FILE = Path(__file__).parent / "fixtures" / "speech.wav"
ARTIFACTS = ROOT / "artifacts"
QUEUE_SIZE = 12  # small, so that the load check meets a full queue as well
MAX_FILE_SIZE_MB = 2


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    checkpoint: str  # folder of the checkpoint the app serves
    checkpoint_name: str
    log: Path


_server: AppServer | None = None
_lock = threading.Lock()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint() -> str:
    from ser_demo.recognizer import BUNDLED_CHECKPOINT

    if (BUNDLED_CHECKPOINT / "model.safetensors").is_file():
        return str(BUNDLED_CHECKPOINT)
    from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
    import torch

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="ser-app-test-")) / "random-mscnn-spu-att"
    MSCNN_SPU_ATT(ModelConfig()).save_pretrained(folder)
    return str(folder)


def app_server() -> AppServer:
    """Start `python app.py` once for the whole test session (shared with the browser test)."""
    global _server
    with _lock:
        if _server is not None:
            return _server
        checkpoint = _checkpoint()
        port = _free_port()
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",  # proves the app runs without the network
            TRANSFORMERS_OFFLINE="1",
            GRADIO_ANALYTICS_ENABLED="False",
            GRADIO_SERVER_PORT=str(port),
            GRADIO_SERVER_NAME="127.0.0.1",
            SER_CHECKPOINT=checkpoint,
            SER_APP_QUEUE_SIZE=str(QUEUE_SIZE),
            SER_APP_MAX_FILE_SIZE=f"{MAX_FILE_SIZE_MB}mb",
            PYTHONUNBUFFERED="1",
        )
        ARTIFACTS.mkdir(exist_ok=True)
        log = ARTIFACTS / "app-server.log"
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                                   stdout=open(log, "w"), stderr=subprocess.STDOUT)
        atexit.register(_stop, process)
        url = f"http://127.0.0.1:{port}/"
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_reliability import wait_until_serving

        wait_until_serving(process, url, log, 180)
        _server = AppServer(url, process, checkpoint, Path(checkpoint).name, log)
        return _server


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def server() -> AppServer:
    return app_server()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, analytics_enabled=False)


def call(client, audio, transcript="", modality="both", checkpoint=None, server=None, *more):
    from gradio_client import handle_file

    result = client.predict(
        handle_file(str(audio)) if audio is not None else None, transcript, modality,
        checkpoint if checkpoint is not None else server.checkpoint_name, *more, api_name="/analyze",
    )
    names = ["label", "summary", "probabilities_plot", "transcript", "mfcc_plot", "spu_plot",
             "attention_plot", "highlighted", "uniform", "word_curves_plot", "word_faithfulness",
             "window_curves_plot", "window_faithfulness", "timings", "notes", "details"]
    assert len(result) == len(names)
    return dict(zip(names, result))


def assert_jpeg(path) -> None:
    assert path and Path(path).is_file()
    assert Path(path).read_bytes()[:3] == b"\xff\xd8\xff"


# --- the API ---------------------------------------------------------------------------------


def test_api_lists_the_analyze_and_timeline_endpoints(client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoint = info["named_endpoints"]["/analyze"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == ["audio", "transcript", "modality", "checkpoint_name",
                                                                     "read_all_words"]
    assert endpoint["parameters"][-1]["parameter_has_default"]  # clients that send four arguments still work
    assert set(info["named_endpoints"]) == {"/analyze", "/timeline"}  # the live stream stays private
    timeline = info["named_endpoints"]["/timeline"]["parameters"]
    assert [p["parameter_name"] for p in timeline] == ["audio", "modality", "checkpoint_name", "read_all_words"]
    assert timeline[-1]["parameter_has_default"]


def test_a_recording_is_transcribed_classified_and_drawn(client, server):
    out = call(client, SPEECH_FILE, "", server=server)
    assert "believe" in out["transcript"].lower() and "wonderful" in out["transcript"].lower()
    d = out["details"]
    probs = d["probabilities"]
    assert len(probs) == 4 and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert out["label"]["label"] == d["label"] == max(probs, key=probs.get)
    assert d["transcript_source"] == "asr" and d["duration_seconds"] == pytest.approx(len(load_audio(SPEECH_FILE, trim_silence=True)) / 16000, abs=0.011)
    assert any(t is not None for t in d["token_times"])  # aligned with Whisper's word times
    assert len(d["word_influence"]) == len(d["tokens"]) and set(d["attention"]) == {"max", "avg", "std"}
    assert d["uniform_attention_probabilities"] and d["audio_relevance"]["method"] == "occlusion"
    assert set(d["timings"]) >= {"ingest", "asr", "features", "model", "explanations", "faithfulness", "plots", "total"}
    assert_jpeg(out["mfcc_plot"])
    assert 'class="ser-spu"' in out["spu_plot"] and out["spu_plot"].count("data:image/png;base64,") == 3
    for key in ("word_curves_plot", "window_curves_plot"):  # inline SVG charts
        assert out[key].startswith("<svg") and "<polyline" in out[key] and f"p({d['label']})" in out[key]
    assert "Prediction: <b>" in out["probabilities_plot"] and "hatched" in out["probabilities_plot"]
    assert "leave one out" in out["attention_plot"] and "max context" in out["attention_plot"]
    words, windows = d["faithfulness"]["words"], d["faithfulness"]["windows"]
    assert set(words["aopc"]) == {"attention", "leave-one-out", "random"} and words["removal"] == "mask"
    assert set(windows["aopc"]) == {"occlusion", "random"} and windows["n_units"] == len(d["audio_relevance"]["windows"])
    assert f"p({d['label']})" in out["word_faithfulness"] and "most-attended" in out["word_faithfulness"]
    assert "random windows" in out["window_faithfulness"]
    assert "max context" in out["highlighted"] and "uniform attention" in out["uniform"]
    assert "| stage | time |" in out["timings"]


def test_an_edited_transcript_changes_the_answer_and_skips_whisper(client, server):
    heard = call(client, SPEECH_FILE, "", server=server)["details"]
    edited = call(client, SPEECH_FILE, "I am so sad and alone", server=server)
    d = edited["details"]
    assert d["transcript_source"] == "typed" and "asr" not in d["timings"]
    assert d["tokens"] == ["i", "am", "so", "sad", "and", "alone"] and edited["transcript"] == "I am so sad and alone"
    assert d["probabilities"] != heard["probabilities"]


def test_word_times_survive_a_rerun_with_the_same_or_an_edited_transcript(client, server):
    """The transcript box is filled after the first run, so every re-run is "typed": Whisper's
    word times of that recording are kept and the (edited) words aligned to them."""
    heard = call(client, SPEECH_FILE, "", server=server)["details"]
    assert heard["transcript_source"] == "asr" and any(heard["token_times"])
    again = call(client, SPEECH_FILE, heard["transcript"], server=server)["details"]
    assert again["transcript_source"] == "typed" and "asr" not in again["timings"]
    assert again["token_times"] == heard["token_times"] and again["words"] == heard["words"]
    tokens = heard["tokens"]
    edited = call(client, SPEECH_FILE, "well " + " ".join(tokens[1:]), server=server)["details"]
    assert edited["tokens"][0] == "well" and edited["token_times"][0] is None  # a new word has no time
    assert edited["token_times"][1:] == heard["token_times"][1:]


def test_read_every_word_reads_what_the_words_gate_sets_aside(client, server):
    script = "Kids are talking by the door."  # RAVDESS's script: the bundled text branch is sure of no emotion
    gated = call(client, SPEECH_FILE, script, server=server)  # the box left as it is: the gate applies
    assert gated["details"]["words_set_aside"] == script and gated["details"]["tokens"] == []
    assert gated["transcript"] == script and any("the voice answers alone" in n for n in gated["details"]["notes"])
    read = call(client, SPEECH_FILE, script, "both", None, server, True)
    assert read["details"]["words_set_aside"] == "" and read["details"]["tokens"] == ["kids", "are", "talking", "by", "the", "door"]
    assert read["details"]["attention"] and read["word_curves_plot"]


def test_modalities(client, server):
    audio = call(client, SPEECH_FILE, "ignored words", "audio", server=server)
    assert not audio["word_curves_plot"] and "No words" in audio["word_faithfulness"]
    audio = audio["details"]
    assert audio["tokens"] == [] and audio["word_influence"] is None and audio["audio_relevance"]["windows"]
    text = call(client, None, "what wonderful news", "text", server=server)
    assert text["details"]["tokens"] == ["what", "wonderful", "news"] and text["mfcc_plot"] is None
    assert not text["window_curves_plot"] and text["details"]["faithfulness"]["words"]["n_units"] == 3
    assert sum(text["details"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def _error(client, server, audio, transcript="", modality="both", checkpoint=None) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        call(client, audio, transcript, modality, checkpoint, server=server)
    message = str(info.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


def test_bad_inputs_come_back_as_clear_errors(client, server, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not a recording")
    assert "Could not read" in _error(client, server, not_audio)
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    assert "No speech detected" in _error(client, server, silent)
    short = tmp_path / "short.wav"
    sf.write(short, sf.read(SPEECH_FILE, dtype="float32")[0][:1600], 16000)
    assert "too short" in _error(client, server, short)
    long = tmp_path / "long.wav"  # 31 s at 8 kHz stays under the upload limit
    speech, _ = sf.read(SPEECH_FILE, dtype="float32")
    sf.write(long, np.tile(speech[::2], 8)[: 8000 * 31], 8000, subtype="PCM_U8")
    assert "too long" in _error(client, server, long)
    assert "transcript" in _error(client, server, None, "", "text")
    assert "no audio" in _error(client, server, None, "hello", "both").lower()
    # the log of the server holds no stack trace for these user errors either
    assert "Traceback" not in server.log.read_text()


def test_an_unknown_checkpoint_is_refused(client, server):
    """Through the API, Gradio's dropdown check stops it first; the handler's own check (for
    callers that bypass the dropdown) is tested in process below."""
    from gradio_client.exceptions import AppError

    with pytest.raises((AppError, ValueError)) as info:
        call(client, SPEECH_FILE, "hi", "both", "some-user/typed-repo", server=server)
    assert "some-user/typed-repo" in str(info.value)


def test_uploads_over_the_size_limit_are_refused(client, server, tmp_path):
    """SER_APP_MAX_FILE_SIZE reaches the server: the client is told the limit in bytes, and the
    server itself answers 413 to an upload that skips the client's check."""
    import httpx

    limit = MAX_FILE_SIZE_MB * 1024 * 1024
    big = tmp_path / "big.wav"
    sf.write(big, np.random.default_rng(0).normal(size=16000 * 70).astype(np.float32) * 0.1, 16000)
    assert big.stat().st_size > limit
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {limit} bytes"):
        call(client, big, "", server=server)
    with open(big, "rb") as f:
        response = httpx.post(client.upload_url, files=[("files", (big.name, f))], timeout=60)
    assert response.status_code == 413 and "maximum allowed size" in response.text
    small = tmp_path / "small.wav"  # under the limit the same upload is accepted
    sf.write(small, sf.read(SPEECH_FILE, dtype="float32")[0], 16000)
    with open(small, "rb") as f:
        assert httpx.post(client.upload_url, files=[("files", (small.name, f))], timeout=60).status_code == 200


# --- load: 16 clients x 4 requests -------------------------------------------------------------


def test_sixteen_clients_four_requests_each(server, tmp_path):
    """Every request is answered with the result of *its own* audio and transcript, or told that
    the queue is full; none is lost or mixed up."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    from ser_demo.analysis import analyze
    from ser_demo.recognizer import EmotionRecognizer

    speech, rate = sf.read(SPEECH_FILE, dtype="float32")
    jobs = {}
    for c in range(16):
        for r in range(4):
            seconds = 1.0 + 0.04 * (4 * c + r)  # every request its own clip length
            path = tmp_path / f"client{c}-request{r}.wav"
            sf.write(path, speech[: int(seconds * rate)], rate)
            heard = len(load_audio(path, trim_silence=True)) / 16000  # the app trims silent edges
            jobs[c, r] = (path, f"client {c} request {r} so happy", heard)

    recognizer = EmotionRecognizer.from_pretrained(server.checkpoint)
    expected = {
        key: analyze(recognizer, str(path), text, "both", explanations=False).probabilities
        for key, (path, text, _) in jobs.items()
    }

    def client_session(c: int) -> list:
        client = Client(server.url, verbose=False, analytics_enabled=False)
        outcomes = []
        for r in range(4):
            path, text, seconds = jobs[c, r]
            try:
                out = call(client, path, text, server=server)
                outcomes.append((c, r, "ok", out))
            except QueueError as err:
                outcomes.append((c, r, "queue full", str(err)))
            except Exception as err:  # noqa: BLE001 - anything else fails the test below
                outcomes.append((c, r, "error", repr(err)))
        return outcomes

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        results = [o for session in pool.map(client_session, range(16)) for o in session]
    elapsed = time.perf_counter() - start

    assert len(results) == 64  # none lost
    errors = [o for o in results if o[2] == "error"]
    assert not errors, errors[:3]
    answered = [o for o in results if o[2] == "ok"]
    for c, r, _, out in answered:
        path, text, seconds = jobs[c, r]
        d = out["details"]
        # its own words come back, read or set aside by the checkpoint's words gate
        assert text in (d["transcript"], d["words_set_aside"]) and out["transcript"] == text
        assert d["duration_seconds"] == pytest.approx(seconds, abs=0.011)
        for label, p in expected[c, r].items():
            assert d["probabilities"][label] == pytest.approx(p, abs=2e-4)
    full = [o for o in results if o[2] == "queue full"]
    assert all("queue is full" in o[3].lower() for o in full)
    assert len(answered) >= 16, f"only {len(answered)} of 64 answered"
    print(f"\nload: {len(answered)} answered, {len(full)} told the queue is full, {elapsed:.1f} s")


# --- in process: the handler without a server --------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint() -> str:
    """The folder of the checkpoint the in-process tests load (the server's, without a server)."""
    return _server.checkpoint if _server is not None else _checkpoint()


@pytest.fixture(scope="module")
def offline_service(checkpoint):
    """The app's service with no speech recognition at all (as when Whisper cannot load)."""
    import app

    from ser_demo.recognizer import EmotionRecognizer

    recognizer = EmotionRecognizer.from_pretrained(checkpoint)
    return app.Service({"test": recognizer}, transcriber=None, asr_error="transcription unavailable: test")


def test_importing_the_app_launches_nothing():
    import app

    assert callable(app.main) and callable(app.build_demo)
    assert not hasattr(app, "demo")


def test_a_typed_transcript_works_without_speech_recognition(offline_service):
    import app

    analyze = app.make_analyze(offline_service)
    out = analyze(str(SPEECH_FILE), "this is wonderful news", "both", "test")
    assert out[-1]["tokens"] == ["this", "is", "wonderful", "news"] and out[-1]["transcript_source"] == "typed"
    empty = analyze(str(SPEECH_FILE), "", "both", "test")  # no words: audio still answers, with a note
    assert empty[-1]["tokens"] == [] and "type what was said" in empty[-2]
    import gradio as gr

    with pytest.raises(gr.Error, match="transcript"):
        analyze(str(SPEECH_FILE), "", "text", "test")
    demo = app.build_demo(offline_service)  # the page says that speech recognition is off
    assert any("Speech recognition is off" in str(getattr(b, "value", "")) for b in demo.blocks.values())


def test_unexpected_failures_reach_the_page_as_a_generic_message(offline_service, monkeypatch, caplog):
    import gradio as gr

    import app

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail that must not reach the page")

    monkeypatch.setattr(app, "run_analysis", broken)
    with pytest.raises(gr.Error) as info:
        app.make_analyze(offline_service)(str(SPEECH_FILE), "hello", "both", "test")
    assert str(info.value.message) == app.GENERIC_ERROR and "internal detail" not in str(info.value)
    assert "internal detail" in caplog.text  # logged server side


def test_the_handler_refuses_an_unknown_checkpoint_itself(offline_service):
    import gradio as gr

    import app

    with pytest.raises(gr.Error) as info:
        app.make_analyze(offline_service)(str(SPEECH_FILE), "hi", "both", "some-user/typed-repo")
    assert "unknown checkpoint 'some-user/typed-repo'" in info.value.message and "test" in info.value.message
    with pytest.raises(gr.Error, match="modality must be one of"):
        app.make_analyze(offline_service)(str(SPEECH_FILE), "hi", "video", "test")


def test_a_new_recording_clears_the_transcript_and_enter_analyses(offline_service):
    """The page's events: recording, uploading or clearing audio empties the transcript box;
    Enter in the transcript box runs the same analysis as the button."""
    import app

    demo = app.build_demo(offline_service)
    by_trigger = {}
    for fn in demo.fns.values():
        for block_id, event in fn.targets:
            by_trigger[getattr(demo.blocks.get(block_id), "elem_id", None), event] = fn
    for event in ("stop_recording", "upload", "clear"):
        fn = by_trigger["audio-input", event]
        assert [b.elem_id for b in fn.outputs] == ["transcript"]
        assert fn.fn() == ""
    click, submit = by_trigger["analyse", "click"], by_trigger["transcript", "submit"]
    assert submit.inputs == click.inputs and submit.outputs == click.outputs
    out = submit.fn(str(SPEECH_FILE), "what wonderful news", "both", "test")
    assert out[-1]["tokens"] == ["what", "wonderful", "news"] and out[-1]["transcript_source"] == "typed"


def test_checkpoint_sources_from_the_environment(monkeypatch, tmp_path):
    from ser_demo.service import checkpoint_sources

    default, other = tmp_path / "default-model", tmp_path / "other-model"
    default.mkdir(), other.mkdir()
    monkeypatch.setenv("SER_CHECKPOINT", str(default))
    monkeypatch.setenv("SER_APP_CHECKPOINTS", f" small={other} , someone/hub-model,,{other}, small=someone/else ")
    assert checkpoint_sources() == {
        "default-model": str(default),  # the default first, labelled by its folder name
        "small": str(other),  # "label=source"; a repeated label keeps its first source
        "someone/hub-model": "someone/hub-model",  # a Hub id is its own label
        "other-model": str(other),  # a folder without a label: its name
    }
    monkeypatch.setenv("SER_CHECKPOINT", "someone/default")
    monkeypatch.delenv("SER_APP_CHECKPOINTS")
    assert checkpoint_sources() == {"someone/default": "someone/default"}


def test_a_bad_extra_checkpoint_is_skipped_at_start_up(checkpoint, tmp_path, caplog, monkeypatch):
    import app

    monkeypatch.setenv("SER_APP_NO_ASR", "1")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # no weights
    service = app.load_service({"good": checkpoint, "broken": str(broken)}, warm_up=False)
    assert list(service.recognizers) == ["good"] and service.default == "good"
    assert "broken" in caplog.text and str(broken) in caplog.text
    assert service.transcriber is None and "SER_APP_NO_ASR" in service.asr_error
    out = app.make_analyze(service)(str(SPEECH_FILE), "", "both", "good")  # no Whisper: a note, still an answer
    assert out[-1]["tokens"] == [] and "type what was said" in out[-2]
    with pytest.raises(Exception):  # but the default checkpoint itself must load
        app.load_service({"broken": str(broken), "good": checkpoint}, asr=False, warm_up=False)


APP_SETTINGS_SCRIPT = """
import json, sys
import numpy
import app
service = app.load_service(warm_up=False)
analyze = app.make_analyze(service)
off = analyze(sys.argv[1], "this is wonderful news", "both", "extra")[-1]
on = app.make_analyze(service, explanations=True)(sys.argv[1], "this is wonderful news", "both", "extra")
numpy.save(sys.argv[2], on[4])  # the MFCC figure, whose bottom row draws the audio relevance
on = on[-1]
print(json.dumps({"checkpoints": list(service.recognizers), "asr_error": service.asr_error,
                  "transcriber": service.transcriber is not None, "explanations": app.EXPLANATIONS,
                  "relevance": app.RELEVANCE, "off": off, "on": on}))
"""


def test_app_settings_from_the_environment(checkpoint, tmp_path):
    """A fresh app process reads SER_APP_CHECKPOINTS (a bad extra is skipped), SER_APP_NO_ASR,
    SER_APP_EXPLANATIONS=0 and SER_APP_RELEVANCE=gradient; the gradient relevance it returns is
    the library's, computed here in the test process."""
    from ser_demo.analysis import analyze
    from ser_demo.plotting import draw_analysis
    from ser_demo.recognizer import EmotionRecognizer

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SER_CHECKPOINT": checkpoint,
           "SER_APP_CHECKPOINTS": f"extra={checkpoint},broken={tmp_path / 'missing'}",
           "SER_APP_NO_ASR": "1", "SER_APP_EXPLANATIONS": "0", "SER_APP_RELEVANCE": "gradient"}
    figure = tmp_path / "mfcc.npy"
    result = subprocess.run([sys.executable, "-c", APP_SETTINGS_SCRIPT, str(SPEECH_FILE), str(figure)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["checkpoints"] == [Path(checkpoint).name, "extra"] and "broken" in result.stderr
    assert out["transcriber"] is False and "SER_APP_NO_ASR" in out["asr_error"]
    assert out["explanations"] is False and out["relevance"] == "gradient"
    off = out["off"]  # SER_APP_EXPLANATIONS=0: no leave-one-word-out, uniform attention or relevance
    assert off["word_influence"] is None and off["uniform_attention_probabilities"] is None
    assert off["audio_relevance"]["method"] == "none" and "explanations" not in off["timings"]
    on = out["on"]
    assert on["audio_relevance"]["method"] == "gradient" and on["word_influence"] is not None
    # the page's MFCC figure is the one the library draws with gradient x input, not with occlusion
    recognizer = EmotionRecognizer.from_pretrained(checkpoint)
    drawn = {method: draw_analysis(analyze(recognizer, str(SPEECH_FILE), "this is wonderful news", "both",
                                           relevance=method))["mfcc"] for method in ("gradient", "occlusion")}
    shown = np.load(figure)
    assert shown.shape == drawn["gradient"].shape
    differs = lambda a, b: (np.abs(a.astype(int) - b.astype(int)).max(-1) > 8).mean()  # noqa: E731
    assert differs(shown, drawn["gradient"]) < 0.001 < differs(shown, drawn["occlusion"])
    for label, p in off["probabilities"].items():  # explanations change what is shown, not the answer
        assert on["probabilities"][label] == pytest.approx(p, abs=1e-6)


def test_a_misspelt_relevance_setting_stops_the_app_at_start_up():
    result = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "SER_APP_RELEVANCE": "gradients"})
    assert result.returncode != 0 and "SER_APP_RELEVANCE must be one of" in result.stderr
    assert "Traceback" not in result.stderr
