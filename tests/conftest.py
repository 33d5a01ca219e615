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
    config.addinivalue_line("markers", "shared_data: needs the corpora in ../shared/data (skipped without)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"{SHARED_DATA} not present")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


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
