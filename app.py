"""Speech emotion recognition, step by step: the Gradio app of ser_demo (MSCNN-SPU-ATT).

    python app.py                      # http://0.0.0.0:7860 (GRADIO_SERVER_PORT changes the port)

Speak into the microphone (or upload a clip), and the page shows how MSCNN-SPU-ATT (Peng et al.,
ICASSP 2021) reaches its answer: the transcript Whisper heard, the MFCCs, the SPU statistics,
the attention of each audio context vector over the words, and what really moves the answer
(leave-one-word-out, uniform attention, occlusion of audio windows).

The page composes `ser_demo` and holds no model logic. Everything loads once, at start-up.

Settings (environment):
  SER_CHECKPOINT          the default checkpoint (else the bundled one)
  SER_APP_CHECKPOINTS     more checkpoints a visitor may choose: comma-separated local folders or
                          Hub repo ids, each optionally "label=source"; never typed by a visitor
  SER_ASR_BACKEND / SER_ASR_MODEL   Whisper backend and model (default: offline tiny.en)
  SER_APP_NO_ASR=1        start without speech recognition (transcripts must be typed)
  SER_APP_MAX_SECONDS     longest recording accepted (30)
  SER_APP_MAX_FILE_SIZE   largest upload (10mb)
  SER_APP_CONCURRENCY     requests analysed at once (2); SER_APP_QUEUE_SIZE: waiting ones (32)
  SER_APP_RELEVANCE       audio relevance: occlusion (default), gradient or none
  SER_APP_EXPLANATIONS=0  skip leave-one-word-out, uniform attention and audio relevance
  SER_APP_MAX_WORDS / SER_APP_MAX_CHARACTERS   longest transcript read (100 words / 1000 characters)
  SER_APP_DELETE_CACHE    "frequency,age" in seconds: every `frequency` s, uploads and figures older
                          than `age` s leave Gradio's cache (600,3600); "off" keeps them. `age` must
                          outlast the longest queue wait, or a waiting request loses its upload
  SER_APP_SESSIONS        visitor sessions whose last inputs and outputs Gradio keeps in memory (100)
  SER_DEVICE              auto (default: a GPU when there is one), cpu or cuda: the model and Whisper
  SER_APP_MCP=0           do not serve the analysis as an MCP tool (default: /gradio_api/mcp/)
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Optional

import gradio as gr

from ser_demo.explain import RELEVANCE_METHODS
from ser_demo.memory import limit_malloc_arenas, release_memory
from ser_demo.recognizer import MODALITIES
from ser_demo.service import Service
from ser_demo.summaries import (faithfulness_markdown, notes_markdown, prediction_summary_html, timings_markdown,
                              uniform_markdown)
from ser_demo.utterance import MAX_TRANSCRIPT_CHARACTERS, MAX_TRANSCRIPT_WORDS, PredictionError
from timeline_tab import build_timeline_tab

log = logging.getLogger("ser_demo.app")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
MAX_SECONDS = float(os.environ.get("SER_APP_MAX_SECONDS", "30"))
MAX_FILE_SIZE = os.environ.get("SER_APP_MAX_FILE_SIZE", "10mb")
CONCURRENCY = int(os.environ.get("SER_APP_CONCURRENCY", "2"))
QUEUE_SIZE = int(os.environ.get("SER_APP_QUEUE_SIZE", "32"))
RELEVANCE = os.environ.get("SER_APP_RELEVANCE", "occlusion").strip().lower()
if RELEVANCE not in RELEVANCE_METHODS:  # a typo would otherwise fail every request, silently
    raise SystemExit(f"SER_APP_RELEVANCE must be one of {', '.join(RELEVANCE_METHODS)}, got {RELEVANCE!r}")
EXPLANATIONS = os.environ.get("SER_APP_EXPLANATIONS", "1") not in ("0", "false", "no")
MAX_WORDS = int(os.environ.get("SER_APP_MAX_WORDS", MAX_TRANSCRIPT_WORDS)) or None  # 0: no limit
MAX_CHARACTERS = int(os.environ.get("SER_APP_MAX_CHARACTERS", MAX_TRANSCRIPT_CHARACTERS)) or None
SESSIONS = int(os.environ.get("SER_APP_SESSIONS", "100"))


def _delete_cache(value: str) -> Optional[tuple[int, int]]:
    if value.strip().lower() in ("off", "none", "0", ""):
        return None
    try:
        frequency, age = (int(v) for v in value.split(","))
    except ValueError:
        raise SystemExit(f"SER_APP_DELETE_CACHE must be 'frequency,age' in seconds or 'off', got {value!r}") from None
    return frequency, age


# A Space runs for weeks: without a clean-up every upload and every figure stays on its disk.
DELETE_CACHE = _delete_cache(os.environ.get("SER_APP_DELETE_CACHE", "600,3600"))
MCP = os.environ.get("SER_APP_MCP", "1") not in ("0", "false", "no")
try:  # checked now: a misspelt device would otherwise fail at the first model load
    from ser_demo.devices import parse_device

    DEVICE = parse_device(None)
except ValueError as _err:
    raise SystemExit(str(_err)) from None
MODALITY_CHOICES = [("audio + text", "both"), ("audio only", "audio"), ("text only", "text")]
STEP_TAB = "step-by-step"
GENERIC_ERROR = "Something went wrong while analysing this recording. Please try again, or try another clip."


# --- start-up: everything loads once ---------------------------------------------------------


def load_service(sources: Optional[dict[str, str]] = None, asr: Optional[bool] = None, warm_up: bool = True) -> Service:
    """The checkpoints and Whisper with this page's settings (`ser_demo.service`)."""
    return Service.load(sources, asr, max_transcript_words=MAX_WORDS, max_transcript_characters=MAX_CHARACTERS,
                        warm_up=warm_up_on_an_example if warm_up else None)


