"""The feature bank: per audio file, MFCCs, Whisper encoder states and speaker embeddings, cached
on disk by content; per text, word vectors. Clips are read exactly as the recognizer reads them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ser_demo.audio import FeatureParams, mfcc_features
from ser_demo.ingest import AudioInputError, load_audio
from ser_demo.model import ModelConfig
from ser_demo.text import WordVectors, load_word_vectors
from train.augment import Variant
from train.cache import FeatureCache


# Part of every cache key: bump it when the way clips are read changes.
INGEST = "trim+peak-v1"


def load_clip(path: Path) -> Optional[np.ndarray]:
    """The audio exactly as the recognizer reads it at inference: 16 kHz mono, edges trimmed,
    peak-normalised. A clip with no speech in it is None: a sample without audio."""
    try:
        return load_audio(path, max_seconds=None, min_seconds=0.0, trim_silence=True)
    except AudioInputError as err:
        warnings.warn(f"{path}: {err} Used as a sample without audio.")
        return None


class FeatureBank:
    """Per audio file: raw MFCC matrices, Whisper encoder states and speaker embeddings (cached
    on disk by content); per text: word vectors. Built from a model config, so features always
    match what it will see."""

    def __init__(self, config: ModelConfig, cache_dir: Path, word_vectors: Optional[WordVectors] = None,
                 speaker_embedder=None, encoder=None):
        self.params = FeatureParams(**config.feature_params)
        if config.use_text and word_vectors is None:
            word_vectors = load_word_vectors(config.embeddings)
        self.word_vectors = word_vectors
        # The speaker model and the Whisper encoder load on first use (the baselines use them
        # even when the model does not); a checkpoint's encoder is checked when it loads.
        self._speaker_embedder, self._encoder = speaker_embedder, encoder
        self.config, self.encoder_spec = config, config.encoder
        if encoder is not None:
            encoder.check(config.encoder)
        self.cache = FeatureCache(cache_dir)
        self._memo: dict[tuple[str, Path, Optional[Variant]], np.ndarray] = {}
        self._words: dict[str, np.ndarray] = {}
        # what the cached matrices depend on besides the audio: the features and the ingestion
        self._key = {**self.params.to_dict(), "ingest": INGEST}

    @property
    def speaker_embedder(self):
        if self._speaker_embedder is None:
            from ser_demo.speaker import for_checkpoint

            self._speaker_embedder = for_checkpoint(self.config)
        return self._speaker_embedder

    @property
    def encoder(self):
        if self._encoder is None:
            from ser_demo.encoder import COMPUTE_TYPE, WhisperEncoder

            self._encoder = WhisperEncoder.load(compute_type=(self.encoder_spec or {}).get("compute_type", COMPUTE_TYPE),
                                                context=self.config.encoder_context, layer=self.config.encoder_layer)
            self._encoder.check(self.encoder_spec)
        return self._encoder

    def _cached(self, kind: str, path: Path, key: dict, compute: Callable[[np.ndarray], np.ndarray],
                empty: np.ndarray, variant: Optional[Variant] = None) -> np.ndarray:
        """Features of one clip (or of its augmented `variant`), from memory, the disk cache, or
        `compute(audio)`; `empty` for a clip with no speech in it (a sample without audio)."""
        if (kind, path, variant) not in self._memo:
            def from_audio(p: Path) -> np.ndarray:
                audio = load_clip(p)
                if audio is None:
                    return empty
                return compute(audio if variant is None else variant.apply(audio, p))

            if variant is not None:
                key = {**key, "variant": variant.key()}
            self._memo[kind, path, variant] = self.cache.get_or_compute(path, key, from_audio)
        return self._memo[kind, path, variant]

    def mfcc(self, path: Path, variant: Optional[Variant] = None) -> np.ndarray:
        return self._cached("mfcc", path, self._key, lambda a: mfcc_features(a, self.params),
                            np.zeros((self.params.n_features, 0), np.float32), variant)

    def encoder_states(self, path: Path, variant: Optional[Variant] = None) -> np.ndarray:
        """(384, states) of the clip, from the encoder the config names."""
        key = {"encoder": self.encoder.spec(), "ingest": INGEST}
        return self._cached("encoder", path, key, lambda a: self.encoder.encode(a).states,
                            np.zeros((self.encoder.dim, 0), np.float32), variant)

    def speaker(self, path: Path, variant: Optional[Variant] = None) -> np.ndarray:
        key = {"speaker_model": str(self.speaker_embedder.source), "ingest": INGEST}
        return self._cached("speaker", path, key, self.speaker_embedder.embed,
                            np.zeros(self.speaker_embedder.dim, np.float32), variant)

    def words(self, text: str) -> np.ndarray:
        if text not in self._words:
            self._words[text] = self.word_vectors.encode(text).vectors
        return self._words[text]
