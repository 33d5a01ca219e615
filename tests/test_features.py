"""MFCC features and GloVe text encoding on real inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ser_demo.audio import FeatureParams, Normalizer, mfcc_features, num_frames
from ser_demo.text import DEFAULT_EMBEDDINGS, load_glove_text, load_word_vectors, tokenize


def test_mfcc_shape_and_parameters_on_real_speech(speech):
    params = FeatureParams()
    assert (params.n_mfcc, params.win_length, params.hop_length, params.window) == (32, 400, 160, "hamming")
    features = mfcc_features(speech)
    assert features.dtype == np.float32
    assert features.shape == (96, 1 + len(speech) // 160) == (96, num_frames(len(speech)))
    assert np.isfinite(features).all()
    # delta rows are derivatives of the MFCC rows: far smaller spread than the MFCCs themselves
    assert features[32:64].std() < features[:32].std()
    # speech varies over time: the first cepstral coefficient (energy) is not constant
    assert features[0].std() > 1.0


def test_mfcc_of_short_and_empty_audio():
    assert mfcc_features(np.zeros(0, np.float32)).shape == (96, 0)
    short = mfcc_features(np.random.default_rng(0).normal(size=800).astype(np.float32) * 0.1)
    assert short.shape == (96, 6) and np.isfinite(short).all()


def test_normalizer_standardises_training_frames(speech):
    features = mfcc_features(speech)
    norm = Normalizer.fit([features[:, :200], features[:, 200:]])
    normalised = norm(features)
    np.testing.assert_allclose(normalised.mean(1), 0, atol=1e-3)
    np.testing.assert_allclose(normalised.std(1), 1, atol=1e-3)
    assert Normalizer.from_dict(norm.to_dict()).mean.tolist() == norm.mean.tolist()


def test_tokenize_follows_glove_conventions():
    assert tokenize("Don't SHOUT at me!! It's 5.30...") == ["do", "n't", "shout", "at", "me", "!", "!", "it", "'s", "5.30"]
    assert tokenize("") == [] and tokenize(None) == []
    assert tokenize("\u201cI\u2019m fine\u201d") == ["i", "'m", "fine"]


def test_default_vectors_are_real_glove():
    vectors = load_word_vectors(DEFAULT_EMBEDDINGS)
    assert len(vectors) == 400_000 and vectors.dim == 50
    # the table is GloVe 6B 50-d itself: "the" is its first row, with the published values
    np.testing.assert_allclose(vectors.encode("the").vectors[0][:4], [0.418, 0.24968, -0.41242, 0.1217], atol=1e-6)
    tokens = vectors.encode("happy joyful sad awful table")
    assert all(tokens.known)
    similarity = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    happy, joyful, sad, awful, table = tokens.vectors
    # each word gets its own row: related words are close, an unrelated word is far
    assert similarity(happy, joyful) > 0.5 and similarity(sad, awful) > 0.7
    assert similarity(sad, table) < 0.5 and similarity(joyful, table) < 0.5


def test_unknown_words_and_empty_transcripts():
    vectors = load_word_vectors()
    tokens = vectors.encode("hello qwzxkvj")
    assert tokens.known == [True, False] and tokens.unknown_words == ["qwzxkvj"]
    assert (tokens.vectors[1] == 0).all()
    empty = vectors.encode("")
    assert empty.words == [] and empty.vectors.shape == (0, 50)


def test_any_glove_text_file_loads(tmp_path):
    path = tmp_path / "glove.tiny.3d.txt"
    path.write_text("the 0.1 0.2 0.3\nsad -1 0 1.5\nat&t corp 1 2 3\n")  # 840B has words with spaces
    vectors = load_glove_text(path)
    assert vectors.dim == 3 and len(vectors) == 3 and "at&t corp" in vectors
    np.testing.assert_allclose(vectors.encode("Sad").vectors[0], [-1, 0, 1.5])
    assert load_word_vectors(str(path)).source == str(path)
    with pytest.raises(FileNotFoundError, match="GloVe text file"):
        load_word_vectors(str(tmp_path / "missing.txt"))


def test_glove_text_file_max_words_keeps_the_first_words(tmp_path):
    """max_words reads only the head of a big file (GloVe files are sorted by frequency); a
    "count dim" header line (word2vec-style files) is skipped and counts as no word."""
    path = tmp_path / "glove.header.2d.txt"
    path.write_text("5 2\nthe 1 0\nof 0 1\nand 1 1\nto 2 2\na 3 3\n")
    two = load_glove_text(path, max_words=2)
    assert len(two) == 2 and two.dim == 2 and list(two.index) == ["the", "of"]
    assert "and" not in two and (two.encode("and").vectors == 0).all()
    np.testing.assert_allclose(two.encode("of the").vectors, [[0, 1], [1, 0]])
    assert len(load_glove_text(path)) == 5 and len(load_glove_text(path, max_words=99)) == 5