def warm_up_on_an_example(service: Service) -> None:
    """The first MFCC call compiles librosa's kernels: pay that at start-up, not on a visitor."""
    clips = sorted(EXAMPLES_DIR.glob("*.wav"))
    if not clips:
        return
    try:
        run_analysis(service, str(clips[0]), "", "both", service.default)
    except Exception:  # a failed warm-up only costs the first visitor some time
        log.exception("warm-up failed")


# --- one request ---------------------------------------------------------------------------


def run_analysis(service: Service, audio, transcript, modality, checkpoint_name, explanations: Optional[bool] = None,
                 read_all_words: bool = False):
    """The library pipeline and the figures, with this page's settings; returns (analysis, images, timings)."""
    from ser_demo.plotting import analyze_and_draw

    return analyze_and_draw(
        service.recognizers[checkpoint_name], audio, transcript, modality, transcriber=service.transcriber,
        asr_unavailable=service.asr_error, max_seconds=MAX_SECONDS, relevance=RELEVANCE,
        explanations=EXPLANATIONS if explanations is None else explanations, word_memory=service.words,
        read_all_words=bool(read_all_words),
    )


def make_analyze(service: Service, explanations: Optional[bool] = None):
    """The request handler, bound to the loaded service. Every failure reaches the page as a
    gr.Error with a message a visitor can act on; no stack trace is ever shown."""
    from ser_demo.asr import TranscriptionUnavailable
    from ser_demo.charts import attention_html
    from ser_demo.ingest import AudioInputError

    def analyze(audio, transcript, modality, checkpoint_name, read_all_words=False):
        """Recognise the emotion in a speech recording (angry, happy, sad or neutral) with MSCNN-SPU-ATT, a multi-scale CNN over MFCCs with attention from the voice to the words (Peng et al., ICASSP 2021), and explain the answer: what Whisper heard, which words the model attends to, how much each word and each moment of audio changes the answer. English speech, up to 30 s.

        Args:
            audio: the recording: a URL of an audio file (wav, flac, ogg, mp3, webm, m4a; http(s) or a data: URL with base64), at most 30 s of speech. May be empty for modality "text".
            transcript: what was said, in English. Leave empty to let Whisper transcribe the recording; give it to test other words on the same voice.
            modality: what the model may use: "both" (voice and words, the default), "audio" (voice only) or "text" (words only).
            checkpoint_name: which trained model to use, one of the names this app lists; leave it out for the app's default.
            read_all_words: true to read the words with the voice even when the checkpoint's words gate would set them aside because they carry no emotion it is sure of (the paper's fusion); false by default.
        Returns:
            1. the four emotion probabilities; 2. a summary table (HTML), with how often answers as sure were right in the checkpoint's cross-validation when it carries that table; 3. bars of the probabilities (HTML); 4. the transcript used; 5. an image of the MFCC features (and Whisper encoder states) over time with the moments that drive the decision; 6. heat maps of the SPU statistics (HTML); 7. a table of attention weights and leave-one-word-out influence per word (HTML); 8. the transcript highlighted by attention (HTML); 9. the prediction with uniform attention; 10. deletion curves of the words (an SVG chart in HTML) and 11. what they say; 12. deletion curves of the audio windows (SVG in HTML) and 13. what they say; 14. time per stage; 15. notes (e.g. words without a word vector); 16. all numbers as JSON: label, probabilities, transcript, tokens, attention, word_influence, uniform_attention_probabilities, audio_relevance, faithfulness, token_times, timings, calibration.
        """
        checkpoint_name = checkpoint_name or service.default
        try:
            if checkpoint_name not in service.recognizers:
                raise PredictionError(
                    f"unknown checkpoint {checkpoint_name!r}; choose one of {', '.join(service.recognizers)}"
                )
            if modality not in MODALITIES:
                raise PredictionError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
            analysis, images, timings = run_analysis(service, audio, transcript, modality, checkpoint_name,
                                                     explanations, read_all_words)
        except (AudioInputError, PredictionError, TranscriptionUnavailable) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception:
            log.exception("analysis failed")
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None
        finally:
            release_memory()
        e = analysis.explanation
        details = analysis.to_dict()
        details.update(checkpoint=checkpoint_name, timings={k: round(v, 4) for k, v in timings.items()})
        return (
            {label: float(p) for label, p in zip(e.labels, e.probabilities)},
            prediction_summary_html(analysis),
            images.get("probabilities"),
            # words the gate set aside stay in the box: the notes say why the voice answered alone
            (analysis.transcript or analysis.words_set_aside) if analysis.modality != "audio" else (transcript or ""),
            images.get("mfcc"),
            images.get("spu"),
            images.get("attention"),
            attention_html(e.tokens, e.attention, e.statistics, e.word_influence, analysis.token_times),
            uniform_markdown(analysis),
            images.get("word_curves"),
            faithfulness_markdown(analysis, "words"),
            images.get("window_curves"),
            faithfulness_markdown(analysis, "windows"),
            timings_markdown(analysis, timings),
            notes_markdown(analysis),
            details,
        )

    return analyze


