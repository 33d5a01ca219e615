"""The app's "Over time" tab: emotion while you speak, and over a whole recording.

- Live: the microphone streams (`gr.Audio(streaming=True)`, a chunk every STREAM_EVERY s); about
  once a second a point of the four probabilities joins a native line chart of the last
  LIVE_HISTORY_SECONDS (audio branch only: cheap), and the transcript grows as Whisper catches up
  (`ser_demo.live`). When the recording stops, the whole of it gets the full timeline below.
- Recording or upload: `ser_demo.timeline` (progress shown), a chart of the smoothed
  probabilities with the segment boundaries, the segments as a table and as coloured text, and a
  button that opens any one segment in the step-by-step tab. The same is the `/timeline` API.

This module only composes the library and Gradio; `app.py` calls `build_timeline_tab`.

Settings (environment): SER_APP_TIMELINE_MAX_SECONDS (300) longest recording or upload,
SER_APP_LIVE_MAX_SECONDS (120) longest live stream, SER_APP_LIVE_CONCURRENCY (4) streams served at once.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import soundfile as sf

from ser_demo.audio import SAMPLE_RATE
from ser_demo.calibration import PROTOCOL_KEYS
from ser_demo.charts import LABEL_COLORS
from ser_demo.utterance import PredictionError

log = logging.getLogger("ser_demo.app")

TIMELINE_MAX_SECONDS = float(os.environ.get("SER_APP_TIMELINE_MAX_SECONDS", "300"))
LIVE_MAX_SECONDS = float(os.environ.get("SER_APP_LIVE_MAX_SECONDS", "120"))
LIVE_CONCURRENCY = int(os.environ.get("SER_APP_LIVE_CONCURRENCY", "4"))
STREAM_EVERY = 0.5  # seconds of microphone audio per chunk sent to the server
POINT_WAIT = 0.3  # a chunk's handler waits this long for the point in flight (< STREAM_EVERY)
LIVE_HISTORY_SECONDS = 30.0  # the live chart shows the last half minute
CHART_POINTS = 600  # the full timeline's curve is thinned to this many points per emotion
BOUNDARY = "segment boundary"
CLIPS_MAX_AGE_SECONDS = 3600  # recordings kept for "open in step by step"
GENERIC_ERROR = "Something went wrong while building the timeline. Please try again, or try another recording."
TIMELINE_MODALITIES = [("audio + text (Whisper finds the sentences)", "both"), ("audio only (pauses)", "audio")]
_clips = Path(tempfile.gettempdir()) / "ser-demo-timeline"


def _user_error(err: Exception) -> gr.Error:
    """A message the visitor can act on; anything unexpected is logged and stays generic."""
    from ser_demo.asr import TranscriptionUnavailable
    from ser_demo.ingest import AudioInputError

    if isinstance(err, (AudioInputError, PredictionError, TranscriptionUnavailable)):
        return gr.Error(str(err), print_exception=False)
    log.error("timeline failed", exc_info=err)
    return gr.Error(GENERIC_ERROR, print_exception=False)


# --- what the charts and tables show -------------------------------------------------------


def live_frame(live, labels) -> pd.DataFrame:
    """The live chart's rows (time, emotion, probability) over the last LIVE_HISTORY_SECONDS;
    silent points are left out."""
    since = live.duration - LIVE_HISTORY_SECONDS
    rows = [(p.time, label, p.probabilities[label]) for p in live.points
            if p.probabilities is not None and p.time >= since for label in labels]
    return pd.DataFrame(rows, columns=["time", "emotion", "probability"])


def live_status(live) -> str:
    """One line under the live chart: how much was heard and what the last point says."""
    heard = [p for p in live.points if p.probabilities is not None]
    last = live.points[-1] if live.points else None
    now = (f"now: <b>{max(last.probabilities, key=last.probabilities.get)}</b>" if last and last.probabilities
           else "now: silence")
    limit = " Time limit reached: stop and start again." if live.full else ""
    return (f'<span id="live-points" data-points="{len(heard)}">{live.duration:.0f} s heard, {len(heard)} points '
            f"with speech, {len(live.points) - len(heard)} silent; {now}.</span>{limit}")


def timeline_frame(result) -> pd.DataFrame:
    """The smoothed curve (NaN in silence, which breaks the lines) thinned to CHART_POINTS, and a
    grey spike at each boundary between segments."""
    every = max(1, len(result.times) // CHART_POINTS)
    times, curve = result.times[::every], result.curve[::every]
    rows = [(float(t), label, float(curve[i, j])) for j, label in enumerate(result.labels) for i, t in enumerate(times)]
    for segment in result.segments[1:]:
        t = segment.start
        rows += [(t - 1e-3, BOUNDARY, 0.0), (t, BOUNDARY, 1.0), (t + 1e-3, BOUNDARY, 0.0)]
    return pd.DataFrame(rows, columns=["time", "emotion", "probability"])


def segments_frame(result) -> pd.DataFrame:
    """One row per segment; the "right" columns: how often answers as sure as the segment's were
    right in the checkpoint's cross-validation (its calibration table; empty without one)."""
    rows = []
    for i, s in enumerate(result.segments if result is not None else [], 1):
        share = round(s.probabilities[s.label], 3) if s.probabilities else None
        right = [round(s.calibration[key]["right"], 2) if s.calibration and key in s.calibration else None
                 for key in PROTOCOL_KEYS.values()]
        words = f"{s.text} (set aside: the voice answered alone)" if s.words_set_aside else s.text
        rows.append([i, round(s.start, 2), round(s.end, 2), s.label, share, *right, words])
    return pd.DataFrame(rows, columns=["#", "start (s)", "end (s)", "emotion", "probability",
                                       "right if as sure: new speakers", "right if as sure: new corpus", "words"])


