"""Turn whatever a user hands over into float32 mono 16 kHz audio, or say clearly why not.

Every entry point (the app's microphone and upload, the trainer, the benchmark) goes
through `load_audio`, so the rules live in one place:

- sources: a file path, the raw bytes of a file, a Gradio `(sample_rate, array)` pair,
  or an ndarray with its `sample_rate`;
- files are decoded by soundfile (wav, flac, ogg vorbis/opus, mp3, ...) and, for what
  libsndfile cannot read (webm/opus from browsers, m4a, ...), by the ffmpeg program;
- integer or float samples, mono or multi-channel, any sane rate;
- every problem raises `AudioInputError`, whose message tells the user what to do.
"""

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .audio import SAMPLE_RATE

MIN_INPUT_RATE = 4_000  # below this there is no intelligible speech left
MAX_INPUT_RATE = 384_000  # the highest rate sound cards and editors produce
MAX_CHANNELS = 32

PEAK_TARGET = 0.95  # a little headroom so later filtering cannot clip
SILENCE_PEAK = 1e-6  # ~ -120 dBFS: below this a signal is digital silence, never amplified

# Activity detection on 25 ms frames (10 ms hop): a frame is "active" when its RMS is above
# an absolute floor and clearly above the clip's own noise floor, so that both digital
# silence and steady hiss/hum count as "no speech".
FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
ABSOLUTE_FLOOR_RMS = 10 ** (-65 / 20)  # quieter than any usable microphone signal
NOISE_FLOOR_PERCENTILE = 10
ABOVE_NOISE_FLOOR = 10 ** (6 / 20)  # speech peaks sit well over 6 dB above the floor
MIN_ACTIVE_SECONDS = 0.1
TRIM_PADDING_SECONDS = 0.15  # keep the soft onset/decay around trimmed speech
TRIM_SLACK_SECONDS = 120.0  # with trimming, how much longer than the limit a file may be

# Decoding is bounded whatever a file claims: soundfile reads blocks and stops one block past
# the limit, ffmpeg is told to stop there (-t) and killed if it still takes too long.
DECODE_BLOCK_FRAMES = 32_768
UNKNOWN_FRAMES = 2**62  # libsndfile reports a length it does not know as the largest int64
FFMPEG_TIMEOUT_SECONDS = 30


class AudioInputError(ValueError):
    """The audio cannot be used; str(error) is a sentence the user can act on."""


class AudioTooLongError(AudioInputError):
    """Longer than allowed; `duration` is the length in seconds where known."""

    def __init__(self, message: str, duration: float | None = None):
        super().__init__(message)
        self.duration = duration


def load_audio(
    source,
    sample_rate: int | None = None,
    *,
    max_seconds: float | None = 30.0,
    min_seconds: float = 0.3,
    trim_silence: bool = False,
    normalize: bool = True,
) -> np.ndarray:
    """Return `source` as a finite, 1-D float32 array of mono audio at 16 kHz.

    source: a str/Path file path, the bytes of an audio file, a Gradio `(sample_rate, array)`
        pair, or an ndarray (then `sample_rate` is required). Arrays may be int16, int32,
        uint8 or float, shaped (samples,), (samples, channels) or (channels, samples).
    max_seconds: reject longer audio (after trimming, if `trim_silence`); None for no limit.
    min_seconds: reject shorter audio.
    trim_silence: cut leading and trailing silence before the length checks.
    normalize: scale to a fixed peak; digital silence is left as it is.
    """
    decode_limit = None
    if max_seconds is not None:
        decode_limit = max_seconds + (TRIM_SLACK_SECONDS if trim_silence else 0.0)

    try:
        samples, rate = decode(source, sample_rate, max_seconds=decode_limit)
    except AudioTooLongError as error:  # decoding stopped at the slack; the user's limit is max_seconds
        raise _too_long(error.duration, max_seconds) from None
    audio = to_mono_float32(samples)
    rate = check_sample_rate(rate)
    if decode_limit is not None and len(audio) > decode_limit * rate:  # arrays: before resampling
        raise _too_long(len(audio) / rate, max_seconds)
    if not np.isfinite(audio).all():
        raise AudioInputError(
            "The audio contains invalid samples (NaN or infinity). "
            "Re-export the file or record again."
        )
    audio = resample(audio, rate, SAMPLE_RATE)

    if trim_silence:
        audio = trim_silent_edges(audio)
    duration = len(audio) / SAMPLE_RATE
    if duration < min_seconds:
        raise AudioInputError(
            f"The audio is too short ({duration:.2f} s); at least {min_seconds:g} s "
            "of speech is needed. Record a longer clip."
        )
    if max_seconds is not None and duration > max_seconds:
        raise _too_long(duration, max_seconds)
    if active_seconds(audio) < MIN_ACTIVE_SECONDS:
        raise AudioInputError(
            "No speech detected: the audio is silent or holds only steady background noise. "
            "Check that the right microphone is selected and speak closer to it."
        )
    if normalize:
        audio = normalize_peak(audio)
    return audio


