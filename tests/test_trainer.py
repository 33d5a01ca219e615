"""The training loop and the `python -m train` commands, on small espeak-ng corpora in real layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_demo.audio import Normalizer
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig
from train.audio_corpora import load_ravdess
from train.datasets import load_goemotions
from train.features import FeatureBank, load_clip
from train.pairing import LabelMatchedPairing, ModalityDropout
from train.trainer import TrainSettings, fit, make_batch

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(audio_kernel_sizes=(3, 5), text_kernel_sizes=(1, 2), n_filters=16, n_hidden=16)


def run_module(*args, timeout=300, **env):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


@pytest.fixture(scope="module")
def corpus(fake_corpora):
    utterances, _ = load_ravdess(fake_corpora["ravdess"])
    texts, _ = load_goemotions(fake_corpora["goemotions"] / "train.tsv")
    return utterances, texts


def test_feature_cache_means_later_epochs_and_runs_extract_nothing(corpus, tmp_path):
    utterances, texts = corpus
    bank = FeatureBank(ModelConfig(**TINY), tmp_path)
    pairs = LabelMatchedPairing(utterances, texts, seed=0)
    fit(ModelConfig(**TINY), pairs.epoch, pairs.epoch(0)[:4], bank, TrainSettings(epochs=1, progress=False), log=lambda m: None)
    assert bank.cache.misses == len(utterances)
    fit(ModelConfig(**TINY), pairs.epoch, [], bank, TrainSettings(epochs=2, progress=False), log=lambda m: None)
    assert bank.cache.misses == len(utterances)  # nothing extracted again in this run
    fresh = FeatureBank(ModelConfig(**TINY), tmp_path)  # the next run
    for u in utterances:
        fresh.mfcc(u.audio_path)
    assert fresh.cache.misses == 0 and fresh.cache.hits == len(utterances)


def test_an_interrupted_run_resumes_where_it_stopped(corpus, tmp_path):
    utterances, texts = corpus
    bank = FeatureBank(ModelConfig(**TINY), tmp_path / "cache")
    pairs = LabelMatchedPairing(utterances, texts, seed=0, dropout=ModalityDropout(0.2, 0.2))
    dev = pairs.epoch(0)[:8]
    logs = []
    fit(ModelConfig(**TINY), pairs.epoch, dev, bank, TrainSettings(epochs=2, progress=False), tmp_path / "run", logs.append)
    model, info = fit(ModelConfig(**TINY), pairs.epoch, dev, bank, TrainSettings(epochs=3, progress=False), tmp_path / "run", logs.append)
    assert any("resumed" in line and "epoch 2" in line for line in logs)
    assert [h["epoch"] for h in info["history"]] == [0, 1, 2]
    assert model.config.normalizer is not None  # fitted on the training audio, travels with the model


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(corpus, tmp_path):
    """The saved state carries the weight average (EMA) and dropout's random state too: stopping
    after epoch 2 and resuming to 3 gives the very weights and losses of 3 epochs in one go."""
    utterances, texts = corpus
    bank = FeatureBank(ModelConfig(**TINY), tmp_path / "cache")
    pairs = LabelMatchedPairing(utterances, texts, seed=0, dropout=ModalityDropout(0.2, 0.2))
    settings = TrainSettings(epochs=3, progress=False, ema=0.99, time_masks=1, feature_masks=1)
    straight, straight_info = fit(ModelConfig(**TINY), pairs.epoch, [], bank, settings, log=lambda m: None)
    fit(ModelConfig(**TINY), pairs.epoch, [], bank, replace(settings, epochs=2), tmp_path / "run", lambda m: None)
    logs = []
    resumed, resumed_info = fit(ModelConfig(**TINY), pairs.epoch, [], bank, settings, tmp_path / "run", logs.append)
    assert any("resumed" in line for line in logs) and not any("no weight average" in line for line in logs)
    assert [h["loss"] for h in resumed_info["history"]] == [h["loss"] for h in straight_info["history"]]
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_cv_command_writes_labelled_results(fake_corpora, tmp_path):
    command = (
        "train", "cv", "--audio", f"ravdess={fake_corpora['ravdess']}", "--text", str(fake_corpora["goemotions"]),
        "--protocol", "speaker-independent", "--groups", "3", "--seeds", "0", "--max-folds", "1", "--epochs", "2",
        "--drop-text", "0.3", "--drop-audio", "0.3", "--no-progress", "--cache", str(tmp_path / "cache"),
        "--out", str(tmp_path / "cv"), "--set", "n_filters=16", "--set", "audio_kernel_sizes=[3,5]",
        "--baselines", "MFCC stats", "speaker embedding",
    )
    result = run_module(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "cv" / "results.json").read_text())
    rows = results["table1"]
    # Test clips carry their own words (never a label-matched text); the text branch is scored on
    # the text corpus's test sentences; the baselines on the very same fold.
    assert {(r["model"], r["setting"]) for r in rows} == {
        ("MSCNN-SPU-ATT", "audio only"),
        ("MSCNN-SPU-ATT", "audio + the clip's own words"),
        ("MSCNN-SPU-ATT", "the clip's own words only"),
        ("MSCNN-SPU-ATT", "text only (text corpora's test sentences)"),
        ("logistic regression on MFCC stats", "audio only"),
        ("logistic regression on speaker embedding", "audio only"),
    }
    for row in rows:
        assert row["protocol"] == "speaker-independent-3group"
        assert 0 <= row["ua_mean"] <= 1
    assert "speaker-independent-3group" in (tmp_path / "cv" / "results.md").read_text()
    # A run's tables can be rebuilt from the folds it finished (e.g. one stopped early): same rows.
    (tmp_path / "cv" / "results.json").unlink()
    result = run_module("train", "report", "--run", str(tmp_path / "cv"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "cv" / "results.json").read_text())["table1"] == rows
    # Run again, it resumes: the finished fold is scored again but recorded once, and a report
    # counts a fold that an older run's file repeats once too.
    folds_file = tmp_path / "cv" / "MSCNN-SPU-ATT" / "folds.jsonl"
    assert len(folds_file.read_text().splitlines()) == 1
    result = run_module(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(folds_file.read_text().splitlines()) == 1
    folds_file.write_text(folds_file.read_text() * 2)
    result = run_module("train", "report", "--run", str(tmp_path / "cv"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "cv" / "results.json").read_text())["table1"] == rows
    assert {r["n_runs"] for r in rows} == {1}


def test_fit_and_evaluate_commands(fake_corpora, tmp_path):
    out = tmp_path / "checkpoint"
    result = run_module(
        "train", "fit", "--audio", f"ravdess={fake_corpora['ravdess']}", "--text", str(fake_corpora["goemotions"]),
        "--groups", "3", "--epochs", "2", "--no-progress", "--cache", str(tmp_path / "cache"), "--out", str(out),
        "--set", "n_filters=16",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert "cc-by-nc" in (out / "README.md").read_text().lower() or "non-commercial" in (out / "README.md").read_text().lower()
    result = run_module(
        "train", "evaluate", "--checkpoint", str(out), "--corpus", "ravdess", "--data", str(fake_corpora["ravdess"]),
        "--modality", "audio", "--cache", str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["n"] == 24 and scores["modality"] == "audio"
    assert set(scores["recall"]) == {"angry", "happy", "sad", "neutral"}
    assert sum(map(sum, scores["confusion"])) == 24
    assert scores["ua"] == pytest.approx(sum(scores["recall"].values()) / 4)


# Run by torchrun in each process: records which training samples this rank batched (make_batch
# with gradients on; dev scoring runs without), then runs `python -m train` with the given arguments.
DDP_PROBE = """
import json, os, sys
import torch
import train.trainer as trainer
from train.__main__ import main

