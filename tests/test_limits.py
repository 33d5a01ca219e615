"""Bounded cost per request, in the library: transcript limits (listen, predict, the CLI),
explanations batched in bounded chunks, decoding that stops at the limit whatever a file claims,
gradient x input safe on a model shared by threads, and fuzzed audio and transcripts that get a
clear message. Random weights; no network, no Whisper."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_in_threads

from ser_demo.analysis import analyze
from ser_demo.explain import gradient_x_input, leave_one_word_out, occlusion_relevance, occlusion_windows
from ser_demo.ingest import AudioInputError, load_audio
from ser_demo.utterance import MAX_TRANSCRIPT_CHARACTERS, MAX_TRANSCRIPT_WORDS, PredictionError
from test_explain import recognizer as random_recognizer

ROOT = Path(__file__).resolve().parent.parent
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture(scope="module")
def rec():
    return random_recognizer()


# --- transcript limits -----------------------------------------------------------------------


def test_default_limits_are_a_hundred_words_and_a_thousand_characters(rec):
    assert (MAX_TRANSCRIPT_WORDS, MAX_TRANSCRIPT_CHARACTERS) == (100, 1000)
    assert (rec.max_transcript_words, rec.max_transcript_characters) == (100, 1000)


def test_a_long_transcript_is_refused_before_any_audio_or_model_work(rec, monkeypatch, speech):
    def no_work(*args, **kwargs):
        raise AssertionError("work was done for a transcript that must be refused")

    import ser_demo.ingest

    monkeypatch.setattr(ser_demo.ingest, "load_audio", no_work)
    monkeypatch.setattr(rec, "prepare", no_work)
    with pytest.raises(PredictionError, match=r"too long \(100,002 characters\); the maximum is 1,000 characters"):
        rec.predict(speech, 16000, "happy " * 16_667)
    with pytest.raises(PredictionError, match=r"too long \(101 words\); the maximum is 100 words"):
        rec.predict(speech, 16000, "so " * 101)  # 303 characters: the word limit speaks
    for modality in ("both", "audio", "text"):  # whatever the branch, a hostile text costs nothing
        with pytest.raises(PredictionError, match="too long"):
            analyze(rec, speech, "x" * 1001, modality, sample_rate=16000)


def test_the_limit_counts_the_words_the_model_reads(rec, speech):
    exactly = " ".join(["happy"] * 100)
    assert len(rec.predict(speech, 16000, exactly).tokens) == 100
    with pytest.raises(PredictionError, match="102 words"):
        rec.predict(speech, 16000, exactly + " can't")  # "can't" is two tokens: ca + n't


def test_a_library_user_may_raise_the_limits(speech):
    r = random_recognizer()
    r.max_transcript_words, r.max_transcript_characters = 300, None
    p = r.predict(speech, 16000, "happy " * 250)
    assert len(p.tokens) == 250
    r.max_transcript_words = None
    assert len(analyze(r, speech, "so " * 400, sample_rate=16000).explanation.word_influence) == 400


def test_what_whisper_heard_obeys_the_same_limits(speech):
    from ser_demo.transcript import Transcript

    class Chatty:  # a Whisper that hallucinates a long loop
        name = "chatty"

        def transcribe(self, audio):
            return Transcript("thank you " * 60, [], "en", "chatty", "none")

    r = random_recognizer()
    r.transcriber = Chatty()
    with pytest.raises(PredictionError, match=r"Whisper heard is too long \(120 words\).*Record a shorter clip"):
        r.predict(speech, 16000)


def test_the_cli_has_the_same_limits(tmp_path, speech_file):
    from ser_demo.model import MSCNN_SPU_ATT, ModelConfig

    MSCNN_SPU_ATT(ModelConfig()).save_pretrained(tmp_path)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ser_demo", "predict", str(speech_file), "--checkpoint",
                               str(tmp_path), *args], capture_output=True, text=True, cwd=ROOT, timeout=600)

    refused = cli("--transcript", "so " * 101)
    assert refused.returncode == 2 and "(101 words); the maximum is 100 words" in refused.stderr
    assert "Traceback" not in refused.stderr
    raised = cli("--transcript", "so " * 101, "--max-words", "200")
    assert raised.returncode == 0, raised.stderr


# --- explanations in bounded chunks ----------------------------------------------------------


def _batch_sizes(model):
    """Record (batch, words, frames) of every forward pass of `model`."""
    seen = []

    def hook(module, args, kwargs):
        words, mfcc = kwargs.get("words"), kwargs.get("mfcc", args[0] if args else None)
        seen.append((
            (words if words is not None else mfcc).shape[0],
            0 if words is None else words.shape[1],
            0 if mfcc is None else mfcc.shape[-1],
        ))

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_leave_one_word_out_runs_in_bounded_chunks_with_the_same_answer(rec, speech):
    text = " ".join(["happy", "sad", "wonderful", "news", "the", "a"] * 40)  # 240 words
    inputs = rec.prepare(speech[:16000], text, "both")
    whole = leave_one_word_out(rec.model, inputs.batch, words_per_pass=10**9)  # one pass
    seen, handle = _batch_sizes(rec.model)
    try:
        chunked = leave_one_word_out(rec.model, inputs.batch, words_per_pass=1000)
    finally:
        handle.remove()
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    variants = [(b, w) for b, w, _ in seen if w == 239]
    assert sum(b for b, _ in variants) == 240 and len(variants) > 1
    assert all(b * w <= 1000 for b, w in variants)  # memory per pass bounded, not 240 x 239 words


def test_occlusion_runs_in_bounded_chunks_with_the_same_answer(rec, speech):
    inputs = rec.prepare(speech, "wonderful news", "both")
    frames = int(inputs.batch["audio_lengths"][0])
    windows = occlusion_windows(frames, 0.01, 0.1)
    probs, _ = rec.forward(inputs)
    target = int(probs.argmax())
    whole = occlusion_relevance(rec.model, inputs.batch, target, float(probs[target]), windows,
                                frames_per_pass=10**9)
    seen, handle = _batch_sizes(rec.model)
    try:
        chunked = occlusion_relevance(rec.model, inputs.batch, target, float(probs[target]), windows,
                                      frames_per_pass=4 * frames)
    finally:
        handle.remove()
    # float32 sums in batches of another size differ in the last bits (~1e-6 of relevances ~0.1)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert [b for b, _, _ in seen] == [4] * (len(windows) // 4) + ([len(windows) % 4] if len(windows) % 4 else [])


# --- gradient x input on a shared model ------------------------------------------------------


def test_gradient_x_input_leaves_the_shared_model_alone(rec, speech, monkeypatch):
    calls = []
    monkeypatch.setattr(rec.model, "train", lambda mode=True: calls.append(mode))  # eval() calls train(False)
    inputs = rec.prepare(speech, "wonderful news", "both")
    relevance = gradient_x_input(rec.model, inputs.batch, 0)
    assert relevance.shape == (inputs.mfcc.shape[1],) and np.isfinite(relevance).all()
    assert calls == []  # never flips train/eval under another request's feet
    assert all(p.grad is None for p in rec.model.parameters())  # nothing accumulates on the weights


def test_two_concurrent_gradient_requests_match_sequential_ones(rec, speech):
    clips = [rec.prepare(speech[: 16000 * (1 + i)], text, "both")
             for i, text in enumerate(["so happy", "i am so sad and alone"])]
    sequential = [gradient_x_input(rec.model, c.batch, t) for c in clips for t in (0, 1)]
    results = {}

    def worker(i: int):
        for round_ in range(8):
            for t in (0, 1):
                results[i, round_, t] = gradient_x_input(rec.model, clips[i].batch, t)

    run_in_threads(worker, 2)
    for (i, _, t), value in results.items():
        np.testing.assert_allclose(value, sequential[2 * i + t], rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in rec.model.parameters()) and not rec.model.training


# --- decoding is bounded whatever a file claims ----------------------------------------------


def _speech(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 2 * t) ** 2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _peak_mb(fn) -> tuple[object, float]:
    """(result or exception, peak Python + numpy allocation in MB) of fn()."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - returned to the caller
            result = err
        return result, tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def hour_long(tmp_path_factory) -> dict[str, Path]:
    """An hour of audio (speech, then silence) that compresses into a few hundred kB or MB."""
    folder = tmp_path_factory.mktemp("hour")
    audio = np.zeros(16000 * 3600, np.float32)
    audio[:16000 * 5] = _speech(5.0)
    files = {"flac": folder / "hour.flac"}
    sf.write(files["flac"], audio, 16000)
    del audio
    # A FLAC whose header does not know its length (streamed): total samples 0.
    unknown = bytearray(files["flac"].read_bytes())
    unknown[21] &= 0xF0
    unknown[22:26] = bytes(4)
    files["flac-unknown-length"] = folder / "unknown.flac"
    files["flac-unknown-length"].write_bytes(bytes(unknown))
    if shutil.which("ffmpeg"):  # 5 s of opus, its packets repeated for an hour (no encoding)
        sf.write(folder / "five.wav", _speech(5.0), 16000)
        files["webm"] = folder / "hour.webm"
        for command in (["-i", str(folder / "five.wav"), "-c:a", "libopus", "-b:a", "6k", str(folder / "five.webm")],
                        ["-stream_loop", "719", "-i", str(folder / "five.webm"), "-c", "copy", str(files["webm"])]):
            subprocess.run(["ffmpeg", "-loglevel", "error", *command], check=True)
    return files