# --- the page ------------------------------------------------------------------------------

INTRO = """
# How does a network hear emotion? MSCNN-SPU-ATT, step by step
Record a sentence (or upload a clip, or click an example), then press **Analyse**. The model
(Peng et al., ICASSP 2021) listens to **how** you speak (the paper hears MFCC features of the audio;
the bundled model hears the states of Whisper's encoder) and reads **what** you say (the transcript),
and guesses one of four emotions: angry, happy, sad, neutral.
"""

EXPLAIN = {
    "probabilities": "The model's final answer: one probability per emotion, adding up to 1. The grey "
                     "hatched bars show what it would answer if attention weighted every word equally. A "
                     "checkpoint may mix in a second, simpler opinion on the audio: a linear classifier on the "
                     "whole clip's average sound (the bundled one does not); the line under the bars then "
                     "gives both answers and how much each weighs.",
    "mfcc": "The paper's model hears MFCCs, which describe the sound's colour every 10 ms (32 numbers "
            "per frame); delta and delta-delta show how fast they change. A model that listens through "
            "Whisper's encoder shows those states instead or as well: 384 numbers per 20 ms, from the "
            "encoder Whisper runs for the transcript. The bundled model reads them after the second of "
            "the encoder's four blocks, which tells emotions apart in new voices better than its output. "
            "The bottom row hides short pieces of audio one at a time (in every map at once): where "
            "hiding a piece lowers the answer's probability, that piece mattered (green).",
    "spu": "Convolutions of several window sizes (MFCC: 30-90 ms; Whisper states: 20-100 ms) slide over "
           "each input with 128 filters each. The SPU summarises each filter over the whole clip in "
           "three ways: its maximum, its mean and its spread (std). Same colour scale in all panels.",
    "attention": "Each audio summary (max, mean, std) becomes a *context vector* that decides how much "
                 "to look at each word; each row sums to 1. Attention is not the same as importance, so "
                 "the bottom row removes one word at a time and measures how much the answer changes.",
    "faithfulness": "**Is attention an explanation here?** Remove the words one at a time, most important "
                    "first, and watch the answer's probability: if the model really relies on the words an "
                    "explanation ranks first, the curve on the left falls fast (and the one on the right, with "
                    "only those words kept, stays high). Each ranking is compared with random orders.",
    "window_faithfulness": "The same test for the sound: hide the 0.25 s windows that occlusion found most "
                           "important first, or random ones, and watch the answer's probability.",
    "timing": "Where the time goes, stage by stage. Whisper transcribes while the audio features are computed, "
              "so those two stages overlap.",
}


