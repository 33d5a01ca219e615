"""The statistics head: a linear classifier on clip statistics whose answer a checkpoint mixes
into the network's (ser_demo/statistics_head.py, train/statistics_head.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from ser_demo.recognizer import BUNDLED_CHECKPOINT, EmotionRecognizer
from ser_demo.statistics_head import clip_statistics
from tests.test_model import SMALL, make_inputs
from train.audio_corpora import load_ravdess
from train.baselines import LogisticRegression, clip_vector
from train.datasets import load_goemotions
from train.features import FeatureBank
from train.pairing import LabelMatchedPairing
from train.trainer import TrainSettings, fit, predict_probabilities

HEAD = {"parts": ["mfcc", "whisper", "speaker"], "share": 0.25, "penalty": 0.1}


def test_clip_statistics_are_mean_and_std_over_time_then_the_speaker_embedding():
    rng = np.random.default_rng(0)
    mfcc, states, speaker = rng.normal(size=(96, 40)), rng.normal(size=(384, 20)), rng.normal(size=256)
    vector = clip_statistics(("mfcc", "whisper", "speaker"), mfcc, states, speaker)
    assert vector.shape == (2 * 96 + 2 * 384 + 256,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector[:96], mfcc.mean(1), rtol=1e-5)
    np.testing.assert_allclose(vector[96:192], mfcc.std(1), rtol=1e-5)
    np.testing.assert_allclose(vector[192:576], states.mean(1), rtol=1e-5)
    np.testing.assert_allclose(vector[576:960], states.std(1), rtol=1e-5)
    np.testing.assert_allclose(vector[-256:], speaker, rtol=1e-6)
    assert not clip_statistics(("mfcc",), np.zeros((96, 0))).any()  # no frames: zeros, not NaN
    with pytest.raises(ValueError, match="whisper"):
        clip_statistics(("whisper",), mfcc)


def head_model(seed=0) -> MSCNN_SPU_ATT:
    torch.manual_seed(seed)
    model = MSCNN_SPU_ATT(ModelConfig(**SMALL, use_speaker=True, audio_frontends=("mfcc", "whisper"),
                                      statistics_head=HEAD)).eval()
    with torch.no_grad():  # a head that has an opinion
        model.statistics_head.weight.normal_(0, 0.2)
        model.statistics_head.bias.normal_(0, 1)
    return model


def test_the_answer_is_the_share_weighted_mixture_and_rows_without_audio_keep_the_networks():
    model = head_model()
    batch = make_inputs(lengths=(40, 25, 0), word_lengths=(6, 3, 2), speaker=True)
    statistics = torch.randn(3, 2 * 96 + 2 * 384 + 256)
    with torch.no_grad():
        alone = model(**batch)
        mixed = model(**batch, clip_statistics=statistics)
        head = model.statistics_head(statistics)
    assert alone.head_logits is None  # without statistics: the network's answer, untouched
    torch.testing.assert_close(mixed.network_logits, alone.logits)
    torch.testing.assert_close(mixed.head_logits, head)
    expected = 0.75 * alone.logits.softmax(-1) + 0.25 * head.softmax(-1)
    torch.testing.assert_close(mixed.logits.softmax(-1)[:2], expected[:2])
    torch.testing.assert_close(mixed.logits.softmax(-1)[2], alone.logits.softmax(-1)[2])  # no audio in row 2


def test_the_head_travels_in_the_checkpoint(tmp_path):
    model = head_model()
    model.save_pretrained(tmp_path)
    loaded = MSCNN_SPU_ATT.from_pretrained(str(tmp_path))
    assert loaded.config.statistics_head == HEAD
    for name in ("mean", "std", "weight", "bias"):
        assert torch.equal(getattr(loaded.statistics_head, name), getattr(model.statistics_head, name))


@pytest.mark.parametrize("head, why", [
    ({**HEAD, "parts": ["mfcc"], "share": 0}, "share must be in"),
    ({**HEAD, "parts": ["mfcc"], "share": 1.5}, "share must be in"),
    ({**HEAD, "parts": ["whisper"]}, "part 'whisper' is not computed"),  # an MFCC-only model computes no encoder states
    ({**HEAD, "parts": ["mfcc", "speaker"]}, "part 'speaker' is not computed"),  # nor a speaker embedding
    ({**HEAD, "parts": []}, "needs parts"),
])
def test_a_head_the_checkpoint_cannot_feed_is_refused(head, why):
    with pytest.raises(ValueError, match=why):
        ModelConfig(**SMALL, statistics_head=head)
    with pytest.raises(ValueError, match="use_audio"):
        ModelConfig(**SMALL, use_audio=False, statistics_head={**HEAD, "parts": ["mfcc"]})


def test_the_command_line_gives_a_head_of_every_statistic_the_model_computes():
    import argparse

    from train.arguments import model_arguments, model_config

    def config_of(*argv):
        p = argparse.ArgumentParser()
        model_arguments(p)
        return model_config(p.parse_args(argv))

    whisper = ("--set", "use_speaker=true", "--set", 'audio_frontends=["whisper"]')
    assert config_of(*whisper, "--statistics-head", "0.25").statistics_head == HEAD
    paper = config_of("--statistics-head", "0.5", "--statistics-head-penalty", "1")
    assert paper.statistics_head == {"parts": ["mfcc"], "share": 0.5, "penalty": 1.0}
    assert config_of(*whisper).statistics_head is None
    with pytest.raises(SystemExit, match="statistics-head"):
        config_of("--statistics-head", "2")


def test_fit_trains_the_network_alone_then_fits_the_head_on_its_clips(fake_corpora, tmp_path):
    """The network's weights are those of the same training without a head; the head is the
    logistic regression of the training clips' statistics, and scoring mixes it in."""
    utterances, _ = load_ravdess(fake_corpora["ravdess"])
    texts, _ = load_goemotions(fake_corpora["goemotions"] / "train.tsv")
    tiny = dict(audio_kernel_sizes=(3, 5), text_kernel_sizes=(1, 2), n_filters=16, n_hidden=16)
    plain = ModelConfig(**tiny)
    with_head = replace(plain, statistics_head={"parts": ["mfcc"], "share": 0.25, "penalty": 0.01})
    bank = FeatureBank(plain, tmp_path)
    pairs = LabelMatchedPairing(utterances, texts, seed=0)
    settings = TrainSettings(epochs=2, progress=False)
    clips = [(u.audio_path, u.label) for u in utterances]
    silent = tmp_path / "silent.wav"  # no speech: no statistics, so not a training row of the head
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    logs = []
    network, _ = fit(plain, pairs.epoch, [], bank, settings, log=lambda m: None)
    with pytest.warns(UserWarning, match="without audio"):
        model, _ = fit(with_head, pairs.epoch, [], bank, settings, log=logs.append, labelled_clips=clips + [(silent, "sad")])
    assert f"statistics head: 1 of {len(clips) + 1} clips have no speech in them and are left out" in logs
    assert f"statistics head (mfcc, 192 inputs, L2 0.01) fitted on {len(clips)} clips; its share of the answer: 0.25" in logs
    for name, weights in network.state_dict().items():
        assert torch.equal(model.state_dict()[name], weights), name
    x = np.stack([clip_vector(bank, path, ("mfcc",)) for path, _ in clips])
    index = {label: i for i, label in enumerate(plain.labels)}
    regression = LogisticRegression(0.01).fit(x, np.array([index[label] for _, label in clips]), len(plain.labels))
    np.testing.assert_allclose(model.statistics_head.weight.numpy(), regression.weight.detach().numpy().T, rtol=1e-6)

    samples = [s for s in pairs.epoch(0) if s.audio_path is not None][:6]
    fused = predict_probabilities(model, samples, bank)
    alone = predict_probabilities(network, samples, bank)
    with torch.no_grad():
        head = model.statistics_head(torch.from_numpy(np.stack([clip_vector(bank, s.audio_path, ("mfcc",)) for s in samples])))
    np.testing.assert_allclose(fused, 0.75 * alone + 0.25 * head.softmax(-1).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "config.json").is_file(), reason="no bundled checkpoint")
