"""Transcripts for the paper's ASR setting: a speech recogniser's text in place of a corpus's own,
computed once per clip and recogniser and cached on disk.

Whisper hears each clip exactly as the app's Whisper does (see :func:`transcripts_for`), so that
text trained and scored in this setting is the text a user's recording gets.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from train.cache import file_sha256
from train.records import Utterance


def transcriber_name(transcriber: Any) -> str:
    """What identifies a recogniser's output: its class plus its name/model attribute if any."""
    parts = [type(transcriber).__qualname__]
    for attribute in ("name", "model_name", "model_id", "model_size", "model"):
        value = getattr(transcriber, attribute, None)
        if isinstance(value, (str, int, float)):
            parts.append(f"{attribute}={value}")
    return "|".join(parts)


def transcripts_for(
    utterances: Sequence[Utterance],
    transcriber: Any,
    cache_dir: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """ASR transcripts, one per utterance, computed once per (audio content, recogniser, ingestion).

    ``transcriber.transcribe(audio)`` gets the clip as the app's Whisper hears it (16 kHz mono
    float32, silent edges trimmed, peak-normalised: :func:`train.features.load_clip`) and returns an
    object with ``.text`` (or a plain string); a clip with no speech in it gets "". Results are
    appended to ``cache_dir/transcripts.jsonl`` as soon as each is known, so an interrupted run
    resumes where it stopped. Utterances without audio keep their own transcript ("" if none).
    """
    from train.features import INGEST, load_clip  # torch comes with it: import only when transcribing

    cache_file = Path(cache_dir) / "transcripts.jsonl"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    model = transcriber_name(transcriber)
    cached: dict[tuple[str, str, str], str] = {}
    if cache_file.exists():
        for line in cache_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                cached[(record["audio_sha256"], record["transcriber"], record["ingest"])] = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run

    texts = []
    with open(cache_file, "a", encoding="utf-8") as cache_out:
        for index, utterance in enumerate(utterances):
            if utterance.audio_path is None:
                texts.append(utterance.transcript or "")
                continue
            key = (file_sha256(utterance.audio_path), model, INGEST)
            if key not in cached:
                audio = load_clip(utterance.audio_path)
                result = "" if audio is None else transcriber.transcribe(audio)
                cached[key] = str(getattr(result, "text", result)).strip()
                record = {"audio_sha256": key[0], "transcriber": model, "ingest": INGEST, "text": cached[key]}
                cache_out.write(json.dumps(record, ensure_ascii=False) + "\n")
                cache_out.flush()
            texts.append(cached[key])
            if progress is not None:
                progress(index + 1, len(utterances))
    return texts


def with_transcripts(utterances: Sequence[Utterance], texts: Sequence[str]) -> list[Utterance]:
    """The same utterances carrying other transcripts (e.g. ASR output), in the same order."""
    if len(texts) != len(utterances):
        raise ValueError(f"{len(texts)} transcripts for {len(utterances)} utterances")
    return [replace(u, transcript=t) for u, t in zip(utterances, texts)]


def with_missing_transcripts(
    utterances: Sequence[Utterance],
    asr: Callable[[list[Utterance]], tuple[list[Utterance], str]],
) -> tuple[list[Utterance], str | None, int]:
    """The own-or-ASR setting: clips with no transcript of their own (SAVEE) get the recogniser's
    words, the others keep theirs. ``asr(utterances)`` -> (those utterances carrying its words,
    its name). Returns the utterances in their order, the recogniser's name (None when nothing
    was missing, and nothing was transcribed) and how many clips it heard."""
    missing = [i for i, u in enumerate(utterances) if u.audio_path is not None and not u.transcript]
    out = list(utterances)
    if not missing:
        return out, None, 0
    heard, recogniser = asr([out[i] for i in missing])
    for i, u in zip(missing, heard):
        out[i] = u
    return out, recogniser, len(missing)