rank = os.environ["RANK"]
real_make_batch = trainer.make_batch

def recording_make_batch(samples, *args, **kwargs):
    if torch.is_grad_enabled():
        with open(os.path.join(os.environ["PROBE_DIR"], f"rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps([str(s.audio_path) for s in samples]) + "\\n")
    return real_make_batch(samples, *args, **kwargs)

trainer.make_batch = recording_make_batch
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_process_ddp_training(fake_corpora, tmp_path):
    """torchrun with 2 processes (gloo on CPU) trains one model: ranks split the batches, each
    training on its own half of every epoch and together on all of it."""
    out = tmp_path / "ddp"
    probe = tmp_path / "ddp_probe.py"
    probe.write_text(DDP_PROBE)
    (tmp_path / "probe").mkdir()
    epochs, batch_size = 2, 4
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(probe), "fit",
         "--audio", f"ravdess={fake_corpora['ravdess']}", "--text", str(fake_corpora["goemotions"]), "--groups", "3",
         "--epochs", str(epochs), "--batch-size", str(batch_size), "--no-progress", "--cache", str(tmp_path / "cache"),
         "--out", str(out), "--set", "n_filters=16"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PROBE_DIR": str(tmp_path / "probe"), "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = MSCNN_SPU_ATT.from_pretrained(out)
    assert model.config.n_filters == 16
    info = json.loads((out / "training.json").read_text())
    history = info["history"]
    assert len(history) == epochs and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)

    dev_actors = {speaker.split("_")[-1] for speaker in info["dev_speakers"]}
    training_clips = sorted(str(p) for p in Path(fake_corpora["ravdess"]).rglob("*.wav")
                            if p.stem.split("-")[-1] not in dev_actors)
    assert len(training_clips) == 16  # 2 of the 3 actors train, 8 clips each
    batches = {r: [json.loads(line) for line in (tmp_path / "probe" / f"rank{r}.jsonl").read_text().splitlines()]
               for r in (0, 1)}
    per_epoch = len(training_clips) // batch_size // 2  # batches each rank trains on per epoch
    for rank in (0, 1):
        assert len(batches[rank]) == epochs * per_epoch
        assert all(len(b) == batch_size for b in batches[rank])
    for epoch in range(epochs):
        mine = {r: [c for b in batches[r][epoch * per_epoch:(epoch + 1) * per_epoch] for c in b] for r in (0, 1)}
        assert not set(mine[0]) & set(mine[1]), f"epoch {epoch}: both ranks trained on the same clips"
        assert sorted(mine[0] + mine[1]) == training_clips  # together: the whole epoch, once


def test_asr_setting_transcribes_each_clip_once(fake_corpora, tmp_path):
    """--transcripts asr: Whisper's words replace the corpus's own, cached per clip and model."""
    import argparse

    from train.arguments import data_of

    args = argparse.Namespace(audio=[f"ravdess={fake_corpora['ravdess']}"], text=None, calm_as_neutral=False,
                              transcripts="asr", asr_backend=None, asr_model=None, cache=str(tmp_path))
    data = data_of(args)
    heard = [u.transcript.lower() for u in data.utterances]
    # Whisper hears "door" in 19-22 of these 24 espeak clips, varying from run to run: on the
    # extreme prosody styles its greedy text fails the fallback checks and it samples at a higher
    # temperature, from a CTranslate2 generator seeded once per thread. Two thirds is the margin.
    assert len(heard) == 24 and sum("door" in t for t in heard) >= 16
    assert any("ASR" in line for line in data.reports)
    cache = tmp_path / "transcripts" / "transcripts.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 24
    assert sorted(json.loads(line)["text"] for line in lines) == sorted(u.transcript for u in data.utterances)
    again = data_of(args)
    assert [u.transcript for u in again.utterances] == [u.transcript for u in data.utterances]
    assert cache.read_text().splitlines() == lines  # nothing transcribed twice


def test_own_or_asr_transcripts_transcribe_only_clips_without_words(fake_corpora, tmp_path):
    """--transcripts own+asr: RAVDESS keeps its scripts; a corpus with no transcripts (SAVEE
    layout here) gets Whisper's words, and only its clips are transcribed."""
    import argparse
    import shutil

    from train.arguments import data_of

    savee = tmp_path / "savee"
    savee.mkdir()
    clips = sorted(fake_corpora["ravdess"].glob("Actor_01/*.wav"))
    for code, clip in zip(("a01", "h01", "sa01", "n01"), clips[::2]):
        shutil.copy(clip, savee / f"DC_{code}.wav")
    args = argparse.Namespace(audio=[f"ravdess={fake_corpora['ravdess']}", f"savee={savee}"], text=None,
                              calm_as_neutral=False, transcripts="own+asr", asr_backend=None, asr_model=None,
                              cache=str(tmp_path / "cache"))
    data = data_of(args)
    own = [u for u in data.utterances if u.corpus == "ravdess"]
    heard = [u for u in data.utterances if u.corpus == "savee"]
    assert len(own) == 24 and {u.transcript for u in own} == {"Kids are talking by the door", "Dogs are sitting by the door"}
    assert len(heard) == 4 and all("door" in u.transcript.lower() for u in heard)
    assert any("ASR" in line and "4 clips" in line for line in data.reports)
    assert len((tmp_path / "cache" / "transcripts" / "transcripts.jsonl").read_text().splitlines()) == 4


def test_training_with_the_speaker_embedding(corpus, tmp_path_factory, tmp_path):
    """use_speaker: x-vectors of every clip (cached like the MFCCs) feed the model; missing audio
    gets the zero vector, as at inference."""
    from ser_demo.speaker import SpeakerEmbedder
    from tests.test_speaker import save_random_xvector

    folder = save_random_xvector(tmp_path_factory.mktemp("speaker") / "xvector")
    embedder = SpeakerEmbedder.from_pretrained(str(folder))
    utterances, texts = corpus
    config = ModelConfig(**TINY, use_speaker=True, n_speaker_features=embedder.dim, speaker_model=str(folder))
    bank = FeatureBank(config, tmp_path, speaker_embedder=embedder)
    pairs = LabelMatchedPairing(utterances, texts, seed=0, dropout=ModalityDropout(0.0, 0.3))
    model, info = fit(config, pairs.epoch, pairs.epoch(0)[:8], bank, TrainSettings(epochs=1, progress=False),
                      log=lambda m: None)
    assert len(info["history"]) == 1 and model.config.use_speaker
    voice = bank.speaker(utterances[0].audio_path)
    assert voice.shape == (embedder.dim,) and np.abs(voice).sum() > 0
    np.testing.assert_allclose(voice, embedder.embed(load_clip(utterances[0].audio_path)), rtol=1e-5, atol=1e-6)

    # no audio: a clip without speech, and a sample whose audio was dropped, both get zeros
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.warns(UserWarning, match="without audio"):
        assert (bank.speaker(silent) == 0).all() and bank.speaker(silent).shape == (embedder.dim,)
    with_audio = next(s for s in pairs.epoch(0) if s.audio_path == utterances[0].audio_path)
    without_audio = replace(with_audio, audio_path=None)
    batch = make_batch([with_audio, without_audio], bank, model.config, Normalizer.from_config(model.config))
    assert batch["speaker"].shape == (2, embedder.dim)
    np.testing.assert_allclose(batch["speaker"][0].numpy(), voice, rtol=1e-6)
    assert (batch["speaker"][1] == 0).all() and batch["audio_lengths"].tolist()[1] == 0


def test_words_that_carry_no_label_are_asked_to_leave_the_voice_alone(corpus, tmp_path):
    """--consistency: on samples whose words say nothing of the class (own script, neutral
    sentence), KL(p(audio alone) || p(audio + words)) joins the loss, summed over those samples and
    divided by the batch; label-carrying texts and samples without words add nothing."""
    from train.consistency import words_consistency

    utterances, texts = corpus
    config = ModelConfig(**TINY)
    bank = FeatureBank(config, tmp_path)
    pairs = LabelMatchedPairing(utterances, texts, seed=0)
    matched = pairs.epoch(0)[:2]
    scripts = [replace(s, text=utterances[i].transcript, text_carries_label=False) for i, s in enumerate(pairs.epoch(0)[2:5])]
    no_words = replace(scripts[0], text="")
    chunk = matched + scripts + [no_words]
    normalizer = Normalizer.fit([bank.mfcc(u.audio_path) for u in utterances])
    config = replace(config, normalizer=normalizer.to_dict())
    model = MSCNN_SPU_ATT(config).eval()
    inputs = make_batch(chunk, bank, config, normalizer)
    out = model(**inputs)
    term = words_consistency(model, inputs, out, chunk)
    assert not model.training  # the mode it was called in

    alone = model(**make_batch([replace(s, text="") for s in scripts], bank, config, normalizer)).logits.log_softmax(-1)
    fused = out.logits[2:5].log_softmax(-1)
    expected = (alone.exp() * (alone - fused)).sum() / len(chunk)
    torch.testing.assert_close(term, expected, rtol=1e-4, atol=1e-6)
    assert term > 0
    term.backward()  # the gradient reaches the text branch: the words learn to say nothing
    assert model.text_cnn.convs[0].weight.grad.abs().sum() > 0
    assert model.audio_cnn.convs[0].weight.grad.abs().sum() > 0  # and the voice
    assert words_consistency(model, inputs, out, matched + [no_words] * 5) == 0

    # sparing the voice: the same value, but only the words and the layers after the fusion learn;
    # "words": only what the answer from the voice alone does not depend on learns
    audio_grad = lambda: model.audio_cnn.convs[0].weight.grad  # noqa: E731
    for trains, classifier_learns in (("fusion", True), ("words", False)):
        model.zero_grad(set_to_none=True)
        out = model(**inputs)
        spared = words_consistency(model, inputs, out, chunk, trains=trains)
        torch.testing.assert_close(spared, expected, rtol=1e-4, atol=1e-6)
        spared.backward()
        assert model.text_cnn.convs[0].weight.grad.abs().sum() > 0, trains
        assert next(model.attention.parameters()).grad.abs().sum() > 0, trains
        assert audio_grad() is None or audio_grad().abs().sum() == 0, trains
        first, last = model.classifier[1].weight.grad, model.classifier[4].weight.grad
        n_voice = out.audio_statistics[0].numel()  # the fused vector starts with the voice
        assert first[:, n_voice:].abs().sum() > 0, trains  # the columns of the word features learn
        assert (first[:, :n_voice].abs().sum() > 0) == classifier_learns, trains
        assert (last is not None and last.abs().sum() > 0) == classifier_learns, trains
    # what "words" promises: a step on the term changes the answer with the words, not without them
    silent = make_batch([replace(s, text="") for s in chunk], bank, config, normalizer)
    before, fused_before = model(**silent).logits.detach(), model(**inputs).logits.detach()
    model.zero_grad(set_to_none=True)
    words_consistency(model, inputs, model(**inputs), chunk, trains="words").backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    torch.testing.assert_close(model(**silent).logits, before)
    assert not torch.allclose(model(**inputs).logits, fused_before)
    with pytest.raises(ValueError, match="trains must be one of"):
        words_consistency(model, inputs, out, chunk, trains="voice")

    with_scripts = LabelMatchedPairing(utterances, texts, seed=0, own_words=0.5)
    assert not all(s.text_carries_label for s in with_scripts.epoch(0))
    model, info = fit(config, with_scripts.epoch, pairs.epoch(0)[:4], bank,
                      TrainSettings(epochs=1, progress=False, consistency=1.0), log=lambda m: None)
    assert len(info["history"]) == 1


def test_consistency_options_reach_the_settings():
    """--consistency-trains picks what the term trains; --consistency-spares-voice, the name the
    README's recipe table uses, is the same as --consistency-trains fusion."""
    import argparse

    from train.arguments import model_arguments, settings_of

    parser = argparse.ArgumentParser()
    model_arguments(parser)
    def trains(*argv):
        return settings_of(parser.parse_args(["--consistency", "3", *argv])).consistency_trains
    assert trains() == "all"
    assert trains("--consistency-spares-voice") == "fusion"
    assert trains("--consistency-trains", "words") == "words"
    with pytest.raises(SystemExit):
        parser.parse_args(["--consistency-trains", "voice"])


def test_set_switches_parse_booleans_and_ablation_rows_win():
    import argparse

    from train.arguments import model_config

    args = argparse.Namespace(set=["use_swem=False", "n_filters=16", "use_attention=true"], text=None, audio=[])
    config = model_config(args)
    assert config.use_swem is False and config.n_filters == 16 and config.use_attention is True
    assert model_config(args, use_attention=False).use_attention is False  # the row's switch wins
    with pytest.raises(SystemExit, match="true or false"):
        model_config(argparse.Namespace(set=["use_swem=nope"], text=None, audio=[]))


def test_weight_averaging_warms_up_instead_of_clinging_to_the_initial_weights():
    """With decay 0.99, ten steps of plain EMA would keep 90 % of the random start; the warm-up
    (decay min(0.99, (1 + n) / (10 + n))) follows the training weights while they move fast."""
    from train.trainer import ema_update

    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    averaged = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_update(0.99))
    for _ in range(10):
        with torch.no_grad():
            model.weight.add_(1.0)  # the training weights walk from 0 to 10
        averaged.update_parameters(model)
    value = averaged.module.weight[0, 0].item()
    assert 6.0 < value < 10.0  # plain EMA would sit near 0.99**10 * 1 + ... ~ 0.5
    settled = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_update(0.99))
    for _ in range(3):
        settled.update_parameters(model)  # weights that no longer move: the average is them
    torch.testing.assert_close(settled.module.weight, model.weight)