def _example_rows(default_checkpoint_name: str) -> tuple[list[list], list[str]]:
    """Rows (audio, transcript, modality, checkpoint, read every word) and a short label for each."""
    listing = EXAMPLES_DIR / "examples.json"
    if not listing.is_file():
        return [], []
    rows, labels = [], []
    for item in json.loads(listing.read_text()):
        path = EXAMPLES_DIR / item["file"]
        if path.is_file():
            rows.append([str(path), item["transcript"], "both", default_checkpoint_name, False])
            labels.append(f"{item.get('emotion', path.stem)}: \u201c{item['transcript']}\u201d")
    return rows, labels


def build_demo(service: Service) -> gr.Blocks:
    analyze = make_analyze(service)
    with (gr.Blocks(title="Speech emotion, step by step (MSCNN-SPU-ATT)", delete_cache=DELETE_CACHE) as demo,
          gr.Tabs(elem_id="tabs") as tabs, gr.Tab("Step by step", id=STEP_TAB, elem_id="step-tab")):
        gr.Markdown(INTRO)
        if service.asr_error:
            gr.Markdown(f"**Speech recognition is off** ({html.escape(service.asr_error)}): "
                        "type what was said in the transcript box.")
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                 label=f"Your recording (up to {MAX_SECONDS:g} s)", elem_id="audio-input")
                transcript = gr.Textbox(
                    label="Transcript", lines=2, elem_id="transcript", max_length=MAX_CHARACTERS,
                    info="Filled in by Whisper when empty. Edit it and press Analyse again to see what the words do.",
                    placeholder="(empty: Whisper transcribes the recording)",
                )
                with gr.Row():
                    modality = gr.Radio(MODALITY_CHOICES, value="both", label="What the model may use",
                                        elem_id="modality")
                    checkpoint = gr.Dropdown(list(service.recognizers), value=service.default,
                                             label="Model", interactive=len(service.recognizers) > 1,
                                             elem_id="checkpoint")
                read_all_words = gr.Checkbox(
                    False, label="Read every word", elem_id="read-all-words",
                    info="The model sets aside words that carry no emotion its text branch is sure of, and the "
                         "voice answers alone. Tick to read them anyway, as the paper's model does, and see what "
                         "they change.")
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                examples_slot = gr.Column()  # filled below, once the outputs exist
            with gr.Column(scale=1):
                gr.Markdown("### 1. The answer\n" + EXPLAIN["probabilities"])
                label = gr.Label(num_top_classes=4, label="Emotion", elem_id="label")
                summary = gr.HTML(label="summary", show_label=False, elem_id="summary")
                probabilities = gr.HTML(label="Class probabilities", show_label=False, elem_id="probabilities-plot")
        notes = gr.Markdown(label="notes", elem_id="notes")
        gr.Markdown("### 2. The sound: MFCC, delta, delta-delta, and which moments matter\n" + EXPLAIN["mfcc"])
        # JPEG: 1 ms to encode this 1000 x 370 figure, against 18 ms for PNG, and half the bytes; at
        # Gradio's quality the heat maps and labels read the same.
        mfcc = gr.Image(label="MFCC features over time", format="jpeg", elem_id="mfcc-plot", buttons=[], show_label=False,
                        interactive=False)
        gr.Markdown(EXPLAIN["window_faithfulness"])
        window_curves = gr.HTML(label="Deletion curves of the audio windows", show_label=False,
                                elem_id="window-curves-plot")
        window_faithfulness = gr.Markdown(label="audio faithfulness", elem_id="window-faithfulness")
        gr.Markdown("### 3. Statistical pooling (SPU): three views of the same filters\n" + EXPLAIN["spu"])
        spu = gr.HTML(label="SPU statistics per kernel size", show_label=False, elem_id="spu-plot")
        gr.Markdown("### 4. Attention over the words, and what the words really do\n" + EXPLAIN["attention"])
        attention = gr.HTML(label="Attention weights and leave-one-word-out", show_label=False,
                            elem_id="attention-plot")
        highlighted = gr.HTML(label="highlighted words", show_label=False, elem_id="attention-text")
        uniform = gr.Markdown(label="uniform attention", elem_id="uniform")
        gr.Markdown(EXPLAIN["faithfulness"])
        word_curves = gr.HTML(label="Deletion curves of the words", show_label=False, elem_id="word-curves-plot")
        word_faithfulness = gr.Markdown(label="word faithfulness", elem_id="word-faithfulness")
        gr.Markdown("### 5. Timing\n" + EXPLAIN["timing"])
        timings = gr.Markdown(label="timings", elem_id="timings")
        with gr.Accordion("All numbers (the same JSON the API returns)", open=False):
            details = gr.JSON(label="details", elem_id="details")

        outputs = [label, summary, probabilities, transcript, mfcc, spu, attention, highlighted,
                   uniform, word_curves, word_faithfulness, window_curves, window_faithfulness, timings, notes, details]
        inputs = [audio, transcript, modality, checkpoint, read_all_words]
        # Progress shows on the answer alone, as elapsed time without the animated overlay: the
        # animation took the visitor's browser CPU that, on a small machine, the analysis needs
        # (headless Chromium on the server's 2 cores: click -> visible 908 -> 798 ms median).
        progress = dict(show_progress_on=label, show_progress="minimal")
        button.click(analyze, inputs, outputs, api_name="analyze", concurrency_limit="default", **progress)
        transcript.submit(analyze, inputs, outputs, api_visibility="private", **progress)
        # A new recording gets a new transcript: clear the old one (examples set both themselves).
        for event in (audio.stop_recording, audio.upload, audio.clear):
            event(lambda: "", None, transcript, api_visibility="private", queue=False)
        rows, example_labels = _example_rows(service.default)
        if rows:
            with examples_slot:
                gr.Examples(rows, inputs, outputs, fn=analyze, run_on_click=True, cache_examples=False,
                            example_labels=example_labels,
                            label="Examples: synthetic speech made with espeak-ng (the model, trained on human voices, "
                                  "hears the angry and the sad one as meant, the happy and the neutral robot voices "
                                  "as angry; switch to text only to see the words' branch). "
                                  "Click one to analyse it.")
        gr.Markdown(
            "<small>MSCNN-SPU-ATT: Peng, Lu, Pan, Liu, *Efficient Speech Emotion Recognition Using Multi-Scale "
            "CNN and Attention*, ICASSP 2021. Attention is not explanation: Jain & Wallace 2019; "
            "Wiegreffe & Pinter 2019. The same analysis is available through the API (see the footer).</small>"
        )
    with demo, tabs, gr.Tab("Over time", id="over-time", elem_id="over-time-tab"):
        build_timeline_tab(service, tabs, STEP_TAB, audio, transcript,
                           analyse_then=lambda event: event.then(analyze, inputs, outputs, api_visibility="private"))
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def mcp_returns_each_output() -> None:
    """Gradio 6.31's MCP bridge hands an agent the result of a queued multi-output function as ONE
    text (the repr of the whole tuple) unless the agent asked for progress updates; with them it
    gives one content item per output (text, or the image itself for a figure). Make both paths
    give the latter, so every agent gets the figures as images and the numbers as their own text."""
    from gradio import mcp as gradio_mcp

    bridge = getattr(gradio_mcp, "GradioMCPServer", None)
    original = getattr(bridge, "_execute_tool_without_progress", None)
    if original is None or getattr(original, "each_output", False):
        return

    async def each_output(self, job):
        result = await original(self, job)
        return list(result[0]) if len(result) == 1 and isinstance(result[0], tuple) else result

    each_output.each_output = True
    bridge._execute_tool_without_progress = each_output


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_malloc_arenas(CONCURRENCY + 1)
    service = load_service()
    demo = build_demo(service)
    if MCP:
        mcp_returns_each_output()
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_SIZE,
        show_error=False,
        allowed_paths=[str(EXAMPLES_DIR)],
        # Gradio keeps every session's last inputs and outputs (~1 MB here) for up to 10,000
        # sessions by default; the page holds no gr.State, so a few recent ones are plenty.
        state_session_capacity=SESSIONS,
        mcp_server=MCP,  # agents call /analyze as the MCP tool "analyze" (README: "Agents")
    )


if __name__ == "__main__":
    main()
