"""Speaker embeddings (x-vectors) for the optional speaker input of the audio branch.

A thin wrapper around speechbrain's `EncoderClassifier`, loaded from a local folder or a Hub id
laid out like `speechbrain/spkrec-xvect-voxceleb`: hyperparams.yaml (Fbank -> sentence mean
normalisation -> Xvector) plus the checkpoint files its pretrainer names
(embedding_model.ckpt, mean_var_norm_emb.ckpt, classifier.ckpt, label_encoder.txt).

    embedder = SpeakerEmbedder.from_pretrained()        # SER_SPEAKER_MODEL or the Hub x-vector
    embedder.embed(audio)                               # float32 16 kHz mono -> (512,) float32

Each source is loaded once per process; `embed` is safe to call from several threads.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE

DEFAULT_MODEL = "speechbrain/spkrec-xvect-voxceleb"
MODEL_ENV = "SER_SPEAKER_MODEL"
# The x-vector's dilated TDNN needs a few frames; shorter clips are tiled up to this length.
MIN_SECONDS = 0.1

_cache: dict[str, "SpeakerEmbedder"] = {}
_lock = threading.Lock()


class SpeakerEmbeddingUnavailable(RuntimeError):
    """The x-vector model could not be loaded; str() says why, on one line."""

    def __init__(self, reason: str):
        super().__init__(f"speaker embedding unavailable: {reason}")


def default_savedir(source: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ser_demo" / "speaker" / re.sub(r"[^\w.-]+", "--", source).strip("-")


def _local_folder(source: str) -> Path | None:
    """The folder `source` names, None for a Hub id; raises when it names a missing folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    # Hub ids are "name" or "owner/name"; anything else was meant as a path.
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source:
        raise SpeakerEmbeddingUnavailable(f"no such folder: {source}")
    return None


def _one_line(error: BaseException) -> str:
    if type(error).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return "not in the local cache and the Hub cannot be reached"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class SpeakerEmbedder:
    def __init__(self, encoder, source: str):
        self.encoder = encoder.eval()
        self.source = source
        _remove_pooling_noise(self.encoder)
        # The width is whatever the checkpoint produces (512 for the x-vector, 192 for ECAPA).
        self.dim = int(self._encode(np.zeros(0, np.float32)).shape[0])

    @classmethod
    def from_pretrained(cls, source: str | None = None, savedir: str | None = None) -> "SpeakerEmbedder":
        """Load (once per process) a speechbrain speaker encoder from a local folder or a Hub id.

        source None -> $SER_SPEAKER_MODEL -> speechbrain/spkrec-xvect-voxceleb. A local folder is
        read in place unless `savedir` is given; Hub files go to `savedir`, by default
        ~/.cache/ser_demo/speaker/<source>. Raises SpeakerEmbeddingUnavailable (a RuntimeError)."""
        source = str(source or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
        folder = _local_folder(source)
        key = str(folder) if folder else source
        with _lock:
            if key not in _cache:
                _cache[key] = cls(_load_encoder(source, folder, savedir), key)
            return _cache[key]

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """float32 mono 16 kHz (1-D) -> (dim,) float32."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected 1-D mono audio at {SAMPLE_RATE} Hz, got shape {audio.shape}")
        return self._encode(audio)

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        n = int(MIN_SECONDS * SAMPLE_RATE)
        if len(audio) == 0:
            audio = np.zeros(n, np.float32)
        elif len(audio) < n:
            # Tiling keeps the clip's statistics, which is all the x-vector pools; zeros would not.
            audio = np.tile(audio, -(-n // len(audio)))
        # Eval-mode modules keep no state between calls, so concurrent calls need no lock.
        with torch.no_grad():
            emb = self.encoder.encode_batch(torch.from_numpy(np.ascontiguousarray(audio))[None])
        emb = emb.reshape(-1).float().cpu().numpy()
        if not np.isfinite(emb).all():
            raise ValueError("the speaker encoder returned non-finite values")
        return emb


def _remove_pooling_noise(encoder: torch.nn.Module) -> None:
    """speechbrain's StatisticsPooling adds eps * (9 - 8u) noise to the pooled mean (u: min-max
    normalised Gaussian), even in eval mode, so the same clip never embeds the same way twice.
    Its mean, 5 * eps, keeps the embedding where speechbrain centres it and makes it reproducible
    without touching the global RNG (which threads share)."""
    from speechbrain.nnet.pooling import StatisticsPooling

    for module in encoder.modules():
        if isinstance(module, StatisticsPooling) and hasattr(module, "_get_gauss_noise"):
            module._get_gauss_noise = functools.partial(_constant_noise, 5 * module.eps)


def _constant_noise(value: float, shape, device="cpu") -> torch.Tensor:
    return torch.full(tuple(shape), value, device=device)


def _load_encoder(source: str, folder: Path | None, savedir: str | None):
    try:
        # speechbrain imports torchaudio, so import it only when a speaker model is wanted.
        from speechbrain.inference.speaker import EncoderClassifier
        from speechbrain.utils.fetching import FetchConfig, LocalStrategy
    except ImportError as e:
        raise SpeakerEmbeddingUnavailable(f"speechbrain is not installed ({_one_line(e)})") from e

    overrides = {}
    # Windows needs privileges for symlinks; elsewhere link rather than copy ~20 MB.
    strategy = LocalStrategy.COPY if os.name == "nt" else LocalStrategy.SYMLINK
    fetch_config = FetchConfig()
    if folder is not None:
        if not (folder / "hyperparams.yaml").is_file():
            raise SpeakerEmbeddingUnavailable(f"no hyperparams.yaml in {folder}")
        source = str(folder)
        # The Hub's hyperparams.yaml points its pretrainer at the Hub (pretrained_path:
        # speechbrain/...); a downloaded copy must read its checkpoints from this folder instead.
        overrides["pretrained_path"] = source
        # Relink every file, so a reused savedir never serves another source's checkpoints.
        fetch_config = FetchConfig(overwrite=True)
    elif savedir is None:
        savedir = str(default_savedir(source))

    try:
        return EncoderClassifier.from_hparams(
            source=source,
            savedir=savedir,  # None: read the local folder in place
            overrides=overrides,
            overrides_must_match=False,  # a yaml without pretrained_path is fine too
            local_strategy=strategy,
            fetch_config=fetch_config,
            run_opts={"device": "cpu"},
        )
    except Exception as e:
        hint = "" if folder else " (offline? set SER_SPEAKER_MODEL to a local copy)"
        raise SpeakerEmbeddingUnavailable(f"{source}: {_one_line(e)}{hint}") from e