def one_speaker_per_split(corpus):
    """The test corpus as one fold: speaker 01 trains, 02 is dev, 03 is tested."""
    from train.experiment import Data
    from train.protocol import Fold

    utterances, texts = corpus
    index = {"train": [], "dev": [], "test": []}
    for i, u in enumerate(utterances):
        index[{"ravdess_01": "train", "ravdess_02": "dev", "ravdess_03": "test"}[u.speaker]].append(i)
    fold = Fold("test-split", 0, 0, tuple(index["train"]), tuple(index["dev"]), tuple(index["test"]))
    return Data(utterances, {"train": texts, "dev": texts, "test": texts}), fold, index


def test_the_normaliser_is_fitted_on_every_training_clip_and_nothing_else(corpus, tmp_path):
    """run_fold: mean/std come from the fold's training clips, all of them (also those whose audio
    modality dropout removed in epoch 0), never from the dev or test speakers."""
    from train.experiment import run_fold

    utterances, texts = corpus
    data, fold, index = one_speaker_per_split(corpus)
    config = ModelConfig(**TINY)
    bank = FeatureBank(config, tmp_path)
    dropout = ModalityDropout(0.0, 0.5)
    model, _, _ = run_fold(data, fold, config, TrainSettings(epochs=1, progress=False), bank, dropout, ["both"],
                           log=lambda m: None)

    train_clips = [utterances[i].audio_path for i in index["train"]]
    epoch0 = LabelMatchedPairing([utterances[i] for i in index["train"]], texts, seed=0, dropout=dropout).epoch(0)
    assert len({s.audio_path for s in epoch0 if s.audio_path}) < len(train_clips)  # dropout thinned epoch 0
    fitted = Normalizer.from_dict(model.config.normalizer)
    expected = Normalizer.fit([bank.mfcc(p) for p in sorted(train_clips)])
    np.testing.assert_allclose(fitted.mean, expected.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fitted.std, expected.std, rtol=1e-5, atol=1e-5)
    everyone = Normalizer.fit([bank.mfcc(u.audio_path) for u in utterances])
    assert np.abs(fitted.mean - everyone.mean).max() > 1e-3  # the check above can tell them apart