def coloured_transcript(result) -> list[tuple[str, str | None]]:
    """Every segment's words coloured by its emotion; silence as its length."""
    return [(s.text or (f"[{s.end - s.start:.1f} s]" if s.kind == "silence" else "[no words]"), s.label)
            for s in result.segments]


def segment_choices(result) -> list[tuple[str, int]]:
    return [(f"{i + 1}. {s.start:.1f}-{s.end:.1f} s, {s.label}: {s.text[:50] or '(no words)'}", i)
            for i, s in enumerate(result.segments) if s.kind != "silence"]


def _summary(result) -> str:
    speech = [s for s in result.segments if s.kind != "silence"]
    counts = {label: sum(s.label == label for s in speech) for label in result.labels}
    found = ", ".join(f"{n} {label}" for label, n in counts.items() if n)
    how = "Whisper's sentences" if result.segmentation == "asr" else "pauses (voice activity)"
    lines = [f"**{len(speech)} utterance{'s' * (len(speech) != 1)}** in {result.duration:.1f} s, cut at {how}: {found or 'no speech'}. "
             f"Built in {result.timings.get('total', 0):.1f} s."]
    measured_on = {key: s.calibration[key]["measured_on"] for s in speech if s.calibration
                   for key in PROTOCOL_KEYS.values() if key in s.calibration}
    if measured_on:
        where = " and ".join(f"on {words} ({key.replace('_', ' ')})" for key, words in measured_on.items())
        lines.append(f"*Right if as sure*: how often answers as sure as a segment's were right in the cross-validation "
                     f"of this checkpoint's recipe, {where}. A probability is not the chance of being right.")
    return "\n".join(lines + [f"- {note}" for note in result.notes])


