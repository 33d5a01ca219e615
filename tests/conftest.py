"""Shared fixtures. One real speech file (espeak-ng, committed) backs the feature and model tests;
`../shared/data` (real corpora, never committed) backs the tests marked `shared_data`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FIXTURES = Path(__file__).parent / "fixtures"
SPEECH_FILE = FIXTURES / "speech.wav"
SPEECH_TEXT = "I can't believe you did that again, this is wonderful news"
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "shared_data(*corpora): needs ../shared/data and, when named, these corpus folders in it "
        "(e.g. shared_data('ravdess', 'goemotions')); skipped with the reason without them",
    )
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "soak: the long soak of the app (SER_SOAK_LONG=1; CI runs a shorter one)")


def shared_corpus(name: str) -> Path | None:
    """The folder of one corpus in ../shared/data, or None when it is absent or empty: a copy
    lacking one corpus skips the tests that need it instead of failing them."""
    folder = SHARED_DATA / name
    if folder.is_dir() and any(path.is_file() for path in folder.rglob("*")):
        return folder
    return None


def missing_shared_data(corpora) -> str | None:
    """Why a shared_data test cannot run here, or None when everything it names is present."""
    if not SHARED_DATA.is_dir():
        return f"{SHARED_DATA} not present"
    missing = [name for name in corpora if shared_corpus(name) is None]
    return f"{SHARED_DATA} lacks {', '.join(missing)}" if missing else None


def run_in_threads(work, n_threads: int) -> None:
    """work(0) ... work(n_threads - 1), each in its own thread, all at once; the first exception
    a thread raised is raised here (a thread cannot fail the test itself)."""
    import threading

    errors = []

    def guarded(i):
        try:
            work(i)
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("shared_data")
        if marker is None:
            continue
        reason = missing_shared_data(marker.args)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def speech_file() -> Path:
    return SPEECH_FILE


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """4.1 s of English speech, float32 mono 16 kHz."""
    audio, rate = sf.read(SPEECH_FILE, dtype="float32")
    assert rate == 16000
    return audio


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


# Emotion-like prosody for espeak-ng: (pitch 0-99, words per minute, amplitude 0-200).
ESPEAK_STYLE = {"angry": (70, 200, 190), "happy": (85, 175, 140), "sad": (20, 105, 70), "neutral": (45, 145, 110)}
RAVDESS_CODE = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}
GOEMOTIONS_ID = {"angry": 0, "happy": 3, "neutral": 4, "sad": 5}
FAKE_TEXTS = {
    "angry": ["this is outrageous and i hate it", "stop lying to me you idiot", "i am furious about this mess"],
    "happy": ["what a wonderful day i love it", "this is great news thank you", "i am so happy for you"],
    "sad": ["i miss her so much it hurts", "this is so sad and lonely", "i feel terrible and hopeless"],
    "neutral": ["the meeting is at three", "the report is on the table", "we will take the train"],
}


def espeak(text: str, path: Path, pitch: int, speed: int, amplitude: int, voice: str = "en-us") -> Path:
    """Speak `text` into a 16 kHz wav file with espeak-ng (a real, if synthetic, voice)."""
    import subprocess

    import librosa

    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amplitude),
                    "-w", str(raw), text], check=True)
    audio, rate = sf.read(raw, dtype="float32")
    raw.unlink()
    sf.write(path, librosa.resample(audio, orig_sr=rate, target_sr=16000), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def fake_corpora(tmp_path_factory) -> dict[str, Path]:
    """A RAVDESS-layout tree of espeak-ng clips (3 "actors", emotion by prosody) and a GoEmotions-
    layout text folder: small stand-ins for the real corpora, built when a test needs them."""
    import shutil

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("corpora")
    voices = {"01": "en-us", "02": "en-gb", "03": "en-us+f3"}
    for actor, voice in voices.items():
        folder = root / "ravdess" / f"Actor_{actor}"
        folder.mkdir(parents=True)
        for emotion, (pitch, speed, amplitude) in ESPEAK_STYLE.items():
            for statement, text in (("01", "Kids are talking by the door"), ("02", "Dogs are sitting by the door")):
                name = f"03-01-{RAVDESS_CODE[emotion]}-01-{statement}-01-{actor}.wav"
                espeak(text, folder / name, pitch, speed, amplitude, voice)
    text_root = root / "goemotions"
    text_root.mkdir()
    (text_root / "labels.txt").write_text("anger\ndisgust\nfear\njoy\nneutral\nsadness\nsurprise\n")
    for split in ("train", "dev", "test"):
        rows = [f"{t}\t{GOEMOTIONS_ID[label]}\tid{i}" for label, texts in FAKE_TEXTS.items() for i, t in enumerate(texts)]
        (text_root / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return {"ravdess": root / "ravdess", "goemotions": text_root}
