"""ser_demo.explain: leave-one-word-out, uniform attention, audio relevance; ser_demo.analysis:
word-time alignment and the staged pipeline. Random weights; no network, no Whisper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ser_demo.analysis import align_tokens, analyze
from ser_demo.transcript import Transcript, Word
from ser_demo.explain import (
    explain,
    gradient_x_input,
    leave_one_word_out,
    occlusion_relevance,
    occlusion_windows,
)
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.recognizer import EmotionRecognizer
from ser_demo.text import WordVectors, tokenize
from ser_demo.utterance import PredictionError

VOCAB = tokenize("i can't believe you did that it again this is wonderful news the a so happy sad zero")


def word_vectors(dim: int = 50, seed: int = 0) -> WordVectors:
    rng = np.random.default_rng(seed)
    words = sorted(set(VOCAB))
    return WordVectors(words, rng.normal(size=(len(words), dim)).astype(np.float32), source="test")


def recognizer(seed: int = 0, **config) -> EmotionRecognizer:
    torch.manual_seed(seed)
    model = MSCNN_SPU_ATT(ModelConfig(**config)).eval()
    return EmotionRecognizer(model, word_vectors=word_vectors() if model.config.use_text else None)


@pytest.fixture(scope="module")
def rec() -> EmotionRecognizer:
    return recognizer()


@pytest.fixture(scope="module")
def audio(speech) -> np.ndarray:
    return speech[: 16000 * 2]  # 2 s keeps the occlusion batch small


def test_leave_one_word_out_matches_removing_each_word_by_hand(rec, audio):
    text = "I can't believe you did that again"
    inputs = rec.prepare(audio, text, "both")
    batched = leave_one_word_out(rec.model, inputs.batch)
    words = inputs.tokens.words
    assert batched.shape == (len(words), 4)
    np.testing.assert_allclose(batched.sum(1), 1.0, atol=1e-5)
    for i in range(len(words)):
        shorter = rec.prepare(audio, " ".join(words[:i] + words[i + 1:]), "both")
        by_hand = rec.forward(shorter)[0]
        np.testing.assert_allclose(batched[i], by_hand, atol=1e-5)
    # sharing the audio statistics between variants gives the same numbers
    with torch.no_grad():
        stats = rec.model(**inputs.batch).audio_statistics
    np.testing.assert_allclose(leave_one_word_out(rec.model, inputs.batch, stats), batched, atol=1e-6)


def test_single_word_is_removed_to_the_empty_sentence(rec, audio):
    inputs = rec.prepare(audio, "wonderful", "both")
    without = leave_one_word_out(rec.model, inputs.batch)
    empty = rec.forward(rec.prepare(audio, "", "both"))[0]
    np.testing.assert_allclose(without[0], empty, atol=1e-6)


def test_removing_a_word_with_zero_attention_and_zero_text_influence_changes_nothing(audio):
    """A word whose text features are all zero (so it never wins a max-pool and adds nothing to
    S) and whose attention weight is 0 in every context must not change the prediction."""
    r = recognizer(text_kernel_sizes=(1,), text_pooling="max", use_swem=False)
    m = r.model
    with torch.no_grad():
        conv = m.text_cnn.convs[0]
        conv.bias.fill_(-1.0)  # a zero word vector -> ReLU(-1) = 0 on every filter
        conv.weight.abs_().mul_(10.0)  # positive words -> large positive features
        for w in m.attention.project:
            w.weight.abs_().mul_(100.0)  # positive contexts -> huge scores for non-zero h
    inputs = r.prepare(audio, "happy news zero", "both")
    words = inputs.batch["words"]
    words[0, :2] = words[0, :2].abs() + 0.1  # real words: positive vectors
    words[0, 2] = 0.0  # "zero": the zero vector
    with torch.no_grad():
        full = m(**inputs.batch)
    assert float(full.attention[0, :, 2].max()) < 1e-12  # zero attention weight in every context
    without = leave_one_word_out(m, inputs.batch)
    p_full = full.logits.softmax(-1)[0].numpy()
    np.testing.assert_allclose(without[2], p_full, atol=1e-6)
    assert np.abs(without[0] - p_full).max() > 1e-4  # while removing a real word does change it


def test_uniform_attention_is_the_mean_of_h(rec, audio):
    inputs = rec.prepare(audio, "I can't believe you did that", "both")
    b = inputs.batch
    with torch.no_grad():
        out = rec.model(**b, uniform_attention=True)
        mask = torch.ones(1, b["words"].shape[1], dtype=torch.bool)
        h = torch.cat(rec.model.text_cnn(b["words"].transpose(1, 2), mask), dim=1).transpose(1, 2)
    n = int(b["word_lengths"][0])
    torch.testing.assert_close(out.attention, torch.full((1, 3, n), 1.0 / n))
    for j in range(3):  # every context vector reads the same S_j = mean_k h_k
        torch.testing.assert_close(out.attended[0, j], h[0].mean(0), rtol=1e-5, atol=1e-6)


def test_occlusion_windows_cover_every_frame_once():
    windows = occlusion_windows(437, 0.01, 0.25)
    assert windows[0][0] == 0 and windows[-1][1] == 437
    assert all(a < b for a, b in windows) and all(w[1] == n[0] for w, n in zip(windows, windows[1:]))
    assert windows[0][1] - windows[0][0] == 25
    assert len(occlusion_windows(3000, 0.01, 0.25, max_windows=40)) <= 40
    assert occlusion_windows(0, 0.01) == []


def test_occlusion_matches_hiding_each_window_by_hand(rec, audio):
    inputs = rec.prepare(audio, "this is wonderful news", "both")
    probs, _ = rec.forward(inputs)
    target = int(probs.argmax())
    frames = int(inputs.batch["audio_lengths"][0])
    windows = occlusion_windows(frames, 0.01, 0.5)
    drops = occlusion_relevance(rec.model, inputs.batch, target, float(probs[target]), windows,
                                 frames_per_pass=3 * frames)  # 3 variants per pass
    assert drops.shape == (len(windows),)
    for (a, b), drop in zip(windows, drops):
        batch = dict(inputs.batch, mfcc=inputs.batch["mfcc"].clone())
        batch["mfcc"][:, :, a:b] = 0.0
        with torch.no_grad():
            p = rec.model(**batch).logits.softmax(-1)[0, target].item()
        assert drop == pytest.approx(probs[target] - p, abs=1e-5)


def test_gradient_x_input_is_a_first_order_occlusion(rec, audio):
    """Frame t's relevance sum_f dp/dx[f,t] * x[f,t] is the derivative of p(target) along x
    restricted to that frame: check it against central finite differences (in float64, so the
    difference quotient is exact to ~1e-8), frame by frame and for all frames at once."""
    import copy

    model = copy.deepcopy(rec.model).double().eval()
    inputs = rec.prepare(audio, "this is wonderful news", "both")
    batch = {k: v.double() if v.is_floating_point() else v for k, v in inputs.batch.items()}
    probs, _ = rec.forward(inputs)
    target = int(probs.argmax())
    relevance = gradient_x_input(model, batch, target)
    frames = inputs.mfcc.shape[1]
    assert relevance.shape == (frames,) and np.isfinite(relevance).all()
    assert batch["mfcc"].grad is None and not model.training

    def p_along(direction: torch.Tensor, eps: float) -> float:
        with torch.no_grad():
            moved = dict(batch, mfcc=batch["mfcc"] + eps * direction)
            return model(**moved).logits.softmax(-1)[0, target].item()

    def derivative(direction: torch.Tensor, eps: float = 1e-5) -> float:
        return (p_along(direction, eps) - p_along(direction, -eps)) / (2 * eps)

    x = batch["mfcc"]
    checked = np.linspace(0, frames - 1, 8).astype(int)
    for t in checked:
        one_frame = torch.zeros_like(x)
        one_frame[:, :, t] = x[:, :, t]
        assert relevance[t] == pytest.approx(derivative(one_frame), rel=1e-3, abs=1e-9), t
    assert relevance.sum() == pytest.approx(derivative(x), rel=1e-3, abs=1e-9)
    assert np.abs(relevance[checked]).max() > 1e-6  # the comparison above is not 0 == 0


def test_explain_fills_everything_for_both_modalities(rec, audio):
    inputs = rec.prepare(audio, "I can't believe you did that", "both")
    e = explain(rec, inputs)
    probs, _ = rec.forward(inputs)
    np.testing.assert_allclose(e.probabilities, probs, atol=1e-6)
    assert e.label == rec.labels[int(probs.argmax())]
    n = len(inputs.tokens.words)
    assert e.attention.shape == (3, n) and np.allclose(e.attention.sum(1), 1.0, atol=1e-5)
    assert e.word_influence.shape == (n,) and e.without_word.shape == (n, 4)
    np.testing.assert_allclose(e.word_influence, probs[e.target] - e.without_word[:, e.target], atol=1e-6)
    assert e.uniform_probabilities.shape == (4,) and e.uniform_probabilities.sum() == pytest.approx(1, abs=1e-5)
    assert e.frame_relevance.shape == (inputs.mfcc.shape[1],)
    assert e.audio_statistics.shape == (4, 3, 128)
    d = e.to_dict()
    assert set(d["probabilities"]) == set(rec.labels) and len(d["word_influence"]) == n


def test_explain_single_modalities(rec, audio):
    audio_only = explain(rec, rec.prepare(audio, None, "audio"))
    assert audio_only.tokens == [] and audio_only.word_influence is None
    assert audio_only.attention is None and audio_only.uniform_probabilities is None
    assert audio_only.frame_relevance is not None
    text_only = explain(rec, rec.prepare(None, "so happy", "text"))
    assert text_only.frame_relevance is None and text_only.audio_statistics is None
    assert text_only.word_influence.shape == (2,)
    assert explain(rec, rec.prepare(audio, "so happy", "both"), relevance="none").frame_relevance is None
    with pytest.raises(ValueError):
        explain(rec, rec.prepare(audio, "so happy", "both"), relevance="magic")


def test_align_tokens_follows_asr_words_and_edits():
    words = [Word("I", 0.0, 0.2), Word("can't", 0.2, 0.6), Word("believe", 0.6, 1.0), Word("it.", 1.0, 1.2)]
    tokens = tokenize("I can't believe it")
    assert align_tokens(tokens, words) == [(0.0, 0.2), (0.2, 0.6), (0.2, 0.6), (0.6, 1.0), (1.0, 1.2)]
    edited = tokenize("I really can't believe")  # a word added, one removed
    times = align_tokens(edited, [vars(w) for w in words])  # dicts work too
    assert times == [(0.0, 0.2), None, (0.2, 0.6), (0.2, 0.6), (0.6, 1.0)]
    assert align_tokens(tokens, []) == [None] * len(tokens)


class FakeTranscriber:
    def __init__(self, text="I can't believe it"):
        self.text, self.calls = text, 0

    def transcribe(self, audio):
        self.calls += 1
        return Transcript(self.text, [Word("I", 0.0, 0.3), Word("can't", 0.3, 0.8)], "en", "fake", "fake")


def test_analyze_transcribes_only_when_words_are_needed(rec, audio):
    asr = FakeTranscriber()
    a = analyze(rec, audio, None, "both", sample_rate=16000, transcriber=asr)
    assert asr.calls == 1 and a.transcript_source == "asr" and a.transcript == asr.text
    assert a.token_times[:3] == [(0.0, 0.3), (0.3, 0.8), (0.3, 0.8)] and a.token_times[3] is None
    assert set(a.timings) >= {"ingest", "asr", "features", "model", "explanations"}
    assert a.duration == pytest.approx(2.0, abs=0.01)
    typed = analyze(rec, audio, "so happy", "both", sample_rate=16000, transcriber=asr)
    assert asr.calls == 1 and typed.transcript_source == "typed" and typed.explanation.tokens == ["so", "happy"]
    audio_only = analyze(rec, audio, "", "audio", sample_rate=16000, transcriber=asr)
    assert asr.calls == 1 and audio_only.explanation.tokens == [] and audio_only.transcript == ""
    text_only = analyze(rec, audio, "", "text", sample_rate=16000, transcriber=asr)  # ASR feeds the text
    assert asr.calls == 2 and text_only.explanation.frame_relevance is None
    fast = analyze(rec, audio, "so happy", "both", sample_rate=16000, explanations=False)
    assert fast.explanation.word_influence is None and "explanations" not in fast.timings
    d = a.to_dict()
    assert d["transcript"] == asr.text and d["words"][0] == {"text": "I", "start": 0.0, "end": 0.3}


def test_work_done_while_the_deletion_curves_are_measured_changes_nothing(rec, audio):
    """while_measuring(analysis) runs on the finished analysis before its faithfulness is in, in
    the caller's thread, while another thread measures it; the curves are those of a plain run."""
    import threading

    seen = []

    def while_measuring(analysis):
        seen.append((analysis.faithfulness, analysis.label, threading.current_thread() is threading.main_thread()))

    plain = analyze(rec, audio, "so happy", "both", sample_rate=16000)
    overlapped = analyze(rec, audio, "so happy", "both", sample_rate=16000, while_measuring=while_measuring)
    assert seen == [(None, plain.label, True)]
    assert overlapped.faithfulness.to_dict() == plain.faithfulness.to_dict()
    assert overlapped.faithfulness.words is not None and overlapped.faithfulness.windows is not None
    assert "faithfulness" in overlapped.timings
    fast = analyze(rec, audio, "so happy", "both", sample_rate=16000, explanations=False, while_measuring=while_measuring)
    assert seen[-1] == (None, fast.label, True) and fast.faithfulness is None

    def broken(analysis):
        raise RuntimeError("a figure failed")

    with pytest.raises(RuntimeError, match="a figure failed"):  # its error reaches the caller
        analyze(rec, audio, "so happy", "both", sample_rate=16000, while_measuring=broken)