def decode(source, sample_rate: int | None = None, *, max_seconds: float | None = None):
    """Return `(samples, rate)` for any supported source, samples as they were stored."""
    if source is None:
        raise AudioInputError(
            "No audio was provided. Record with the microphone or upload an audio file."
        )
    if isinstance(source, tuple):  # what gr.Audio(type="numpy") hands over
        if len(source) != 2:
            raise AudioInputError(
                "Expected audio as a (sample_rate, samples) pair; "
                f"got a tuple of {len(source)} items."
            )
        rate, samples = source
        return _as_array(samples), rate
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise AudioInputError(
                "A raw audio array needs its sample rate: pass sample_rate=... with it."
            )
        return source, sample_rate
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), max_seconds)
    if isinstance(source, (str, os.PathLike)):
        return _decode_file(Path(source), max_seconds)
    raise AudioInputError(
        f"Unsupported audio input of type {type(source).__name__}; "
        "give a file path, file bytes, or a (sample_rate, samples) pair."
    )


def _as_array(samples) -> np.ndarray:
    try:
        return np.asarray(samples)
    except (TypeError, ValueError) as error:  # ragged lists and the like
        raise AudioInputError(f"The audio samples are not a numeric array ({error}).") from None


def _decode_file(path: Path, max_seconds: float | None):
    if not path.is_file():
        raise AudioInputError(f"Audio file not found: '{path}'. Upload the file again.")
    if path.stat().st_size == 0:
        raise AudioInputError(f"The file '{path.name}' is empty. Upload a different file.")
    try:
        return _read_soundfile(path, max_seconds)
    except sf.LibsndfileError:
        pass  # not a format libsndfile knows (webm, m4a, ...) or corrupt: let ffmpeg decide
    return _read_ffmpeg(str(path), path.name, max_seconds)


def _decode_bytes(data: bytes, max_seconds: float | None):
    if not data:
        raise AudioInputError("The uploaded audio is empty. Upload a different file.")
    try:
        return _read_soundfile(io.BytesIO(data), max_seconds)
    except sf.LibsndfileError:
        pass
    # A real file rather than a pipe, so ffmpeg can seek (mp4/m4a keep their index at the end).
    with tempfile.NamedTemporaryFile(suffix=".audio") as file:
        file.write(data)
        file.flush()
        return _read_ffmpeg(file.name, "the uploaded audio", max_seconds)