@pytest.mark.parametrize("kind", ["flac", "flac-unknown-length", "webm"])
def test_an_hour_long_file_is_refused_without_decoding_it(hour_long, kind):
    if kind not in hour_long:
        pytest.skip("ffmpeg not installed")
    path = hour_long[kind]
    assert path.stat().st_size < 10 * 1024 * 1024  # it passes the app's upload limit
    for source in (path, path.read_bytes()):
        error, peak = _peak_mb(lambda: load_audio(source, max_seconds=30, trim_silence=True))
        assert isinstance(error, AudioInputError) and "maximum is 30 s" in str(error)
        assert peak < 60, f"{peak:.0f} MB allocated to refuse {kind}"  # an hour at 16 kHz is 230 MB


def test_a_wav_header_claiming_ten_hours_costs_what_the_file_holds(tmp_path):
    path = tmp_path / "liar.wav"
    sf.write(path, _speech(2.0), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    ten_hours = 10 * 3600 * 16000 * 2
    data[at + 4:at + 8] = struct.pack("<I", ten_hours)
    data[4:8] = struct.pack("<I", ten_hours + 36)
    path.write_bytes(bytes(data))
    audio, peak = _peak_mb(lambda: load_audio(path))
    assert isinstance(audio, np.ndarray) and len(audio) <= 2 * 16000 and peak < 20


def test_many_channels_at_a_high_rate_are_mixed_down_block_by_block(tmp_path):
    path = tmp_path / "wide.wav"
    sf.write(path, np.tile(_speech(3.0, 96000)[:, None], (1, 16)), 96000, subtype="FLOAT")
    audio, peak = _peak_mb(lambda: load_audio(path))
    assert isinstance(audio, np.ndarray) and len(audio) == 3 * 16000
    assert peak < 0.6 * path.stat().st_size / 1e6  # never the whole 16-channel file as float32 at once


def test_too_many_channels_are_refused_from_the_header(tmp_path):
    path = tmp_path / "many.wav"
    sf.write(path, np.zeros((1600, 40), np.float32), 16000)
    with pytest.raises(AudioInputError, match="40 channels"):
        load_audio(path)


# --- fuzzing: every supported format, broken every way ---------------------------------------

FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
           ("opus", "OGG", "OPUS"), ("mp3", "MP3", "MPEG_LAYER_III")]


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("formats")
    clip = _speech(2.0, 48000)
    files = {}
    for suffix, fmt, subtype in FORMATS:
        path = folder / f"clip.{suffix}"
        sf.write(path, clip, 48000, format=fmt, subtype=subtype)
        files[suffix] = path.read_bytes()
    if shutil.which("ffmpeg"):
        for suffix, codec in (("webm", "libopus"), ("m4a", "aac")):
            path = folder / f"clip.{suffix}"
            subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(folder / "clip.wav"), "-c:a", codec, str(path)],
                           check=True)
            files[suffix] = path.read_bytes()
    return files