def _keep_recording(waveform: np.ndarray) -> str:
    """Write the ingested recording where "open in step by step" can cut segments from it;
    older ones are removed, so the folder never grows without bound."""
    _clips.mkdir(exist_ok=True)
    now = time.time()
    for old in _clips.glob("*.wav"):
        try:
            if now - old.stat().st_mtime > CLIPS_MAX_AGE_SECONDS:
                old.unlink()
        except OSError:
            pass
    with tempfile.NamedTemporaryFile(suffix=".wav", dir=_clips, delete=False) as file:
        sf.write(file, waveform, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return file.name


# --- the tab -------------------------------------------------------------------------------


def build_timeline_tab(service, tabs: gr.Tabs, step_tab: str, step_audio: gr.Audio, step_transcript: gr.Textbox,
                       analyse_then=None) -> None:
    """The tab's components and events, inside the caller's `gr.Tab`. `step_audio` and
    `step_transcript` belong to the step-by-step tab (id `step_tab`); `analyse_then(event)` chains
    that tab's analysis after a segment is opened there."""
    from ser_demo.live import LiveTimeline
    from ser_demo.timeline import timeline

    def recognizer_for(name):
        name = name or service.default
        if name not in service.recognizers:
            raise PredictionError(f"unknown checkpoint {name!r}; choose one of {', '.join(service.recognizers)}")
        return service.recognizers[name]

    def full_timeline(recording, sample_rate, modality, checkpoint_name, read_all_words, progress):
        recognizer = recognizer_for(checkpoint_name)
        if modality not in ("both", "audio"):
            raise PredictionError(f"modality must be 'both' or 'audio', not {modality!r}")
        if modality == "both" and "text" not in recognizer.supported_modalities():
            modality = "audio"
        result = timeline(recognizer, recording, sample_rate, modality=modality, max_seconds=TIMELINE_MAX_SECONDS,
                          transcriber=service.transcriber, asr_unavailable=service.asr_error,
                          progress=lambda fraction, message: progress(fraction, desc=message),
                          read_all_words=bool(read_all_words))
        details = result.to_dict()
        details["checkpoint"] = checkpoint_name or service.default
        return (
            timeline_frame(result),
            segments_frame(result),
            coloured_transcript(result),
            _summary(result),
            gr.Dropdown(choices=segment_choices(result), value=None, interactive=True),
            details,
            _keep_recording(result.waveform),
        )

    def run_timeline(audio, modality, checkpoint_name, read_all_words=False, progress=gr.Progress()):
        """Emotion over time in an English speech recording of up to a few minutes: cuts it into utterances (Whisper's sentences, or pauses), classifies each as angry, happy, sad or neutral, and returns the segments (start, end, text, label, probabilities, and how often answers as sure were right in the checkpoint's cross-validation on new speakers and on a new corpus) and a smoothed probability curve.

        Args:
            audio: the recording: a URL of an audio file (wav, flac, ogg, mp3, webm, m4a; http(s) or a data: URL with base64).
            modality: "both" (Whisper finds the sentences and the model hears and reads them, the default) or "audio" (the voice only, cut at pauses).
            checkpoint_name: which trained model to use, one of the names this app lists; leave it out for the app's default.
            read_all_words: true to read each utterance's words with its voice even when the checkpoint's words gate would set them aside because they carry no emotion it is sure of (the paper's fusion); false by default.
        """
        try:
            return full_timeline(audio, None, modality, checkpoint_name, read_all_words, progress)
        except Exception as err:
            raise _user_error(err) from None

    def live_start():
        return None, None, "", ""

    def live_step(live, chunk, checkpoint_name):
        try:
            if chunk is None:
                return live, gr.skip(), gr.skip(), gr.skip()
            recognizer = recognizer_for(checkpoint_name)
            if live is None:
                live = LiveTimeline(recognizer, service.transcriber, max_seconds=LIVE_MAX_SECONDS)
            words = live.transcript
            rate, samples = chunk
            new = live.feed(samples, rate, wait=POINT_WAIT)
            latest = live.transcript
            if not new:
                return live, gr.skip(), latest if latest != words else gr.skip(), gr.skip()
            return live, live_frame(live, recognizer.labels), latest, live_status(live)
        except Exception as err:
            raise _user_error(err) from None

    def live_stop(live, modality, checkpoint_name, read_all_words, progress=gr.Progress()):
        if live is None or live.duration < 0.5:
            raise gr.Error("The live recording was too short for a timeline: speak for a few seconds.",
                           print_exception=False)
        try:
            waveform = live.finish(timeout=30)
            outputs = full_timeline(waveform, SAMPLE_RATE, modality, checkpoint_name, read_all_words, progress)
        except Exception as err:
            raise _user_error(err) from None
        return (live.transcript, *outputs)

    def open_segment(recording, index, details):
        if recording is None or index is None or not details:
            raise gr.Error("Build a timeline and choose a segment first.", print_exception=False)
        segment = details["segments"][int(index)]
        clip, _ = sf.read(recording, start=int(segment["start"] * SAMPLE_RATE), stop=int(segment["end"] * SAMPLE_RATE),
                          dtype="int16")
        path = Path(recording).with_suffix(f".segment{int(index) + 1}.wav")
        sf.write(path, clip, SAMPLE_RATE, subtype="PCM_16")
        return str(path), segment["text"], gr.Tabs(selected=step_tab)

    def choose_row(details, event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if details and 0 <= row < len(details["segments"]) and details["segments"][row]["kind"] != "silence":
            return row
        return gr.skip()

    gr.Markdown(
        "### Emotion over time\nThe model is made for one utterance at a time; here a long recording is cut where "
        "you pause (and where Whisper ends a sentence), each utterance is classified on its own, and silence is "
        "labelled as silence. **Live**: press record and speak; every second the chart adds what the last "
        f"{3:g} seconds sound like (voice only), and the words follow as Whisper catches up."
    )
    with gr.Row():
        modality = gr.Radio(TIMELINE_MODALITIES, value="both", label="What the model may use", elem_id="timeline-modality")
        checkpoint = gr.Dropdown(list(service.recognizers), value=service.default, label="Model",
                                 interactive=len(service.recognizers) > 1, elem_id="timeline-checkpoint")
    read_all_words = gr.Checkbox(False, label="Read every word", elem_id="timeline-read-all-words",
                                 info="As in the step-by-step tab: tick to read each utterance's words with its "
                                      "voice even where they carry no emotion the text branch is sure of.")
    with gr.Row():
        with gr.Column():
            live_audio = gr.Audio(sources=["microphone"], streaming=True, type="numpy", elem_id="live-audio",
                                  label=f"Live microphone (up to {LIVE_MAX_SECONDS:g} s)")
            live_chart = gr.LinePlot(x="time", y="probability", color="emotion", y_lim=[0, 1], height=260,
                                     color_map=LABEL_COLORS, x_title="seconds", title="Live: the last seconds",
                                     elem_id="live-chart")
            live_state_text = gr.HTML(elem_id="live-status")
            live_transcript = gr.Textbox(label="What Whisper heard so far", lines=3, interactive=False,
                                         elem_id="live-transcript")
        with gr.Column():
            upload = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="timeline-audio",
                              label=f"Or a recording of up to {TIMELINE_MAX_SECONDS / 60:g} minutes")
            button = gr.Button("Show emotion over time", variant="primary", elem_id="timeline-run")
    summary = gr.Markdown(elem_id="timeline-summary")
    chart = gr.LinePlot(x="time", y="probability", color="emotion", y_lim=[0, 1], height=320, x_title="seconds",
                        color_map={**LABEL_COLORS, BOUNDARY: "#cccccc"}, title="Probabilities over time (smoothed)",
                        elem_id="timeline-chart")
    coloured = gr.HighlightedText(label="Segments", color_map={**LABEL_COLORS, "silence": "#eeeeee"},
                                  combine_adjacent=False, elem_id="timeline-text")
    table = gr.Dataframe(label="Segments (click a row to choose it)", interactive=False, elem_id="timeline-table",
                         headers=list(segments_frame(None).columns))
    with gr.Row():
        chosen = gr.Dropdown(label="Segment", choices=[], elem_id="timeline-segment")
        open_button = gr.Button("Open this segment in the step-by-step tab", elem_id="timeline-open")
    with gr.Accordion("All numbers (the same JSON the /timeline API returns)", open=False):
        details = gr.JSON(label="timeline", elem_id="timeline-details")
    recording = gr.State()
    live = gr.State()

    outputs = [chart, table, coloured, summary, chosen, details, recording]
    button.click(run_timeline, [upload, modality, checkpoint, read_all_words], outputs, api_name="timeline",
                 concurrency_limit="default")
    live_outputs = [live, live_chart, live_transcript, live_state_text]
    live_audio.start_recording(live_start, None, live_outputs, api_visibility="private", queue=False)
    live_audio.stream(live_step, [live, live_audio, checkpoint], live_outputs,
                      stream_every=STREAM_EVERY, time_limit=LIVE_MAX_SECONDS, concurrency_limit=LIVE_CONCURRENCY,
                      concurrency_id="live", api_visibility="private", show_progress="hidden")
    live_audio.stop_recording(live_stop, [live, modality, checkpoint, read_all_words], [live_transcript, *outputs],
                              api_visibility="private", concurrency_limit="default")
    table.select(choose_row, [details], chosen, api_visibility="private", queue=False)
    opened = open_button.click(open_segment, [recording, chosen, details], [step_audio, step_transcript, tabs],
                               api_visibility="private")
    if analyse_then is not None:
        analyse_then(opened)