def _read_soundfile(file, max_seconds: float | None):
    """Mono float32 at the file's rate. The header is checked before any decoding, and the
    decoding itself stops one block past `max_seconds`, so neither a header that lies about
    the length nor a small compressed file that expands to hours (FLAC of silence) costs more
    than the limit; channels are averaged block by block, so 32 channels cost what one does."""
    with sf.SoundFile(file) as f:
        rate = check_sample_rate(f.samplerate)
        if not 1 <= f.channels <= MAX_CHANNELS:
            raise AudioInputError(
                f"The audio has {f.channels} channels; at most {MAX_CHANNELS} are supported. "
                "Export it as mono or stereo."
            )
        known = f.frames < UNKNOWN_FRAMES  # streamed FLAC/OGG may not know their length
        if max_seconds is not None and known and f.frames / rate > max_seconds:
            raise _too_long(f.frames / rate, max_seconds)  # what the header says, before decoding
        limit = None if max_seconds is None else int(max_seconds * rate) + 1
        blocks, frames = [], 0
        buffer = np.empty((DECODE_BLOCK_FRAMES, f.channels), np.float32)  # reused: no copy per block
        for block in f.blocks(out=buffer):
            blocks.append(block.mean(axis=1, dtype=np.float32) if f.channels > 1 else block[:, 0].copy())
            frames += len(block)
            if limit is not None and frames > limit:
                raise _too_long(None, max_seconds)  # the header understated the length
        samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        return samples, rate


def _read_ffmpeg(path: str, name: str, max_seconds: float | None):
    """Decode with the ffmpeg program to mono float32 at SAMPLE_RATE (ffmpeg's own resampler)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioInputError(
            f"Cannot read {_quote(name)}: this format (e.g. WebM/Opus from browsers, M4A) "
            "needs ffmpeg, which is not installed. Install ffmpeg (e.g. `apt-get install ffmpeg`) "
            "or upload WAV, FLAC, OGG or MP3 audio."
        )
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1"]
    if max_seconds is not None:
        # An input option: ffmpeg stops reading there, so an hour-long webm costs one second more
        # than the limit, whatever its header says.
        command += ["-t", f"{max_seconds + 1.0:.3f}"]
    command += ["-i", path, "-vn", "-sn", "-dn", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    try:
        result = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise AudioInputError(
            f"Decoding {_quote(name)} took too long; upload a shorter or simpler file."
        ) from None
    if result.returncode != 0 or not result.stdout:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        # ffmpeg names the (possibly temporary) path; the user knows the file by `name`
        reason = f" (ffmpeg: {detail[-1].replace(path, name)})" if detail else ""
        raise AudioInputError(
            f"Could not read {_quote(name)} as audio: the file is corrupt or not in an audio "
            f"format{reason}. Upload a WAV, FLAC, OGG, MP3 or WebM recording."
        )
    samples = np.frombuffer(result.stdout[: len(result.stdout) // 4 * 4], dtype="<f4")
    if max_seconds is not None and len(samples) > max_seconds * SAMPLE_RATE:
        raise _too_long(None, max_seconds)
    return samples, SAMPLE_RATE


def _quote(name: str) -> str:
    return name if name.startswith("the ") else f"'{name}'"


def _too_long(duration: float | None, max_seconds: float) -> AudioTooLongError:
    actual = f" ({duration:.1f} s)" if duration is not None else ""
    return AudioTooLongError(
        f"The audio is too long{actual}; the maximum is {max_seconds:g} s. "
        "Upload a shorter clip or cut it to the part you want analysed.",
        duration,
    )


def to_mono_float32(samples: np.ndarray) -> np.ndarray:
    """Scale integer samples to [-1, 1] and average the channels into one."""
    samples = np.asarray(samples)
    if samples.size == 0:
        raise AudioInputError("The audio is empty (no samples). Record again or upload a different file.")
    if samples.ndim > 2:
        raise AudioInputError(
            f"Audio arrays must be 1-D or (samples, channels); got shape {samples.shape}."
        )

    if samples.dtype == np.uint8:  # 8-bit PCM is unsigned with its zero at 128
        audio = (samples.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(samples.dtype, np.signedinteger):
        audio = samples.astype(np.float32) / float(-np.iinfo(samples.dtype).min)
    elif np.issubdtype(samples.dtype, np.floating):
        audio = samples.astype(np.float32)
    else:
        raise AudioInputError(
            f"Unsupported sample type {samples.dtype}; audio samples must be integer or "
            "floating-point numbers."
        )

    if audio.ndim == 2:
        rows, cols = audio.shape
        if cols <= MAX_CHANNELS and (rows > cols or rows > MAX_CHANNELS):
            audio = audio.mean(axis=1)  # (samples, channels): Gradio and soundfile layout
        elif rows <= MAX_CHANNELS:
            audio = audio.mean(axis=0)  # (channels, samples): torchaudio layout
        else:
            raise AudioInputError(
                f"Cannot tell samples from channels in an array of shape {samples.shape}; "
                "pass (samples, channels)."
            )
    return np.ascontiguousarray(audio, dtype=np.float32)


def check_sample_rate(rate) -> int:
    """Return `rate` as an int, or raise if no speech could be carried at that rate."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise AudioInputError(f"Invalid sample rate {rate!r}; it must be a number of Hz.") from None
    if not np.isfinite(value) or value != int(value) or not MIN_INPUT_RATE <= value <= MAX_INPUT_RATE:
        raise AudioInputError(
            f"Unsupported sample rate {rate!r} Hz; audio must be sampled at a whole number of Hz "
            f"between {MIN_INPUT_RATE} and {MAX_INPUT_RATE}. Re-export it at a standard rate "
            "such as 16000 or 48000 Hz."
        )
    return int(value)