def _mutations(data: bytes, rng: np.random.Generator):
    yield "header only", data[:44]
    for fraction in (0.1, 0.5, 0.9):
        yield f"truncated to {fraction:.0%}", data[: int(len(data) * fraction)]
    flipped = bytearray(data)
    for at in rng.integers(0, len(data), 40):
        flipped[at] ^= 0xFF
    yield "40 bytes flipped", bytes(flipped)
    yield "header on random bytes", data[:64] + rng.bytes(20_000)
    yield "random bytes", rng.bytes(int(rng.integers(1, 50_000)))


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "opus", "mp3", "webm", "m4a"])
def test_broken_files_of_every_format_get_a_clear_message(good_files, suffix, tmp_path):
    if suffix not in good_files:
        pytest.skip("ffmpeg not installed")
    rng = np.random.default_rng(sum(map(ord, suffix)))
    assert isinstance(load_audio(good_files[suffix]), np.ndarray)  # the intact file is fine
    for what, data in _mutations(good_files[suffix], rng):
        path = tmp_path / f"fuzz.{suffix}"
        path.write_bytes(data)
        for source in (path, data):
            try:
                audio = load_audio(source, max_seconds=30, trim_silence=True)
            except AudioInputError as err:  # the only way to fail: a sentence for the user
                assert len(str(err)) > 20 and "Traceback" not in str(err), what
            else:  # a damaged file can still hold audio: then it is valid audio
                assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all(), what
                assert 0.3 * 16000 <= len(audio) <= 30 * 16000, what


