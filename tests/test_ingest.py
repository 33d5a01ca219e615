import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from ser_demo import ingest
from ser_demo.audio import SAMPLE_RATE
from ser_demo.ingest import AudioInputError, load_audio, normalize_peak


def speech_like(rate: int, seconds: float = 1.5) -> np.ndarray:
    """A voiced 'syllable train' defined in continuous time, so every rate samples the same sound.

    Harmonics of 140 Hz up to 2.8 kHz (below 4 kHz, the Nyquist frequency at 8 kHz) under a
    smooth 4 Hz envelope with real pauses, like syllables.
    """
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 21))
    envelope = np.sin(2 * np.pi * 2 * t) ** 2
    return (0.3 * envelope * voice / 3).astype(np.float32)


def interior(audio: np.ndarray) -> np.ndarray:
    edge = int(0.02 * SAMPLE_RATE)  # resampler filters ring at the ends
    return audio[edge:-edge]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return load_audio(speech_like(SAMPLE_RATE), SAMPLE_RATE)


def check_output(audio: np.ndarray):
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all()


# --- accepted inputs ------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_rates_give_the_same_16k_audio(rate, reference):
    audio = load_audio(speech_like(rate), rate)
    check_output(audio)
    assert len(audio) == len(reference)
    np.testing.assert_allclose(interior(audio), interior(reference), atol=0.01)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_stereo_int16_and_float_agree(rate, reference):
    mono = speech_like(rate)
    stereo = np.stack([mono, mono], axis=1)  # (samples, channels) as Gradio gives it
    int16 = np.round(stereo * 32767).astype(np.int16)
    int32 = (stereo.astype(np.float64) * 2**31).astype(np.int32)
    for samples in (stereo, int16, int32, stereo.T, stereo.astype(np.float64)):
        audio = load_audio((rate, samples))
        check_output(audio)
        np.testing.assert_allclose(interior(audio), interior(reference), atol=0.01)


def test_downmix_averages_channels():
    left = speech_like(SAMPLE_RATE)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    audio = load_audio(stereo, SAMPLE_RATE, normalize=False)
    np.testing.assert_allclose(audio, left / 2, atol=1e-6)


def test_resampling_is_band_limited():
    # 11 kHz is above the 8 kHz Nyquist limit of 16 kHz audio: a proper resampler removes it;
    # taking every third sample would fold it down to 5 kHz at full strength.
    t = np.arange(48000) / 48000
    tone = 0.5 * np.sin(2 * np.pi * 11000 * t) + speech_like(48000, 1.0)
    audio = load_audio(tone.astype(np.float32), 48000, normalize=False)
    expected = load_audio(speech_like(48000, 1.0), 48000, normalize=False)
    assert np.max(np.abs(interior(audio) - interior(expected))) < 0.05


@pytest.mark.parametrize(
    "fmt, subtype, rate, suffix",
    [
        ("WAV", "PCM_16", 44100, ".wav"),
        ("WAV", "FLOAT", 22050, ".wav"),
        ("FLAC", "PCM_24", 48000, ".flac"),
        ("OGG", "VORBIS", 44100, ".ogg"),
        ("OGG", "OPUS", 48000, ".opus"),
        ("MP3", "MPEG_LAYER_III", 44100, ".mp3"),
    ],
)
def test_files_via_soundfile(tmp_path, reference, fmt, subtype, rate, suffix):
    path = tmp_path / f"clip{suffix}"
    mono = speech_like(rate)
    sf.write(path, np.stack([mono, mono], axis=1), rate, format=fmt, subtype=subtype)
    for source in (path, str(path), path.read_bytes()):
        audio = load_audio(source)
        check_output(audio)
        assert_same_sound(audio, reference)


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@needs_ffmpeg
@pytest.mark.parametrize("suffix, codec", [(".webm", "libopus"), (".m4a", "aac")])
def test_browser_recordings_via_ffmpeg(tmp_path, reference, suffix, codec):
    wav, path = tmp_path / "clip.wav", tmp_path / f"clip{suffix}"
    sf.write(wav, speech_like(48000), 48000)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", codec, str(path)], check=True
    )
    for source in (path, path.read_bytes()):
        audio = load_audio(source)
        check_output(audio)
        assert_same_sound(audio, reference)


def assert_same_sound(audio: np.ndarray, reference: np.ndarray):
    """Lossy codecs change samples and may shift them a little; the loudness contour stays."""
    assert abs(len(audio) - len(reference)) < 0.06 * SAMPLE_RATE
    n = min(len(audio), len(reference))
    contour, expected = ingest.frame_rms(audio[:n]), ingest.frame_rms(reference[:n])
    assert np.corrcoef(contour, expected)[0, 1] > 0.95


def test_trim_silence_cuts_edges_and_keeps_speech():
    speech = speech_like(SAMPLE_RATE, 29.0)
    padded = np.concatenate([np.zeros(3 * SAMPLE_RATE), speech, np.zeros(3 * SAMPLE_RATE)])
    with pytest.raises(AudioInputError, match="too long"):
        load_audio(padded, SAMPLE_RATE)
    audio = load_audio(padded, SAMPLE_RATE, trim_silence=True)
    assert 29.0 <= len(audio) / SAMPLE_RATE <= 29.5