def test_the_app_mixes_the_heads_answer_from_the_statistics_training_saw(speech_file, tmp_path):
    """On a real clip: the recognizer computes the same clip vector as the training features, and
    its answer is the mixture of the network's and the head's (when the checkpoint has a head)."""
    recognizer = EmotionRecognizer.from_pretrained(str(BUNDLED_CHECKPOINT), transcriber=None)
    config = recognizer.config
    if not config.statistics_head:
        pytest.skip("the bundled checkpoint has no statistics head")
    heard = recognizer.listen(str(speech_file), modality="audio", features=True)
    bank = FeatureBank(config, tmp_path)
    np.testing.assert_allclose(heard.features.statistics, clip_vector(bank, Path(speech_file), config.statistics_parts),
                               rtol=1e-4, atol=1e-4)
    p = recognizer.predict(str(speech_file), transcript="the weather is fine today")
    share = config.statistics_head["share"]
    for label in config.labels:
        assert p.probabilities[label] == pytest.approx(
            (1 - share) * p.network_probabilities[label] + share * p.head_probabilities[label], abs=1e-5)
    assert recognizer.predict(str(speech_file), transcript="fine", modality="text").head_probabilities is None


@pytest.mark.skipif(not (BUNDLED_CHECKPOINT / "config.json").is_file(), reason="no bundled checkpoint")
def test_the_page_says_which_two_answers_it_mixed(speech_file):
    """The app's analysis explains the mixed answer and shows both parts under the bars."""
    from ser_demo.analysis import analyze
    from ser_demo.plotting import draw_analysis

    recognizer = EmotionRecognizer.from_pretrained(str(BUNDLED_CHECKPOINT), transcriber=None)
    if not recognizer.config.statistics_head:
        pytest.skip("the bundled checkpoint has no statistics head")
    analysis = analyze(recognizer, str(speech_file), "the weather is fine today", explanations=False)
    e = analysis.explanation
    share = recognizer.config.statistics_head["share"]
    np.testing.assert_allclose(e.probabilities, (1 - share) * e.network_probabilities + share * e.head_probabilities,
                               atol=1e-5)
    html = draw_analysis(analysis)["probabilities"]
    assert "mixed from two answers" in html and f"weighted {share:.0%}" in html
    assert set(analysis.to_dict()["head_probabilities"]) == set(recognizer.labels)
    text_only = analyze(recognizer, None, "the weather is fine today", modality="text", explanations=False)
    assert text_only.explanation.head_probabilities is None
    assert "mixed from" not in draw_analysis(text_only)["probabilities"]


