"""`python -m train layer-probes`: a linear probe per layer of Whisper's encoder on the folds `cv`
deals, on real clips (two small manifests of RAVDESS actors and SAVEE speakers)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from test_trainer import run_module
from train.audio_corpora import load_ravdess, load_savee
from train.layer_probes import layer_names, layer_statistics, together_rows


def manifest(path, utterances, speakers, per_class=2):
    """A CSV of `per_class` clips per class of each speaker: a corpus named after the file."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["audio_path", "transcript", "label", "speaker"])
        for speaker in speakers:
            for label in ("angry", "happy", "sad", "neutral"):
                for u in [u for u in utterances if u.speaker == speaker and u.label == label][:per_class]:
                    writer.writerow([u.audio_path, u.transcript or "", u.label, u.speaker])
    return path


def test_layer_statistics_are_mean_and_std_per_layer():
    layers = [np.arange(12, dtype=np.float32).reshape(2, 6), np.ones((2, 6), np.float32)]
    stats = layer_statistics(layers)
    assert stats.shape == (2, 4)
    np.testing.assert_allclose(stats[0], [2.5, 8.5, np.std(np.arange(6)), np.std(np.arange(6))])
    np.testing.assert_allclose(stats[1], [1, 1, 0, 0])
    assert layer_names(4) == ["convolutions", "block 1", "block 2", "block 3", "block 4", "output (layer norm)"]


def test_layers_probed_together_sit_side_by_side():
    x = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)  # clips, layers, statistics
    [(name, together)] = together_rows(x, layer_names(4), ["2+3"])
    assert name == "block 2 + block 3"
    np.testing.assert_array_equal(together, np.concatenate([x[:, 2], x[:, 3]], axis=1))
    for wrong in ("2", "2+2", "2+9", "-1+2"):
        with pytest.raises(ValueError, match="--together"):
            together_rows(x, layer_names(4), [wrong])


@pytest.mark.shared_data("ravdess", "savee")
def test_layer_probes_score_every_layer_on_both_protocols(shared_data, tmp_path):
    ravdess, _ = load_ravdess(shared_data / "ravdess")
    savee, _ = load_savee(shared_data / "savee")
    args = ["--audio", f"manifest={manifest(tmp_path / 'ravdess.csv', ravdess, ['ravdess_01', 'ravdess_02', 'ravdess_03', 'ravdess_04'])}",
            "--audio", f"manifest={manifest(tmp_path / 'savee.csv', savee, ['savee_DC', 'savee_JE', 'savee_JK'])}",
            "--groups", "3", "--seeds", "0", "--together", "2+3", "--penalties", "0.1", "--cache", str(tmp_path / "cache"), "--no-progress"]
    result = run_module("train", "layer-probes", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "layer-probes.json").read_text())
    assert results["clips"] == 56 and results["context"] == "clip"
    protocols = results["protocols"]
    assert len(protocols) == 2 and any(p.startswith("leave-one-corpus-out") for p in protocols)
    for protocol, rows in protocols.items():
        assert [r["layer"] for r in rows] == layer_names(4) + ["block 2 + block 3"]
        for row in rows:
            assert set(row["ua"]) == {"all", "ravdess", "savee"} and all(0 <= v <= 100 for v in row["ua"].values())
    assert protocols[next(p for p in protocols if p.startswith("leave-one"))][0]["folds"] == 2
    assert "| block 2 | 0.1 |" in (tmp_path / "out" / "layer-probes.md").read_text()
    # the statistics are cached: a second run reads them (the same answers, no encoder pass needed)
    again = run_module("train", "layer-probes", *args, "--out", str(tmp_path / "again"))
    assert again.returncode == 0 and json.loads((tmp_path / "again" / "layer-probes.json").read_text()) == results
