"""The inference API and `python -m ser_demo predict`, end to end on the committed speech file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser_demo import EmotionRecognizer, PredictionError
from ser_demo.ingest import AudioInputError
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.recognizer import default_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    MSCNN_SPU_ATT(ModelConfig()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def recognizer(checkpoint) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(str(checkpoint))


def test_predict_returns_everything_the_app_draws(recognizer, speech):
    p = recognizer.predict((16000, (speech * 32767).astype(np.int16)), transcript="I can't believe it, qwzxkvj!")
    assert set(p.probabilities) == {"angry", "happy", "sad", "neutral"}
    assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert p.label == max(p.probabilities, key=p.probabilities.get)
    assert p.mfcc.shape[0] == 96 and p.mfcc.shape[1] > 100
    assert p.audio_statistics.shape == (4, 3, 128)  # kernel sizes x (max, avg, std) x filters
    assert p.tokens == ["i", "ca", "n't", "believe", "it", "qwzxkvj", "!"] and p.known[5] is False
    assert set(p.attention) == {"max", "avg", "std"}
    for weights in p.attention.values():
        assert len(weights) == len(p.tokens) and sum(weights) == pytest.approx(1, abs=1e-5)
    assert {"ingest", "features", "model", "total"} <= set(p.timings)
    assert any("qwzxkvj" in note for note in p.notes)
    json.dumps(p.to_dict())  # JSON-ready


def test_modalities(recognizer, speech):
    audio_only = recognizer.predict(speech, 16000, transcript="hello", modality="audio")
    assert audio_only.tokens == [] and audio_only.attention == {}
    text_only = recognizer.predict(None, transcript="hello there", modality="text")
    assert text_only.mfcc is None and text_only.audio_statistics is None
    with pytest.raises(PredictionError, match="at least one word"):
        recognizer.predict(None, transcript="", modality="text")
    with pytest.raises(PredictionError, match="no audio"):
        recognizer.predict(None, transcript="hi", modality="both")


def test_missing_transcript_without_asr_is_an_empty_sentence(recognizer, speech):
    p = recognizer.predict(speech, 16000)
    assert p.tokens == [] and p.attention == {} and any("no transcript" in n for n in p.notes)


def test_bad_audio_is_a_clear_error(recognizer):
    with pytest.raises(AudioInputError):
        recognizer.predict(np.zeros(16000, np.float32), 16000, transcript="hi")
    with pytest.raises(AudioInputError):
        recognizer.predict(np.full(16000, np.nan, np.float32), 16000, transcript="hi")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ser_demo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_prints_json(checkpoint, speech_file):
    result = run_cli("predict", str(speech_file), "--transcript", "this is wonderful", "--checkpoint", str(checkpoint))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"label", "probabilities", "transcript", "tokens", "attention", "timings"} <= set(out)
    assert out["transcript"] == "this is wonderful" and out["tokens"] == ["this", "is", "wonderful"]


def test_cli_reports_bad_files_in_one_line(checkpoint, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    result = run_cli("predict", str(bad), "--transcript", "hi", "--checkpoint", str(checkpoint))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.skipif(default_checkpoint() is None, reason="no bundled checkpoint")
def test_cli_defaults_to_the_bundled_checkpoint_and_whisper(speech_file):
    result = run_cli("predict", str(speech_file))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "wonderful" in out["transcript"].lower() and "asr" in out["timings"]


def test_text_only_mode_asks_whisper_for_the_words(checkpoint, speech):
    from ser_demo.asr import Transcript, Word

    class ScriptedTranscriber:  # stands in for Whisper: the recognizer's wiring is under test here
        name = "scripted"

        def transcribe(self, audio):
            assert audio.dtype == np.float32 and audio.ndim == 1
            return Transcript("what wonderful news", [Word("what", 0.0, 0.3)], "en", "scripted", "none")

    r = EmotionRecognizer.from_pretrained(str(checkpoint), transcriber=ScriptedTranscriber())
    p = r.predict(speech, 16000, modality="text")
    assert p.transcript == "what wonderful news" and p.mfcc is None and "asr" in p.timings
    assert p.words[0].text == "what"