def test_another_init_seed_trains_the_same_fold_to_other_weights(corpus, tmp_path):
    """--init-seed: the same fold and seed give the same weights twice (what makes a second
    initialisation a measure of training noise), another init seed other weights, tested on the
    very same clips."""
    from train.experiment import run_fold

    data, fold, _ = one_speaker_per_split(corpus)
    bank = FeatureBank(ModelConfig(**TINY), tmp_path)

    def trained(init_seed):
        settings = TrainSettings(epochs=1, progress=False, seed=init_seed)
        model, scores, _ = run_fold(data, fold, ModelConfig(**TINY), settings, bank, ModalityDropout(0.0, 0.5),
                                    ["audio"], log=lambda m: None)
        return model.state_dict(), scores

    first, first_scores = trained(0)
    again, _ = trained(0)
    other, other_scores = trained(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())
    assert first_scores.keys() == other_scores.keys()


def script_dev_scores(monkeypatch, scores) -> list[dict]:
    """Replace the trainer's dev scoring by these scores, one per call; returns the list that
    collects the weights each call scored."""
    import train.trainer as trainer

    scores, weights_at = iter(scores), []

    def scripted_dev_metrics(model, samples, bank, normalizer):
        weights_at.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        score = next(scores)
        return {"wa": score, "ua": score}

    monkeypatch.setattr(trainer, "dev_metrics", scripted_dev_metrics)
    return weights_at