def test_cv_keeps_every_clips_two_answers_and_shares_mixes_them_again(fake_corpora, tmp_path):
    """cv writes each fold's per-clip predictions; `shares` re-mixes the network's and the head's
    answers: at the run's own share it gives the run's UA, at 0 the network's, at 1 the head's; with
    `--average` the networks of another training of the same fold answer together, `--against`
    compares two runs of the same folds fold by fold, and `--clips-of` keeps the clips another run tested."""
    from test_train_commands import TINY_SET
    from test_trainer import run_module
    from train import predictions
    from train.protocol import unweighted_accuracy

    cv = tmp_path / "cv"
    options = ["--audio", f"ravdess={fake_corpora['ravdess']}", "--text", str(fake_corpora["goemotions"]),
               "--cache", str(tmp_path / "cache"), "--no-progress", "--epochs", "1", *TINY_SET,
               "--drop-text", "0.5", "--drop-audio", "0.3", "--statistics-head", "0.25", "--statistics-head-penalty", "0.01",
               "--protocol", "speaker-independent", "--groups", "3", "--seeds", "0", "--max-folds", "1"]
    result = run_module("train", "cv", *options, "--out", str(cv))
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = predictions.load(cv)
    assert set(record["settings"]) == {"audio", "both", "text"}
    audio = record["settings"]["audio"]
    assert len(audio["label"]) == 8 and all(audio["heard"]) and {"network", "head", "probabilities"} <= set(audio)
    np.testing.assert_allclose(audio["probabilities"], 0.75 * np.array(audio["network"]) + 0.25 * np.array(audio["head"]),
                               atol=1e-4)
    words_alone = record["settings"]["text"]  # no audio, no statistics: the network answers alone
    assert "head" not in words_alone
    np.testing.assert_allclose(predictions.mixed(words_alone, 0.5), words_alone["probabilities"])

    [fold] = [json.loads(line) for line in next(cv.glob("*/folds.jsonl")).read_text().splitlines()]
    labels = record["labels"]
    ua = lambda probabilities: unweighted_accuracy(audio["label"], [labels[j] for j in np.argmax(probabilities, -1)], labels)  # noqa: E731
    assert predictions.fold_result(record, "audio", 0.25).ua == pytest.approx(fold["audio"]["ua"])
    assert predictions.fold_result(record, "audio", 0).ua == pytest.approx(ua(audio["network"]))
    assert predictions.fold_result(record, "audio", 1).ua == pytest.approx(ua(audio["head"]))
    shown = run_module("train", "shares", "--run", str(cv), "--shares", "0", "0.25", "1", "--setting", "audio")
    assert shown.returncode == 0, shown.stderr[-2000:]
    row = next(line for line in shown.stdout.splitlines() if line.startswith("| 0.25 |"))
    assert row.startswith(f"| 0.25 | {100 * fold['audio']['ua']:.1f} ± 0.0 (1) |")

    # Another training of the same fold (--init-seed 1): other networks, the same head (it reads
    # the clips alone); `shares --average` scores the two networks' mean answer with that head.
    again = tmp_path / "cv-init1"
    result = run_module("train", "cv", *options, "--init-seed", "1", "--out", str(again))
    assert result.returncode == 0, result.stderr[-2000:]
    [other] = predictions.load(again)
    second = other["settings"]["audio"]
    np.testing.assert_allclose(second["head"], audio["head"], atol=1e-5)
    assert not np.allclose(second["network"], audio["network"])
    [ensemble] = predictions.averaged([record], [other])
    np.testing.assert_allclose(ensemble["settings"]["audio"]["network"],
                               (np.array(audio["network"]) + np.array(second["network"])) / 2, atol=1e-9)
    assert predictions.fold_result(ensemble, "audio", 0).ua == pytest.approx(
        ua((np.array(audio["network"]) + np.array(second["network"])) / 2))
    with pytest.raises(ValueError, match="missing"):
        predictions.averaged([record], [{**other, "fold": "another fold"}])
    # `--against`: the ensemble minus the first training, fold by fold (here one fold).
    shown = run_module("train", "shares", "--run", str(cv), "--average", str(again), "--against", str(cv),
                       "--clips-of", str(cv), "--setting", "audio", "--shares", "0")
    assert shown.returncode == 0 and "averaged with the same folds' networks" in shown.stdout, shown.stderr[-2000:]
    assert f"only the test clips that {cv} tested" in shown.stdout
    gap = round(100 * (predictions.fold_result(ensemble, "audio", 0).ua - predictions.fold_result(record, "audio", 0).ua), 6)
    paired = shown.stdout.split("fold by fold, in points:")[1]
    assert f"| 0 | {gap:+.1f} (↑{int(gap > 0)} ↓{int(gap < 0)} of 1; mean abs {abs(gap):.1f}, max {abs(gap):.1f}) |" in paired, shown.stdout
    assert "| 0.25 | +0.0 (↑0 ↓0 of 1; mean abs 0.0, max 0.0) |" in predictions.paired_markdown([record], [record], "audio", [0.25])
    with pytest.raises(ValueError, match="missing"):
        predictions.paired_markdown([record], [{**other, "fold": "another fold"}], "audio", [0.25])

    # `--clips-of`: a run that tested more clips (trained with --calm-as-neutral, say) scored on the
    # clips of one that tested fewer; a setting the other run lacks is left out.
    fewer = {**record, "settings": {"audio": {k: v[::2] if isinstance(v, list) else v for k, v in audio.items()}}}
    [kept] = predictions.restricted([record], [fewer])
    assert set(kept["settings"]) == {"audio"} and kept["settings"]["audio"]["audio"] == audio["audio"][::2]
    assert predictions.fold_result(kept, "audio", 0.25).ua == pytest.approx(predictions.fold_result(fewer, "audio", 0.25).ua)
    assert "| 0.25 | +0.0 (↑0 ↓0 of 1;" in predictions.paired_markdown([kept], [fewer], "audio", [0.25])
    # only the compared setting must hold the same clips (the text corpora's sentences may differ)
    relabelled = {**words_alone, "label": ["angry" if label != "angry" else "sad" for label in words_alone["label"]]}
    other_texts = {**record, "settings": {**record["settings"], "text": relabelled}}
    assert "| 0.25 | +0.0 (↑0 ↓0 of 1;" in predictions.paired_markdown([other_texts], [record], "audio", [0.25])
    with pytest.raises(ValueError, match="other clips"):
        predictions.paired_markdown([other_texts], [record], "text", [0.25])

