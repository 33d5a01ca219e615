"""What a page or an API server loads once, at start-up: the checkpoints a visitor may choose
from, Whisper, and the word times it heard in recent recordings. No UI imports: `app.py` composes
this with Gradio.

    service = Service.load()                # the default checkpoint, SER_APP_CHECKPOINTS, Whisper
    service.recognizers[service.default]    # an EmotionRecognizer
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .transcript import RecentWords
from .memory import rss_mb
from .recognizer import EmotionRecognizer, default_checkpoint
from .utterance import MAX_TRANSCRIPT_CHARACTERS, MAX_TRANSCRIPT_WORDS

log = logging.getLogger("ser_demo.service")

CHECKPOINTS_ENV = "SER_APP_CHECKPOINTS"  # more checkpoints: "label=source,source,..."
NO_ASR_ENV = "SER_APP_NO_ASR"  # "1": start without speech recognition


def checkpoint_sources() -> dict[str, str]:
    """label -> local folder or Hub repo id: the default checkpoint first, then SER_APP_CHECKPOINTS."""
    sources: dict[str, str] = {}
    default = default_checkpoint()
    if default:
        sources[Path(default).name if Path(default).is_dir() else default] = default
    for entry in os.environ.get(CHECKPOINTS_ENV, "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        label, _, source = entry.rpartition("=") if "=" in entry else ("", "", entry)
        source = source.strip()
        label = label.strip() or (Path(source).name if Path(source).is_dir() else source)
        sources.setdefault(label, source)
    return sources


@dataclass
class Service:
    recognizers: dict[str, EmotionRecognizer]  # label -> recognizer; the first is the default
    transcriber: object = None
    asr_error: Optional[str] = None  # why there is no transcriber, shown to visitors
    startup: dict = field(default_factory=dict)  # seconds per stage, memory, devices
    # Whisper's word times per recording: a re-run with the (edited) transcript keeps them
    words: RecentWords = field(default_factory=RecentWords)

    @property
    def default(self) -> str:
        return next(iter(self.recognizers))

    @classmethod
    def load(
        cls,
        sources: Optional[dict[str, str]] = None,
        asr: Optional[bool] = None,
        *,
        max_transcript_words: Optional[int] = MAX_TRANSCRIPT_WORDS,
        max_transcript_characters: Optional[int] = MAX_TRANSCRIPT_CHARACTERS,
        warm_up: Optional[Callable[["Service"], None]] = None,
    ) -> "Service":
        """Every checkpoint of `sources` (default: `checkpoint_sources()`) and Whisper (asr None:
        unless SER_APP_NO_ASR is set). A broken extra checkpoint is skipped with a warning; the
        default one must load. `warm_up(service)` runs once before the first visitor."""
        start = time.perf_counter()
        sources = checkpoint_sources() if sources is None else sources
        if not sources:
            raise SystemExit(
                "no checkpoint: the bundled checkpoints/mscnn-spu-att-en-4class is missing; "
                "set SER_CHECKPOINT to a checkpoint folder or Hub repo id"
            )
        recognizers = {}
        for label, source in sources.items():
            try:
                recognizers[label] = recognizer = EmotionRecognizer.from_pretrained(source)
                recognizer.max_transcript_words = max_transcript_words
                recognizer.max_transcript_characters = max_transcript_characters
            except Exception as err:  # one bad extra checkpoint must not take the page down
                if not recognizers and label == next(iter(sources)):
                    raise
                log.warning("checkpoint %s (%s) not loaded: %s", label, source, err)
        loaded_models = time.perf_counter()
        transcriber, asr_error = None, None
        if asr is None:
            asr = os.environ.get(NO_ASR_ENV, "") not in ("1", "true", "yes")
        if asr:
            from .asr import TranscriptionUnavailable, load_transcriber

            try:
                transcriber = load_transcriber()
            except TranscriptionUnavailable as err:
                asr_error = str(err)
                log.warning("%s; transcripts must be typed", err)
        else:
            asr_error = f"transcription unavailable: turned off ({NO_ASR_ENV})"
        service = cls(recognizers, transcriber, asr_error)
        loaded = time.perf_counter()
        if warm_up is not None:
            warm_up(service)
        service.startup = {
            "load_models_s": round(loaded_models - start, 3),
            "load_asr_s": round(loaded - loaded_models, 3),
            "warm_up_s": round(time.perf_counter() - loaded, 3),
            "total_s": round(time.perf_counter() - start, 3),
            "rss_mb": round(rss_mb(), 1),
            "device": str(service.recognizers[service.default].device),
            "asr_device": getattr(transcriber, "device", None),
        }
        log.info("start-up: %s", service.startup)
        return service
