"""Transcripts for the paper's ASR setting: a speech recogniser's text in place of a corpus's own,
computed once per clip and recogniser and cached on disk.

Whisper hears each clip exactly as the app's Whisper does (see :func:`transcribed_for`), so that
text trained and scored in this setting is the text a user's recording gets. Its confidence in its
words is kept too: words it was unsure of are scored as the app reads them, not with the voice
(:func:`words_read_with_the_voice`).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from train.cache import file_sha256
from train.records import Utterance


def transcriber_name(transcriber: Any) -> str:
    """What identifies a recogniser's output: its class plus its name/model attribute if any, and
    the window faster-whisper fits to a clip (absent for Whisper's 30 s window, as in caches
    made before windows were fitted)."""
    parts = [type(transcriber).__qualname__]
    for attribute in ("name", "model_name", "model_id", "model_size", "model", "window_padding"):
        value = getattr(transcriber, attribute, None)
        if isinstance(value, (str, int, float)):
            parts.append(f"{attribute}={value}")
    return "|".join(parts)


class Transcribed(NamedTuple):
    text: str
    log_probability: float | None  # Whisper's mean log-probability of its words (None: not scored)

    @property
    def unsure(self) -> bool:
        """Whisper's confidence below the app's threshold (ser_demo.transcript.is_unsure)."""
        from ser_demo.transcript import is_unsure_confidence

        return is_unsure_confidence(self.log_probability)


def transcripts_for(utterances: Sequence[Utterance], transcriber: Any, cache_dir: str | os.PathLike, *,
                    progress: Callable[[int, int], None] | None = None) -> list[str]:
    """ASR transcripts, one per utterance: the texts of :func:`transcribed_for`."""
    return [heard.text for heard in transcribed_for(utterances, transcriber, cache_dir, progress=progress)]


def transcribed_for(
    utterances: Sequence[Utterance],
    transcriber: Any,
    cache_dir: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[Transcribed]:
    """What the recogniser heard in each utterance, computed once per (audio content, recogniser,
    ingestion): its text, and its confidence in its words.

    ``transcriber.transcribe(audio)`` gets the clip as the app's Whisper hears it (16 kHz mono
    float32, silent edges trimmed, peak-normalised: :func:`train.features.load_clip`) and returns an
    object with ``.text`` and ``.log_probability`` (a ``ser_demo.transcript.Transcript``), or a plain
    string; a clip with no speech in it gets "". Results are appended to
    ``cache_dir/transcripts.jsonl`` as soon as each is known, so an interrupted run resumes where it
    stopped; lines written before the confidence was kept are heard again. Utterances without
    audio keep their own transcript ("" if none).
    """
    from train.features import INGEST, load_clip  # torch comes with it: import only when transcribing

    cache_file = Path(cache_dir) / "transcripts.jsonl"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    model = transcriber_name(transcriber)
    cached: dict[tuple[str, str, str], Transcribed] = {}
    if cache_file.exists():
        for line in cache_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                key = (record["audio_sha256"], record["transcriber"], record["ingest"])
                cached[key] = Transcribed(record["text"], record["log_probability"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run, or one without the confidence

    out = []
    with open(cache_file, "a", encoding="utf-8") as cache_out:
        for index, utterance in enumerate(utterances):
            if utterance.audio_path is None:
                out.append(Transcribed(utterance.transcript or "", None))
                continue
            key = (file_sha256(utterance.audio_path), model, INGEST)
            if key not in cached:
                audio = load_clip(utterance.audio_path)
                result = "" if audio is None else transcriber.transcribe(audio)
                cached[key] = Transcribed(str(getattr(result, "text", result)).strip(), getattr(result, "log_probability", None))
                record = {"audio_sha256": key[0], "transcriber": model, "ingest": INGEST, **cached[key]._asdict()}
                cache_out.write(json.dumps(record, ensure_ascii=False) + "\n")
                cache_out.flush()
            out.append(cached[key])
            if progress is not None:
                progress(index + 1, len(utterances))
    return out


def with_transcripts(utterances: Sequence[Utterance], texts: Sequence[str | Transcribed]) -> list[Utterance]:
    """The same utterances carrying other transcripts (e.g. ASR output), in the same order. Texts
    that are :class:`Transcribed` also say whether Whisper was unsure of them (``Utterance.unsure_words``)."""
    if len(texts) != len(utterances):
        raise ValueError(f"{len(texts)} transcripts for {len(utterances)} utterances")
    return [replace(u, transcript=t.text, unsure_words=t.unsure) if isinstance(t, Transcribed)
            else replace(u, transcript=t, unsure_words=False) for u, t in zip(utterances, texts)]


def words_read_with_the_voice(utterances: Sequence[Utterance]) -> list[Utterance]:
    """The utterances as a score that reads the voice and the words gets them: Whisper's words it
    was unsure of left out, as the app leaves them out (ser_demo.recognizer: the voice answers alone;
    text only still reads them). Training reads every transcript, as its command recorded."""
    return [replace(u, transcript="", unsure_words=False) if u.unsure_words else u for u in utterances]


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