def resample(audio: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (soxr, high quality), so no aliasing from downsampling."""
    rate = check_sample_rate(rate)
    if rate == target_rate:
        return audio
    return soxr.resample(audio, rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def normalize_peak(audio: np.ndarray, peak: float = PEAK_TARGET) -> np.ndarray:
    """Scale so that the largest magnitude is `peak`; digital silence is returned unchanged."""
    current = float(np.max(np.abs(audio))) if audio.size else 0.0
    if current < SILENCE_PEAK:  # nothing to scale, and no division by (almost) zero
        return audio
    return (audio * (peak / current)).astype(np.float32, copy=False)


def frame_rms(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """RMS of 25 ms frames every 10 ms (one frame for clips shorter than that)."""
    frame, hop = int(FRAME_SECONDS * rate), int(HOP_SECONDS * rate)
    if len(audio) <= frame:
        return np.sqrt(np.mean(np.square(audio, dtype=np.float64), keepdims=True))
    # running sum of squares: O(n) memory however long the clip (frames overlap 2.5x)
    energy = np.concatenate([[0.0], np.cumsum(np.square(audio, dtype=np.float64))])
    starts = np.arange(0, len(audio) - frame + 1, hop)
    return np.sqrt(np.maximum(energy[starts + frame] - energy[starts], 0.0) / frame)


def active_frames(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Boolean mask of frames loud enough to be speech rather than silence or steady noise."""
    rms = frame_rms(audio, rate)
    noise_floor = np.percentile(rms, NOISE_FLOOR_PERCENTILE)
    threshold = max(ABSOLUTE_FLOOR_RMS, noise_floor * ABOVE_NOISE_FLOOR)
    return rms > threshold


def active_seconds(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Roughly how much of the clip is above the noise floor, in seconds."""
    return float(np.count_nonzero(active_frames(audio, rate))) * HOP_SECONDS


def trim_silent_edges(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading and trailing silence, keeping a short pad around the active part."""
    start, end = speech_bounds(audio, rate)
    return audio[start:end]


def speech_bounds(audio: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """The samples `trim_silent_edges` keeps, as (start, end); the whole clip when none is active."""
    active = np.flatnonzero(active_frames(audio, rate))
    if active.size == 0:
        return 0, len(audio)  # nothing to anchor on; the speech check will reject it
    hop, pad = int(HOP_SECONDS * rate), int(TRIM_PADDING_SECONDS * rate)
    start = max(0, active[0] * hop - pad)
    end = min(len(audio), active[-1] * hop + int(FRAME_SECONDS * rate) + pad)
    return start, end
