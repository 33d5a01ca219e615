"""Speaker embeddings for the optional speaker input of the audio branch (the paper's x-vector).

Two backends behind one interface (`.dim`, `.source`, `.embed(audio)`):

- "resemblyzer" (default of new checkpoints): the pretrained GE2E voice encoder (Wan et al. 2018;
  3-layer LSTM over 40 mel bands, 256-d) that the PyPI package `Resemblyzer` ships in its wheel,
  so it works offline. Its weights are loaded into `GE2EVoiceEncoder` below, a small module of
  ours, with `torch.load(weights_only=True)`; the package itself is never imported (its VAD needs
  webrtcvad and pkg_resources, and ingestion already trims silence).
- a speechbrain speaker model (folder or Hub id, e.g. the x-vector of the paper): a thin wrapper
  around speechbrain's `EncoderClassifier`, loaded from a local folder or a Hub id
laid out like `speechbrain/spkrec-xvect-voxceleb`: hyperparams.yaml (Fbank -> sentence mean
normalisation -> Xvector) plus the checkpoint files its pretrainer names
(embedding_model.ckpt, mean_var_norm_emb.ckpt, classifier.ckpt, label_encoder.txt).

    embedder = load_speaker_embedder("resemblyzer")     # offline GE2E, (256,) per clip
    embedder = load_speaker_embedder()                  # SER_SPEAKER_MODEL, else the GE2E
    embedder.embed(audio)                               # float32 16 kHz mono -> (dim,) float32

Each source is loaded once per process; `embed` is safe to call from several threads.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .audio import SAMPLE_RATE

GE2E = "resemblyzer"  # the offline default: Resemblyzer's pretrained GE2E voice encoder
XVECTOR = "speechbrain/spkrec-xvect-voxceleb"  # the paper's x-vector (needs a download)
DEFAULT_MODEL = XVECTOR  # SpeakerEmbedder's default, kept for speechbrain sources
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


def load_speaker_embedder(source: str | None = None, *, default: str = GE2E):
    """The embedder named by `source` (None: $SER_SPEAKER_MODEL, else `default`, the offline
    GE2E): "resemblyzer" or a path to a GE2E `pretrained.pt`, otherwise a speechbrain folder or
    Hub id. Checkpoints made before GE2E was the default store None and mean the x-vector:
    `for_checkpoint` passes default=XVECTOR for them."""
    source = str(source or os.environ.get(MODEL_ENV) or default)
    if source == GE2E or source.endswith(".pt"):
        return GE2EVoiceEncoder.load(None if source == GE2E else source)
    return SpeakerEmbedder.from_pretrained(source)


def for_checkpoint(config):
    """The speaker embedder a checkpoint's config names (None: the x-vector it meant then)."""
    return load_speaker_embedder(config.speaker_model, default=XVECTOR)


class GE2EVoiceEncoder(nn.Module):
    """Resemblyzer's voice encoder: mel frames -> LSTM (3 x 256) -> last state -> linear -> ReLU
    -> L2 norm. A clip is cut into 1.6 s partials (1.3 per second, the last kept if 75 % full),
    and its embedding is the L2-normed mean of theirs, exactly as Resemblyzer's embed_utterance."""

    sample_rate, n_mels, window_ms, hop_ms = SAMPLE_RATE, 40, 25, 10
    partial_frames, partials_per_second, min_coverage = 160, 1.3, 0.75
    target_dbfs = -30.0  # Resemblyzer raises quiet audio to this RMS level (never lowers it)
    dim = 256

    def __init__(self, source: str = GE2E):
        super().__init__()
        self.source = source
        self.lstm = nn.LSTM(self.n_mels, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, self.dim)

    @classmethod
    def load(cls, weights: str | None = None) -> "GE2EVoiceEncoder":
        """From Resemblyzer's wheel (found without importing it), or a `pretrained.pt` path."""
        key = weights or GE2E
        with _lock:
            if key not in _cache:
                path = Path(weights) if weights else _resemblyzer_weights()
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
                except Exception as e:
                    raise SpeakerEmbeddingUnavailable(f"{path}: {_one_line(e)}") from e
                encoder = cls(key)
                # The file also holds the GE2E loss's similarity weight and bias: not the encoder's.
                encoder.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in ("lstm", "linear")})
                _cache[key] = encoder.eval()
            return _cache[key]

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(partials, 160, 40) mel frames -> (partials, 256) unit vectors."""
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """float32 mono 16 kHz (1-D) -> (256,) float32 unit vector."""
        import librosa

        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected 1-D mono audio at {SAMPLE_RATE} Hz, got shape {audio.shape}")
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
        if rms > 0:
            audio = audio * max(1.0, 10 ** (self.target_dbfs / 20) / rms)
        hop = self.sample_rate * self.hop_ms // 1000
        n_frames = int(np.ceil((len(audio) + 1) / hop))
        step = int(round(self.sample_rate / self.partials_per_second / hop))
        starts = list(range(0, max(1, n_frames - self.partial_frames + step + 1), step))
        coverage = (len(audio) - starts[-1] * hop) / (self.partial_frames * hop)
        if coverage < self.min_coverage and len(starts) > 1:
            starts = starts[:-1]
        audio = np.pad(audio, (0, max(0, (starts[-1] + self.partial_frames) * hop - len(audio))))
        mel = librosa.feature.melspectrogram(
            y=audio, sr=self.sample_rate, n_fft=self.sample_rate * self.window_ms // 1000,
            hop_length=hop, n_mels=self.n_mels,
        ).astype(np.float32).T  # power mel, not log: what the encoder was trained on
        partials = np.stack([mel[s : s + self.partial_frames] for s in starts])
        with torch.no_grad():
            embeddings = self(torch.from_numpy(partials)).mean(0)
        return (embeddings / embeddings.norm().clamp_min(1e-12)).numpy().astype(np.float32)


def _resemblyzer_weights() -> Path:
    spec = importlib.util.find_spec("resemblyzer")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SpeakerEmbeddingUnavailable("the Resemblyzer package is not installed (pip install Resemblyzer)")
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.is_file():
        raise SpeakerEmbeddingUnavailable(f"Resemblyzer's pretrained.pt is missing from {path.parent}")
    return path


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
