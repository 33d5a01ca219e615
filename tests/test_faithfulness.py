"""ser_demo.deletion_curves and ser_demo.faithfulness: deletion curves, AOPC and sufficiency on
constructed and random-weight models (no network, no Whisper, no checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ser_demo import deletion_curves as D
from ser_demo import faithfulness as F
from ser_demo.explain import explain, occlusion_windows
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.recognizer import EmotionRecognizer
from ser_demo.text import WordVectors, tokenize

SENTENCE = "the kids are furious by the door"
KEY = "furious"
P_WITHOUT = 1 / (3 + np.exp(0.1))  # p(angry) when the keyword is gone


def keyword_recognizer(use_audio: bool = False) -> EmotionRecognizer:
    """A model in which one word alone carries the class: a width-1 text filter fires only on
    "furious" (the only vector with a first component), and only that filter feeds p(angry).
    With audio, the audio branch and the attention are wired to the classifier with weight 0."""
    rng = np.random.default_rng(0)
    words = sorted(set(tokenize(SENTENCE)))
    vectors = rng.normal(size=(len(words), 8)).astype(np.float32)
    vectors[:, 0] = 0.0
    vectors[words.index(KEY)] = 0.0
    vectors[words.index(KEY), 0] = 1.0
    config = ModelConfig(use_audio=use_audio, n_word_features=8, text_kernel_sizes=(1,), text_pooling="max",
                         use_swem=False, n_filters=4, n_hidden=4, dropout=0.0, audio_kernel_sizes=(3,))
    torch.manual_seed(0)
    model = MSCNN_SPU_ATT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.text_cnn.convs[0].weight[0, 0, 0] = 6.0  # filter 0 = 6 * (first component)
        first, last = model.classifier[1], model.classifier[4]
        text_start = len(config.audio_statistics) * config.n_filters if use_audio else 0  # text SPU comes after audio
        first.weight[0, text_start] = 1.0
        last.weight[0, 0] = 1.0  # logit of "angry" = the keyword filter's max over the words
        last.bias[1] = 0.1  # without the keyword: "happy", by a little
    return EmotionRecognizer(model, word_vectors=WordVectors(words, vectors, source="test"))


def random_recognizer(**config) -> EmotionRecognizer:
    torch.manual_seed(1)
    model = MSCNN_SPU_ATT(ModelConfig(**config)).eval()
    words = sorted(set(tokenize(SENTENCE + " so happy wonderful news")))
    vectors = np.random.default_rng(1).normal(size=(len(words), 50)).astype(np.float32)
    return EmotionRecognizer(model, word_vectors=WordVectors(words, vectors, source="test") if model.config.use_text else None)


@pytest.fixture(scope="module")
def audio(speech) -> np.ndarray:
    return speech[: 16000 * 2]


@pytest.mark.parametrize("removal", D.REMOVALS)
def test_the_word_that_carries_the_class_is_found_and_its_curve_drops_first(removal):
    rec = keyword_recognizer()
    inputs = rec.prepare(None, SENTENCE, "text")
    tokens = inputs.tokens.words
    key = tokens.index(KEY)
    p_angry = rec.forward(inputs)[0][0]
    assert p_angry > 0.9  # the constructed model says angry because of one word
    # an "attention" that looks at every word but the key one
    attention = np.full((3, len(tokens)), 1.0)
    attention[:, key] = 0.0
    curves = D.word_deletion_curves(rec.model, inputs.batch, 0, attention=attention, removal=removal, permutations=20)
    assert D.ranking(curves.scores[D.LEAVE_ONE_OUT])[0] == key
    assert curves.scores[D.LEAVE_ONE_OUT][key] == pytest.approx(p_angry - P_WITHOUT, abs=1e-5)
    others = np.delete(curves.scores[D.LEAVE_ONE_OUT], key)
    np.testing.assert_allclose(others, 0.0, atol=1e-6)
    loo = curves.deletion[D.LEAVE_ONE_OUT]
    assert loo[0] == pytest.approx(p_angry, abs=1e-5)
    np.testing.assert_allclose(loo[1:], P_WITHOUT, atol=1e-5)  # the first removal is the one that matters
    # attention removes the key word last
    np.testing.assert_allclose(curves.deletion[D.ATTENTION][:-1], p_angry, atol=1e-5)
    assert curves.aopc(D.LEAVE_ONE_OUT) >= curves.aopc(D.RANDOM) > curves.aopc(D.ATTENTION) - 1e-9
    # sufficiency: the key word alone keeps the answer; keeping only random words does not
    assert curves.sufficiency(D.LEAVE_ONE_OUT) < curves.sufficiency(D.RANDOM)
    assert curves.kept[D.LEAVE_ONE_OUT][1] == pytest.approx(p_angry, abs=1e-5)
    assert curves.label_changes  # without its words the model no longer says angry


def test_the_keyword_is_found_next_to_the_audio_branch_too(audio):
    rec = keyword_recognizer(use_audio=True)
    inputs = rec.prepare(audio, SENTENCE, "both")
    e = explain(rec, inputs, relevance="none")
    curves = D.word_deletion_curves(rec.model, inputs.batch, e.target, attention=e.attention, removal="delete")
    assert e.label == "angry" and D.ranking(curves.scores[D.LEAVE_ONE_OUT])[0] == inputs.tokens.words.index(KEY)
    assert curves.aopc(D.LEAVE_ONE_OUT) >= curves.aopc(D.RANDOM) and D.ATTENTION in curves.deletion


def test_deleted_and_masked_variants_are_what_the_model_says_on_the_edited_transcript(audio):
    rec = random_recognizer()
    inputs = rec.prepare(audio, SENTENCE, "both")
    probs, _ = rec.forward(inputs)
    target = int(probs.argmax())
    tokens = inputs.tokens.words
    for removal, replace in (("delete", None), ("mask", "qqqzz")):  # an unknown word = the zero vector
        curves = D.word_deletion_curves(rec.model, inputs.batch, target, removal=removal, permutations=0)
        order = curves.orders[D.LEAVE_ONE_OUT]
        for k in (1, 3, len(tokens)):
            gone = set(order[:k].tolist())
            edited = [replace if i in gone else t for i, t in enumerate(tokens) if i not in gone or replace]
            by_hand = rec.forward(rec.prepare(audio, " ".join(edited), "both"))[0][target]
            assert curves.deletion[D.LEAVE_ONE_OUT][k] == pytest.approx(by_hand, abs=1e-5), (removal, k)
            kept = [t if i in gone else replace for i, t in enumerate(tokens) if i in gone or replace]
            by_hand = rec.forward(rec.prepare(audio, " ".join(kept), "both"))[0][target]
            assert curves.kept[D.LEAVE_ONE_OUT][k] == pytest.approx(by_hand, abs=1e-5), (removal, k)
        # the leave-one-out influences are under the same removal
        one = order[0]
        edited = [replace if i == one else t for i, t in enumerate(tokens) if i != one or replace]
        p_without = rec.forward(rec.prepare(audio, " ".join(edited), "both"))[0][target]
        assert curves.scores[D.LEAVE_ONE_OUT][one] == pytest.approx(probs[target] - p_without, abs=1e-5)


def test_aopc_and_sufficiency_stay_within_their_bounds(audio):
    rec = random_recognizer()
    inputs = rec.prepare(audio, SENTENCE + " so happy", "both")
    e = explain(rec, inputs)
    f = F.measure(rec.model, inputs.batch, e, gradient=True, window_sufficiency=True)
    assert not F.measure(rec.model, inputs.batch, e, words=False).windows.kept  # the page: deletion only
    for curves in (f.words, f.windows):
        assert curves.deletion and np.all(np.diff(curves.steps) > 0)
        assert curves.steps[0] == 0 and curves.steps[-1] == curves.n_units
        base = curves.base
        assert base == pytest.approx(e.probabilities[e.target], abs=1e-5)
        for name in curves.deletion:
            assert base - 1 <= curves.aopc(name) <= base
            assert base - 1 <= curves.sufficiency(name) <= base
            p = curves.deletion[name]
            assert p[0] == pytest.approx(base, abs=1e-5) and np.all((p >= 0) & (p <= 1))
            assert curves.kept[name][-1] == pytest.approx(base, abs=1e-5)
            # every order ends with every unit removed: the same input
            assert p[-1] == pytest.approx(curves.without_all[e.target], abs=1e-5)
    assert set(f.words.deletion) == {D.ATTENTION, D.LEAVE_ONE_OUT, D.GRADIENT, D.RANDOM}
    assert set(f.windows.deletion) == {D.OCCLUSION, D.RANDOM}
    d = f.to_dict()
    assert d["words"]["aopc"].keys() == f.words.deletion.keys() and d["windows"]["unit"] == "window"


def test_one_word_no_words_and_audio_only(audio):
    rec = random_recognizer()
    one = rec.prepare(audio, "furious", "both")
    p = rec.forward(one)[0]
    target = int(p.argmax())
    curves = D.word_deletion_curves(rec.model, one.batch, target, removal="delete")
    empty = rec.forward(rec.prepare(audio, "", "both"))[0][target]
    for name in curves.deletion:  # nothing to rank: every order is the same two points
        assert curves.aopc(name) == pytest.approx(p[target] - empty, abs=1e-5)
        assert curves.sufficiency(name) == pytest.approx(p[target] - empty, abs=1e-5)
    assert "one word" in F.describe_words(curves, "x")
    none = rec.prepare(audio, "", "both")
    assert D.word_deletion_curves(rec.model, none.batch, target) is None
    assert "No words" in F.describe_words(None, "x")
    # audio only: windows but no words, also for a checkpoint without a text branch
    for r, modality in ((rec, "audio"), (random_recognizer(use_text=False), "both")):
        inputs = r.prepare(audio, "ignored", modality)
        f = F.measure(r.model, inputs.batch, explain(r, inputs))
        frames = int(inputs.batch["audio_lengths"][0])
        assert f.words is None and f.windows.n_units == len(occlusion_windows(frames, 0.01))
    # one window only, and the gradient relevance summed per window
    inputs = rec.prepare(audio, "so happy", "both")
    frames = int(inputs.batch["audio_lengths"][0])
    single = D.window_deletion_curves(rec.model, inputs.batch, 0, [(0, frames)], np.ones(1))
    assert single.steps.tolist() == [0, 1] and single.aopc(D.OCCLUSION) == pytest.approx(single.sufficiency(D.RANDOM))
    f = F.measure(rec.model, inputs.batch, explain(rec, inputs, relevance="gradient"))
    assert f.windows.n_units == len(occlusion_windows(frames, 0.01))
    # text only: no windows
    text = rec.prepare(None, "so happy", "text")
    f = F.measure(rec.model, text.batch, explain(rec, text))
    assert f.windows is None and f.words is not None
    assert "No audio" in F.describe_windows(None, "x")
    with pytest.raises(ValueError, match="removal"):
        D.word_deletion_curves(rec.model, one.batch, 0, removal="blank")


def test_long_recordings_are_measured_at_a_bounded_number_of_steps(audio):
    rec = random_recognizer()
    inputs = rec.prepare(np.tile(audio, 6), "so happy", "both")  # 12 s: 48 windows
    frames = int(inputs.batch["audio_lengths"][0])
    windows = occlusion_windows(frames, 0.01)
    curves = D.window_deletion_curves(rec.model, inputs.batch, 0, windows, np.arange(len(windows)), max_points=4)
    assert curves.n_units == len(windows) and len(curves.steps) <= 7
    assert {0, 1, 2, len(windows)} <= set(curves.steps.tolist())
    assert curves.drop(D.OCCLUSION, 2) == pytest.approx(curves.base - curves.deletion[D.OCCLUSION][2])
    with pytest.raises(ValueError, match="step"):
        curves.drop(D.OCCLUSION, 3)
    many = rec.prepare(None, " ".join(["so happy"] * 30), "text")  # 60 words: about 20 steps on the page
    words = F.measure(rec.model, many.batch, explain(rec, many, relevance="none")).words
    assert words.n_units == 60 and len(words.steps) <= 24 and words.steps[-1] == 60


def test_masked_and_cut_windows_match_the_model_on_the_edited_features(audio):
    rec = random_recognizer()
    inputs = rec.prepare(audio, "so happy", "both")
    frames = int(inputs.batch["audio_lengths"][0])
    windows = occlusion_windows(frames, 0.01)
    relevance = np.arange(len(windows))[::-1].astype(float)  # window 0 first
    for removal in D.REMOVALS:
        curves = D.window_deletion_curves(rec.model, inputs.batch, 0, windows, relevance, removal=removal,
                                          permutations=0, max_points=None)
        a, b = windows[0]
        batch = dict(inputs.batch)
        if removal == "mask":
            batch["mfcc"] = inputs.batch["mfcc"].clone()
            batch["mfcc"][:, :, a:b] = 0.0
        else:
            batch["mfcc"] = inputs.batch["mfcc"][:, :, b:frames]
            batch["audio_lengths"] = torch.tensor([frames - b])
        with torch.no_grad():
            p = rec.model(**batch).logits.softmax(-1)[0, 0].item()
        assert curves.deletion[D.OCCLUSION][1] == pytest.approx(p, abs=1e-5)


def test_rank_agreement():
    assert D.rank_agreement([0.1, 0.5, 0.2], [1, 3, 2]) == pytest.approx(1.0)
    assert D.rank_agreement([0.1, 0.5, 0.2], [3, 1, 2]) == pytest.approx(-1.0)
    assert D.rank_agreement([0.2, 0.2], [1, 2]) is None and D.rank_agreement([1.0], [1.0]) is None


def test_word_gradient_is_a_first_order_masking(audio):
    """Gradient x input estimates the drop of masking a word; on a model that is linear in the
    keyword the signs and the top word agree with leave-one-out, and no parameter gets a .grad."""
    rec = keyword_recognizer()
    inputs = rec.prepare(None, SENTENCE, "text")
    grad = D.word_gradient(rec.model, inputs.batch, 0)
    assert D.ranking(grad)[0] == inputs.tokens.words.index(KEY) and grad.max() > 0
    assert all(p.grad is None for p in rec.model.parameters())


def test_the_sentences_carry_the_measured_numbers(audio):
    rec = random_recognizer()
    inputs = rec.prepare(audio, SENTENCE, "both")
    e = explain(rec, inputs)
    f = F.measure(rec.model, inputs.batch, e)
    words = F.describe_words(f.words, e.label)
    for name in (D.ATTENTION, D.LEAVE_ONE_OUT, D.RANDOM):
        assert f"{abs(f.words.drop(name, 2)):.2f}" in words
    assert "masked" in words and f"p({e.label})" in words
    windows = F.describe_windows(f.windows, e.label)
    assert f"{abs(f.windows.drop(D.OCCLUSION, 2)):.2f}" in windows and "average training frame" in windows


def test_windows_span_every_audio_front_end_as_occlusion_does():
    """With MFCCs and Whisper encoder states (two frames per state), hiding the top window is
    the occlusion variant of that window, and cutting it out shortens both streams."""
    from ser_demo.explain import occlusion_relevance
    from ser_demo.inputs import collate

    torch.manual_seed(2)
    config = ModelConfig(audio_frontends=("mfcc", "whisper"), use_text=False)
    model = MSCNN_SPU_ATT(config).eval()
    rng = np.random.default_rng(2)
    batch = collate(config, [rng.normal(size=(96, 151)).astype(np.float32)], [None], None,
                    [rng.normal(size=(384, 75)).astype(np.float32)])
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)[0].numpy()
    target = int(probs.argmax())
    windows = occlusion_windows(151, 0.01)
    drops = occlusion_relevance(model, batch, target, float(probs[target]), windows)
    curves = D.window_deletion_curves(model, batch, target, windows, drops, permutations=0, max_points=None)
    assert curves.drop(D.OCCLUSION, 1) == pytest.approx(drops.max(), abs=1e-5)
    cut = D.frame_variants(batch, windows, np.array([[False] + [True] * (len(windows) - 1)]), "delete")
    assert int(cut["audio_lengths"][0]) == 151 - 25 and int(cut["encoder_lengths"][0]) == 75 - 13
    np.testing.assert_array_equal(cut["encoder_states"][0, :, 0].numpy(), batch["encoder_states"][0, :, 13].numpy())