def test_the_weights_of_the_best_dev_epoch_are_kept(corpus, tmp_path, monkeypatch):
    """Dev scores are scripted (epoch 1 best): fit must return epoch 1's weights, not the last
    epoch's, and report epoch 1's score; the weights really differ between epochs."""
    utterances, texts = corpus
    weights_at = script_dev_scores(monkeypatch, [0.30, 0.80, 0.50, 0.10])
    pairs = LabelMatchedPairing(utterances, texts, seed=0)
    model, info = fit(ModelConfig(**TINY), pairs.epoch, pairs.epoch(0)[:8], FeatureBank(ModelConfig(**TINY), tmp_path),
                      TrainSettings(epochs=4, batch_size=8, progress=False), log=lambda m: None)
    assert len(weights_at) == 4 and info["best_dev"] == pytest.approx(0.80)
    assert [h["ua"] for h in info["history"]] == pytest.approx([0.30, 0.80, 0.50, 0.10])
    kept = model.state_dict()
    for name, value in weights_at[1].items():
        torch.testing.assert_close(kept[name], value, msg=f"{name} is not epoch 1's")
    changed = [n for n, v in weights_at[3].items() if v.is_floating_point() and not torch.equal(v, weights_at[1][n])]
    assert changed, "training did not change the weights after epoch 1: the check above proves nothing"