def test_word_times_of_a_recording_survive_a_typed_rerun(rec, audio):
    from ser_demo.transcript import RecentWords

    memory, asr = RecentWords(size=2), FakeTranscriber()
    heard = analyze(rec, audio, None, "both", sample_rate=16000, transcriber=asr, word_memory=memory)
    same = analyze(rec, audio, heard.transcript, "both", sample_rate=16000, transcriber=asr, word_memory=memory)
    assert asr.calls == 1 and same.transcript_source == "typed"
    assert same.token_times == heard.token_times and same.words == heard.words
    edited = analyze(rec, audio, "well I can't", "both", sample_rate=16000, transcriber=asr, word_memory=memory)
    assert edited.token_times == [None, (0.0, 0.3), (0.3, 0.8), (0.3, 0.8)]
    other = analyze(rec, audio[:24000], "I can't", "both", sample_rate=16000, word_memory=memory)
    assert other.words == [] and other.token_times == [None, None, None]  # another recording: no times
    for n in range(3):  # bounded: the oldest recording is forgotten
        memory.remember(audio[: 8000 * (n + 1)], [Word("x", 0.0, 0.1)])
    assert memory.recall(audio) == [] and len(memory._words) == 2


def test_analyze_says_what_is_missing(rec, audio):
    with pytest.raises(PredictionError, match="transcript"):
        analyze(rec, audio, "", "text", sample_rate=16000, transcriber=None)
    with pytest.raises(PredictionError, match="no audio"):
        analyze(rec, None, "hello", "both")
    audio_model = recognizer(use_text=False)
    with pytest.raises(PredictionError, match="supports"):
        analyze(audio_model, audio, "hello", "text", sample_rate=16000)
    both = analyze(audio_model, audio, "", "both", sample_rate=16000)  # "both" = every branch it has
    assert both.explanation.tokens == [] and both.mfcc is not None
    a = analyze(rec, audio, "", "both", sample_rate=16000, transcriber=None, asr_unavailable="no model")
    assert any("no model" in n for n in a.notes) and a.explanation.tokens == []
    from ser_demo.ingest import AudioInputError

    with pytest.raises(AudioInputError):
        analyze(rec, np.zeros(16000, np.float32), "hi", "both", sample_rate=16000)  # silence
