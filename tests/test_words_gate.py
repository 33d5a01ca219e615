"""The words gate: words the text branch alone is not sure of are set aside and the voice answers
alone, the same way in the app's recognizer and in `train`'s scoring; text alone is never gated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_demo.analysis import analyze
from ser_demo.model import ModelConfig
from ser_demo.recognizer import BUNDLED_CHECKPOINT, EmotionRecognizer
from ser_demo.words_gate import words_are_read
from train.features import FeatureBank
from train.pairing import BimodalSample
from train.trainer import predict_parts

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT = "Kids are talking by the door."  # RAVDESS's neutral script: its text branch is unsure of it
ANGRY_WORDS = "I hate you, you ruined everything!"
NEUTRAL_WORDS = "The meeting is scheduled for three o'clock on Tuesday."  # its text branch is sure: neutral
EMOTIONS = ("angry", "happy", "sad")

pytestmark = pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "model.safetensors").is_file(), reason="no bundled checkpoint")


@pytest.mark.parametrize("threshold", [0, 1, 1.5, -0.1, True, "0.5"])
def test_the_gate_is_a_probability(threshold):
    with pytest.raises(ValueError, match="words_gate"):
        ModelConfig(words_gate=threshold)


def test_words_are_read_when_the_text_branch_is_sure_of_them():
    text_alone = np.array([[0.6, 0.2, 0.1, 0.1], [0.35, 0.25, 0.2, 0.2], [0.5, 0.5, 0.0, 0.0]])
    assert words_are_read(text_alone, 0.5).tolist() == [True, False, True]
    assert words_are_read(text_alone, None).tolist() == [True, True, True]  # no gate: always read


@pytest.mark.parametrize("settings, complaint", [
    (dict(words_gate_labels=["sad"]), "needs words_gate"),
    (dict(words_gate=0.5, words_gate_labels=["calm"]), "distinct labels"),
    (dict(words_gate=0.5, words_gate_labels=["sad", "sad"]), "distinct labels"),
    (dict(words_gate=0.5, words_gate_labels=[]), "distinct labels"),
])
def test_the_gates_labels_are_the_checkpoints(settings, complaint):
    with pytest.raises(ValueError, match=complaint):
        ModelConfig(**settings)


def test_with_gate_labels_only_their_probability_counts():
    labels = ("angry", "happy", "sad", "neutral")
    text_alone = np.array([[0.1, 0.1, 0.1, 0.7], [0.6, 0.1, 0.1, 0.2], [0.3, 0.2, 0.1, 0.4]])
    assert words_are_read(text_alone, 0.5, labels).tolist() == [True, True, False]
    # sure that the words are neutral is not sure of an emotion: the first row is set aside now
    assert words_are_read(text_alone, 0.5, labels, ("angry", "happy", "sad")).tolist() == [False, True, False]


def test_the_checkpoint_states_its_gate_in_words():
    assert ModelConfig().words_gate_rule is None
    rule = ModelConfig(words_gate=0.5, words_gate_labels=EMOTIONS).words_gate_rule
    assert rule == "the text branch, reading the words alone, gives less than 50 % to each of angry, happy and sad"


@pytest.fixture(scope="module")
def gated() -> EmotionRecognizer:
    """The bundled checkpoint with the first gate (any label at 0.5); tests set the labels they study."""
    recognizer = EmotionRecognizer.from_pretrained(str(BUNDLED_CHECKPOINT))
    recognizer.model.config.words_gate, recognizer.model.config.words_gate_labels = 0.5, None
    return recognizer


def test_unsure_words_are_set_aside_and_the_voice_answers_alone(gated):
    clip = FIXTURES / "brother.flac"
    voice = gated.predict(clip, modality="audio")
    script = gated.predict(clip, transcript=SCRIPT)
    assert script.words_set_aside == SCRIPT and script.transcript is None and script.tokens == []
    assert script.attention == {}  # the model read no words
    np.testing.assert_allclose(list(script.probabilities.values()), list(voice.probabilities.values()), atol=1e-6)
    assert any("the voice answers alone" in note and SCRIPT in note for note in script.notes)
    assert "words gate" in script.timings
    angry = gated.predict(clip, transcript=ANGRY_WORDS)  # words that carry an emotion are read
    assert angry.words_set_aside is None and angry.transcript == ANGRY_WORDS and len(angry.tokens) > 3
    assert angry.probabilities["angry"] > voice.probabilities["angry"]
    text_alone = gated.predict(None, transcript=SCRIPT, modality="text")  # no voice: the words answer
    assert text_alone.words_set_aside is None and text_alone.tokens


def test_the_bundled_checkpoint_gates_on_the_emotions():
    config = ModelConfig(**json.loads((BUNDLED_CHECKPOINT / "config.json").read_text()))  # no second load of the model
    assert config.words_gate == 0.5 and config.words_gate_labels == EMOTIONS


def test_without_a_gate_the_words_are_always_read(gated, monkeypatch):
    monkeypatch.setattr(gated.model.config, "words_gate", None)
    p = gated.predict(FIXTURES / "brother.flac", transcript=SCRIPT)
    assert p.words_set_aside is None and p.transcript == SCRIPT and p.attention


def test_with_emotion_labels_words_sure_to_be_neutral_are_set_aside(gated, monkeypatch):
    clip = FIXTURES / "brother.flac"
    assert gated.predict(clip, transcript=NEUTRAL_WORDS).words_set_aside is None  # sure of neutral: read
    monkeypatch.setattr(gated.model.config, "words_gate_labels", EMOTIONS)
    neutral = gated.predict(clip, transcript=NEUTRAL_WORDS)
    voice = gated.predict(clip, modality="audio")
    assert neutral.words_set_aside == NEUTRAL_WORDS
    np.testing.assert_allclose(list(neutral.probabilities.values()), list(voice.probabilities.values()), atol=1e-6)
    assert any("angry, happy or sad at most" in note and "its surest answer is neutral" in note for note in neutral.notes)
    assert gated.predict(clip, transcript=ANGRY_WORDS).words_set_aside is None  # an emotion it is sure of: read


def test_read_all_words_passes_the_gate(gated):
    clip = FIXTURES / "brother.flac"
    read = gated.predict(clip, transcript=SCRIPT, read_all_words=True)
    assert read.words_set_aside is None and read.transcript == SCRIPT and read.attention
    page = analyze(gated, clip, SCRIPT, explanations=False, read_all_words=True)
    assert page.transcript == SCRIPT and not page.words_set_aside and page.explanation.tokens


def test_the_page_keeps_the_words_it_set_aside(gated):
    analysis = analyze(gated, FIXTURES / "brother.flac", SCRIPT, explanations=False)
    assert analysis.words_set_aside == SCRIPT and analysis.transcript == ""
    assert analysis.explanation.tokens == [] and analysis.to_dict()["words_set_aside"] == SCRIPT


@pytest.mark.parametrize("gate_labels", [None, EMOTIONS])
def test_scoring_gates_the_words_as_the_app_does(gated, tmp_path, monkeypatch, gate_labels):
    """`train cv` and `train evaluate` score through predict_parts: the same answers as the app's
    recognizer, words set aside or read alike."""
    monkeypatch.setattr(gated.model.config, "words_gate_labels", gate_labels)
    texts = [SCRIPT, ANGRY_WORDS, NEUTRAL_WORDS]
    files = [FIXTURES / name for name in ("brother.flac", "thanks.flac", "children.flac")]
    samples = [BimodalSample(f, t, "neutral", "s", "fixture", f.stem, "fixture") for f, t in zip(files, texts)]
    scored = predict_parts(gated.model, samples, FeatureBank(gated.model.config, tmp_path))["probabilities"]
    for sample, row in zip(samples, scored):
        app = gated.predict(sample.audio_path, transcript=sample.text)
        np.testing.assert_allclose(row, list(app.probabilities.values()), atol=1e-4)
    assert gated.predict(files[0], transcript=SCRIPT).words_set_aside  # both cases are covered
    assert gated.predict(files[1], transcript=ANGRY_WORDS).words_set_aside is None
    assert (gated.predict(files[2], transcript=NEUTRAL_WORDS).words_set_aside is None) == (gate_labels is None)


def test_the_command_line_reads_every_word_when_asked(tmp_path, capsys):
    """`python -m ser_demo predict`: the gate's words come back apart, in JSON and in the CSV's
    words_set_aside column; --read-all-words reads them."""
    import csv

    from ser_demo.__main__ import main

    clip = str(FIXTURES / "brother.flac")
    for flags, read in (([], False), (["--read-all-words"], True)):
        assert main(["predict", clip, "--transcript", SCRIPT, "--asr", "none", *flags]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["transcript"], out["words_set_aside"]) == ((SCRIPT, None) if read else (None, SCRIPT))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.flac").write_bytes((FIXTURES / "brother.flac").read_bytes())
    assert main(["predict", str(tmp_path / "clips"), "--csv", str(tmp_path / "out.csv")]) == 0
    row = next(csv.DictReader((tmp_path / "out.csv").open()))
    assert row["words_set_aside"] and not row["transcript"]  # Whisper's everyday words: set aside
    assert main(["predict", str(tmp_path / "clips"), "--csv", str(tmp_path / "out.csv"), "--read-all-words"]) == 0
    row = next(csv.DictReader((tmp_path / "out.csv").open()))
    assert row["transcript"] and not row["words_set_aside"]


RECIPE_RESULTS = BUNDLED_CHECKPOINT / "results" / "recipe"
CLASS_TEXTS = "whisper-block2-clip-ge2e-text-24ep-recipe-consistency3-words-no-dev-texts2400-seed4-5{}-class-texts.jsonl"


@pytest.mark.skipif(not (RECIPE_RESULTS / CLASS_TEXTS.format("")).is_file(), reason="no committed class-texts runs")
def test_the_readme_class_text_rows_are_the_committed_runs():
    """README's gate table: texts of the clip's own class and of another (`cv --class-texts` on the
    fresh folds), read always -> gated, are the means over the committed folds."""
    readme = " ".join((BUNDLED_CHECKPOINT.parents[1] / "README.md").read_text().split())

    def mean_ua(variant: str, key: str) -> str:
        folds = [json.loads(line) for line in (RECIPE_RESULTS / CLASS_TEXTS.format(variant)).read_text().splitlines()]
        scores = [f[key]["ua"] for f in folds if key in f]
        assert len(folds) == 6 and scores
        return f"{100 * np.mean(scores):.2f}"

    for setting, name in (("own-class text", "a text of the clip's own class"), ("other-class text", "a text of another class")):
        cells = [f"{mean_ua('', setting + corpus)} → {mean_ua('-words-gate0.5-emotions', setting + corpus)}"
                 for corpus in ("", " [ravdess]", " [tess]", " [savee]")]
        assert f"| + {name}, read always → gated | {' | '.join(cells)} |" in readme