def test_weight_averaging_keeps_the_mean_of_the_last_epochs(corpus, tmp_path, monkeypatch):
    """--average-from 3 of 4 epochs: the kept weights are the mean of epochs 3 and 4's (whatever
    their dev scores), and the reported dev score is the average's own; a run resumed after epoch
    3 goes on averaging from where it stopped."""
    utterances, texts = corpus
    weights_at = script_dev_scores(monkeypatch, [0.30, 0.90, 0.50, 0.10, 0.70, 0.30, 0.90, 0.50, 0.10, 0.70, 0.1, 0.2])
    pairs = LabelMatchedPairing(utterances, texts, seed=0)
    bank = FeatureBank(ModelConfig(**TINY), tmp_path / "cache")
    settings = TrainSettings(epochs=4, batch_size=8, progress=False, average_from=3)
    model, info = fit(ModelConfig(**TINY), pairs.epoch, pairs.epoch(0)[:8], bank, settings, log=lambda m: None)
    assert info["n_averaged"] == 2 and info["best_dev"] == pytest.approx(0.70)  # the 5th score: the average's
    kept = model.state_dict()
    for name, value in kept.items():
        torch.testing.assert_close(value, (weights_at[2][name] + weights_at[3][name]) / 2, msg=name)
    assert not torch.equal(weights_at[2]["classifier.1.weight"], weights_at[3]["classifier.1.weight"])

    weights_at.clear()
    fit(ModelConfig(**TINY), pairs.epoch, pairs.epoch(0)[:8], bank, replace(settings, epochs=3), tmp_path / "run", lambda m: None)
    resumed, info = fit(ModelConfig(**TINY), pairs.epoch, pairs.epoch(0)[:8], bank, settings, tmp_path / "run", lambda m: None)
    assert info["n_averaged"] == 2 and len(weights_at) == 6  # 3 epochs + the average; 1 epoch + the average
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, (weights_at[2][name] + weights_at[4][name]) / 2, msg=f"resumed {name}")
    with pytest.raises(ValueError, match="average_from"):
        TrainSettings(epochs=4, average_from=5)