def test_normalization_sets_the_peak(reference):
    quiet = 0.01 * speech_like(SAMPLE_RATE)
    audio = load_audio(quiet, SAMPLE_RATE)
    assert np.max(np.abs(audio)) == pytest.approx(ingest.PEAK_TARGET, rel=1e-5)
    raw = load_audio(quiet, SAMPLE_RATE, normalize=False)
    assert np.max(np.abs(raw)) == pytest.approx(np.max(np.abs(quiet)), rel=1e-5)


def test_normalizing_digital_silence_keeps_it_silent():
    with np.errstate(all="raise"):  # any division by zero would raise here
        silence = normalize_peak(np.zeros(SAMPLE_RATE, dtype=np.float32))
        almost = normalize_peak(np.full(SAMPLE_RATE, 1e-9, dtype=np.float32))
    assert not silence.any() and np.isfinite(silence).all()
    assert np.max(almost) <= 1e-9  # not blown up to full scale


# --- rejected inputs: one rule each, with a message a user can act on -----------------


def rejects(source, match, **kwargs):
    with pytest.raises(AudioInputError, match=match) as error:
        load_audio(source, **kwargs)
    message = str(error.value)
    assert message[0].isupper() and message.endswith(".")  # a sentence, not a traceback
    return message


def test_rejects_nothing():
    rejects(None, "No audio was provided")


@pytest.mark.parametrize(
    "source", [(16000, np.zeros(0, np.int16)), (16000, np.zeros((0, 2))), (44100, [])]
)
def test_rejects_empty_arrays(source):
    rejects(source, "audio is empty")


def test_rejects_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    rejects(tmp_path / "empty.wav", "is empty")
    rejects(b"", "is empty")


def test_rejects_too_short():
    message = rejects((16000, speech_like(16000, 0.2)), "too short")
    assert "0.20 s" in message and "0.3 s" in message


def test_rejects_too_long():
    message = rejects((16000, speech_like(16000, 31.0)), "too long")
    assert "31.0 s" in message and "maximum is 30 s" in message
    rejects((16000, speech_like(16000, 6.0)), "maximum is 5 s", max_seconds=5)
    assert len(load_audio((16000, speech_like(16000, 31.0)), max_seconds=None)) == 31 * 16000


def test_rejects_too_long_file_before_decoding(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, speech_like(16000, 12.0), 16000)
    rejects(path, r"too long \(12.0 s\); the maximum is 10 s", max_seconds=10)


@pytest.mark.parametrize(
    "samples",
    [np.zeros(32000), np.zeros((32000, 2), np.int16), 1e-7 * np.ones(32000)],
    ids=["float-zeros", "int16-stereo-zeros", "dc-offset"],
)
def test_rejects_digital_silence(samples):
    rejects((16000, samples), "No speech detected")


def test_rejects_steady_noise():
    hiss = np.random.default_rng(0).normal(0, 0.05, 2 * 16000)
    hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(2 * 16000) / 16000)
    rejects((16000, hiss), "No speech detected")
    rejects((16000, hum), "No speech detected")
    # the same noise with speech on top is fine
    load_audio((16000, hiss + np.resize(speech_like(16000), len(hiss))))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_nan_and_inf(bad):
    samples = speech_like(16000)
    samples[1000] = bad
    rejects((16000, samples), "NaN or infinity")


@pytest.mark.parametrize("rate", [1, 0, -16000, 1e6, 16000.5, float("nan"), "fast"])
def test_rejects_unsupported_rates(rate):
    rejects((rate, speech_like(16000)), "sample rate")


def test_rejects_array_without_rate():
    rejects(speech_like(16000), "needs its sample rate")


def test_rejects_odd_arrays():
    rejects((16000, np.zeros((2, 3, 4))), "1-D or")
    rejects((16000, np.array(["a", "b"])), "Unsupported sample type")
    rejects((16000, (1j * speech_like(16000)).astype(np.complex64)), "Unsupported sample type")
    rejects((16000, np.zeros((100, 100))), "Cannot tell samples from channels")
    rejects(12345, "Unsupported audio input")


def test_rejects_missing_file(tmp_path):
    rejects(tmp_path / "nowhere.wav", "Audio file not found")


@pytest.mark.parametrize("name", ["noise.wav", "noise.mp3", "noise.webm"])
def test_rejects_corrupt_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(20000))
    if shutil.which("ffmpeg"):
        rejects(path, "corrupt or not in an audio format")
        rejects(path.read_bytes(), "Could not read the uploaded audio")
    else:
        rejects(path, "needs ffmpeg")


def test_rejects_non_audio_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("These are meeting notes, not a recording. " * 50)
    message = rejects(path, "'notes.txt'")
    assert "not in an audio format" in message or "needs ffmpeg" in message
    assert str(tmp_path) not in message  # ffmpeg's own path is not shown


def test_missing_ffmpeg_is_explained(tmp_path, monkeypatch):
    path = tmp_path / "browser.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(2000))  # EBML magic: WebM libsndfile can't read
    monkeypatch.setattr(shutil, "which", lambda name: None)
    message = rejects(path, "needs ffmpeg, which is not installed")
    assert "apt-get install ffmpeg" in message and "WAV" in message


def test_error_type_is_a_value_error():
    assert issubclass(AudioInputError, ValueError)