HOSTILE_TRANSCRIPTS = {
    "control characters": "so \x00happy\x07 \x1b[31mnews\r\n\t",
    "right-to-left and combining": "\u202ehappy\u202c caf\u00e9 cafe\u0301 \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "emoji": "so happy \U0001f600\U0001f44d\U0001f3fd \u2764\ufe0f news",
    "html and javascript": "<script>alert('x')</script><img src=x onerror=alert(1)> happy",
    "only punctuation": "?!?!... ,,, ---",
    "100,000 characters": "a" * 100_000,
    "100,000 characters of emoji": "\U0001f600" * 100_000,
    "many short words": "a " * 499,
}


@pytest.mark.parametrize("name", list(HOSTILE_TRANSCRIPTS))
@pytest.mark.parametrize("modality", ["both", "audio", "text"])
def test_hostile_transcripts_get_an_answer_or_a_clear_message(rec, speech, name, modality):
    rec.max_transcript_words, rec.max_transcript_characters = MAX_TRANSCRIPT_WORDS, MAX_TRANSCRIPT_CHARACTERS
    text = HOSTILE_TRANSCRIPTS[name]
    try:
        a = analyze(rec, speech, text, modality, sample_rate=16000)
    except PredictionError as err:
        message = str(err)
        assert "too long" in message or "at least one word" in message, message
        assert ("too long" in message) == (len(text) > 1000 or name == "many short words")
    else:
        assert abs(sum(a.probabilities.values()) - 1) < 1e-5 and len(a.explanation.tokens) <= 100