def test_the_learning_rate_is_constant_then_falls_linearly(corpus, tmp_path):
    """--decay-from 3 of 5 epochs: 1, 1, then 3/4, 2/4, 1/4 of --lr, as the optimizer used them."""
    from train.trainer import learning_rate_at

    settings = TrainSettings(epochs=5, batch_size=8, progress=False, learning_rate=1e-3, decay_from=3)
    assert [learning_rate_at(e, settings) for e in range(5)] == pytest.approx([1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert {learning_rate_at(e, TrainSettings(epochs=5)) for e in range(5)} == {5e-4}  # the paper's: constant
    utterances, texts = corpus
    pairs = LabelMatchedPairing(utterances, texts, seed=0)
    _, info = fit(ModelConfig(**TINY), pairs.epoch, [], FeatureBank(ModelConfig(**TINY), tmp_path), settings, log=lambda m: None)
    assert [h["lr"] for h in info["history"]] == pytest.approx([1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4])
    for bad in (0, 6):
        with pytest.raises(ValueError, match="decay_from"):
            TrainSettings(epochs=5, decay_from=bad)


def test_a_speaker_cap_draws_at_most_n_clips_per_voice_each_epoch(corpus, tmp_path, monkeypatch):
    """--speaker-cap 2: each epoch at most 2 clips of every speaker (another draw each epoch), texts
    alone all kept; the loop trains on exactly those."""
    import random

    from train.trainer import cap_per_speaker

    utterances, texts = corpus
    pairs = LabelMatchedPairing(utterances, texts, seed=0, extra_texts=5)
    samples = pairs.epoch(0)
    speakers = {s.speaker for s in samples if s.speaker}
    assert len(speakers) >= 2 and max(sum(s.speaker == v for s in samples) for v in speakers) > 2
    draws = [cap_per_speaker(samples, 2, random.Random(f"cap:0:{e}")) for e in range(3)]
    for capped in draws:
        assert {v: sum(s.speaker == v for s in capped) for v in speakers} == {v: 2 for v in speakers}
        assert sum(not s.speaker for s in capped) == 5  # the texts alone
    assert len({tuple(s.utterance_id for s in d if s.speaker) for d in draws}) > 1  # a new draw each epoch
    assert cap_per_speaker(samples, None, random.Random(0)) == samples
    import train.trainer as trainer

    trained_on = []
    real_make_batch = trainer.make_batch
    monkeypatch.setattr(trainer, "make_batch", lambda chunk, *a, **k: (trained_on.extend(chunk), real_make_batch(chunk, *a, **k))[1])
    settings = TrainSettings(epochs=1, batch_size=4, progress=False, speaker_cap=2)
    fit(ModelConfig(**TINY), lambda e: samples, [], FeatureBank(ModelConfig(**TINY), tmp_path), settings, log=lambda m: None)
    assert len(trained_on) == 2 * len(speakers) + 5
    assert {v: sum(s.speaker == v for s in trained_on) for v in speakers} == {v: 2 for v in speakers}
    with pytest.raises(ValueError, match="speaker_cap"):
        TrainSettings(speaker_cap=0)


def test_a_baseline_refitted_on_the_dev_speakers_hears_their_classes():
    """`refit_on_dev` (cv --no-dev): the penalty is chosen on dev, then dev joins training. A class
    that only the dev clips show is then predicted; without the refit it cannot be."""
    from types import SimpleNamespace

    from train.baselines import baseline_predictions

    class SpeakerVectors:  # the one FeatureBank method the speaker-embedding baseline reads
        def __init__(self):
            self.vectors = {}

        def speaker(self, path):
            return self.vectors[path]

    bank, labels, rng = SpeakerVectors(), ["angry", "happy", "sad", "neutral"], np.random.default_rng(0)
    centres = {label: 4 * np.eye(8, dtype=np.float32)[i] for i, label in enumerate(labels)}

    def clips(split, classes, n=12):
        made = []
        for label in classes:
            for i in range(n):
                path = f"{split}/{label}/{i}.wav"
                bank.vectors[path] = centres[label] + rng.normal(0, 0.3, 8).astype(np.float32)
                made.append(SimpleNamespace(audio_path=path, label=label))
        return made

    train, dev, test = clips("train", labels[:3]), clips("dev", labels), clips("test", ["neutral"])
    logs = []
    plain = baseline_predictions("speaker embedding", bank, labels, train, dev, test, logs.append)
    refitted = baseline_predictions("speaker embedding", bank, labels, train, dev, test, logs.append, refit_on_dev=True)
    assert "neutral" not in plain
    assert refitted.count("neutral") == len(test)
    assert logs[-1] == "  baseline speaker embedding: refitted on train + dev (84 clips)"


def test_a_state_saved_before_states_kept_the_average_still_resumes(corpus, tmp_path):
    """Run folders written by the trainer before the EMA was saved resume too, and say the
    average restarts."""
    from safetensors.torch import load_file, save_file

    utterances, texts = corpus
    bank = FeatureBank(ModelConfig(**TINY), tmp_path / "cache")
    pairs = LabelMatchedPairing(utterances, texts, seed=0)
    settings = TrainSettings(epochs=1, progress=False, ema=0.99)
    fit(ModelConfig(**TINY), pairs.epoch, [], bank, settings, tmp_path / "run", lambda m: None)
    state = tmp_path / "run" / "state.safetensors"
    old = {k: v for k, v in load_file(str(state)).items() if not k.startswith(("ema.", "rng."))}
    save_file(old, str(state))
    logs = []
    _, info = fit(ModelConfig(**TINY), pairs.epoch, [], bank, replace(settings, epochs=2), tmp_path / "run", logs.append)
    assert [h["epoch"] for h in info["history"]] == [0, 1]
    assert any("no weight average" in line and "restart" in line for line in logs)
