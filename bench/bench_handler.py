"""Where the page's handler spends its time: `python bench/bench_handler.py [--runs 5] [--typed]`.

Runs the app's own handler (app.make_analyze, in this process) on a 5 s recording, twice per run:
one after the other (Whisper, then the audio features: `EmotionRecognizer.transcribe_alongside`
off) and as the app runs it (Whisper in a thread of its own while the audio features are
computed). From the first it prints, as medians over the runs, the CPU time (time.process_time:
every thread of this process) and the wall time of each piece of work: ingestion, the model's
Whisper encoder pass, Whisper's ASR (its own encoder pass over a window fitted to the clip, then
decoding with word times), MFCCs, the GE2E speaker embedding, the model, leave-one-word-out,
occlusion, the deletion curves, the figures and HTML views, and what Gradio then does with the
outputs (PNG encoding, in `gr.Image.postprocess`), and the size of what goes to the browser. For both it prints the
handler's CPU and wall time. On a machine shared with other work wall time is inflated; CPU time
is the fair figure. The load average is printed with it.
Targets (issue 12): click -> all visible <= 0.9 s; figures <= 150 ms of the handler.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench_app import recording  # noqa: E402  (this folder is on sys.path)

TRANSCRIPT = "I can't believe you did that again, this is wonderful news"


class Clock:
    """CPU and wall time spent inside wrapped functions, per name, for the current run."""

    def __init__(self):
        self.cpu, self.wall = defaultdict(float), defaultdict(float)
        self.own_cpu = defaultdict(float)  # time.thread_time: this thread's CPU only, right while threads overlap
        self.overlapped: set[str] = set()  # names timed (at least once) while Whisper was transcribing
        self.transcribing = 0  # Whisper calls in flight
        self.inside = threading.local()  # names of the wrapped calls this thread is in
        self.names: list[str] = []  # in the order they were wrapped: the order printed

    def wrap(self, owner, attribute: str, name: str, only_inside: str | None = None) -> None:
        """Time owner.attribute under `name`; with `only_inside`, only calls made from within the
        wrapped call of that name (e.g. the encoder pass Whisper's transcribe makes itself)."""
        original = getattr(owner, attribute)
        self.names += [name] if name not in self.names else []

        def timed(*args, **kwargs):
            stack = self.inside.__dict__.setdefault("names", [])
            if only_inside is not None and only_inside not in stack:
                return original(*args, **kwargs)
            c, t, w = time.process_time(), time.thread_time(), time.perf_counter()
            stack.append(name)
            whisper = name == ASR
            self.transcribing += whisper
            overlapped = self.transcribing > 1 or (self.transcribing and not whisper and ASR not in stack)
            try:
                return original(*args, **kwargs)
            finally:
                stack.pop()
                self.transcribing -= whisper
                if overlapped or (self.transcribing and not whisper and ASR not in stack):
                    self.overlapped.add(name)
                self.cpu[name] += time.process_time() - c
                self.own_cpu[name] += time.thread_time() - t
                self.wall[name] += time.perf_counter() - w

        setattr(owner, attribute, timed)


ASR = "Whisper (ASR), in all"
ASR_WINDOW = "  of it: its own pass, window fitted to the clip"


def payload_bytes(out, image) -> int:
    """What goes to the browser: the PNG file of the MFCC figure plus the JSON of everything else."""
    size = 0
    for value in out:
        if hasattr(value, "shape"):  # the figure: Gradio writes a PNG the browser then fetches
            size += Path(image.postprocess(value).path).stat().st_size
        elif value is not None:
            size += len(json.dumps(value))
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--typed", action="store_true", help="type the transcript (no Whisper decoding)")
    args = parser.parse_args()

    import gradio as gr
    import torch

    import app
    from ser_demo import charts, explain, faithfulness, ingest, plotting, recognizer

    load_before = os.getloadavg()
    service = app.load_service()
    rec = service.recognizers[service.default]
    clock = Clock()
    clock.wrap(ingest, "load_audio", "ingestion")
    if rec.encoder is not None:
        clock.wrap(rec.encoder, "encode", f"Whisper encoder, the model's pass ({rec.encoder.context})")
    if service.transcriber is not None:
        clock.wrap(service.transcriber, "transcribe", ASR)
        model = getattr(service.transcriber, "model", None)
        if model is not None and hasattr(type(model), "__mro__") and len(type(model).__mro__) > 1:
            clock.wrap(type(model).__mro__[1], "encode", ASR_WINDOW, only_inside=ASR)  # WhisperModel's own
    if rec.speaker_embedder is not None:
        clock.wrap(rec.speaker_embedder, "embed", "speaker embedding (GE2E)")
    clock.wrap(recognizer, "mfcc_features", "MFCC")
    clock.wrap(recognizer, "collate", "collate")
    clock.wrap(explain, "leave_one_word_out", "leave-one-word-out")
    clock.wrap(explain, "occlusion_relevance", "occlusion")
    clock.wrap(faithfulness, "measure", "deletion curves")
    clock.wrap(plotting, "plot_mfcc", "MFCC figure: update")
    clock.wrap(plotting, "spu_html", "SPU heat maps (HTML)")
    clock.wrap(plotting, "render", "MFCC figure: draw")
    clock.wrap(plotting, "draw_heat_maps", "MFCC figure: heat maps, while Whisper transcribes")
    clock.wrap(plotting, "finish_mfcc", "MFCC figure: the relevance row")
    clock.wrap(app, "prediction_summary_html", "HTML views")  # app imported it from summaries
    clock.wrap(charts, "attention_html", "HTML views")  # app.make_analyze imports it from charts
    clock.wrap(plotting, "attention_table_html", "HTML views")  # draw_analysis calls plotting's name
    handler = app.make_analyze(service)
    clip = recording(5.0)
    image = gr.Image(format="png")
    transcript = TRANSCRIPT if args.typed else ""
    handler(clip, transcript, "both", service.default)  # warm-up
    # per mode (False: one after the other, True: as served) and stage: lists over the runs
    cpu, own_cpu, wall = (defaultdict(lambda: defaultdict(list)) for _ in range(3))  # own: time.thread_time
    totals, payload, overlapping = defaultdict(list), [], set()
    for _ in range(args.runs):
        for alongside in (False, True):
            rec.transcribe_alongside = alongside
            clock.cpu.clear(), clock.own_cpu.clear(), clock.wall.clear(), clock.overlapped.clear()
            c, w = time.process_time(), time.perf_counter()
            out = handler(clip, transcript, "both", service.default)
            totals[alongside].append((time.process_time() - c, time.perf_counter() - w))
            c, w = time.process_time(), time.perf_counter()
            image.postprocess(out[4])  # what Gradio does with the MFCC figure after the handler
            clock.cpu["Gradio: PNG encoding"] += time.process_time() - c
            clock.wall["Gradio: PNG encoding"] += time.perf_counter() - w
            for name in clock.cpu:
                cpu[alongside][name].append(clock.cpu[name])
                own_cpu[alongside][name].append(clock.own_cpu.get(name, clock.cpu[name]))
                if name in clock.overlapped or (clock.overlapped and name in (ASR, ASR_WINDOW)):
                    overlapping.add(name)  # its process time counts the other thread's work too
                wall[alongside][name].append(clock.wall[name])
            payload.append(payload_bytes(out, image))
    rec.transcribe_alongside = True

    def median(table, alongside, name):
        values = table[alongside].get(name)
        return f"{statistics.median(values) * 1000:7.0f}" if values else "      -"
    print(f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads; load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; 5 s recording, transcript "
          f"{'typed' if args.typed else 'by Whisper'}; checkpoint {service.default}")
    print(f"median of {args.runs} runs, in ms. CPU = time.process_time (all threads of the process); as served,")
    print("'alongside' marks the stages that overlap Whisper's thread, whose CPU time cannot be told apart")
    print(f"  {'stage':<52} {'one after the other':>19} | {'as served':>19}")
    print(f"  {'':<52} {'CPU':>7} {'wall':>11} | {'CPU':>7} {'wall':>11}")
    for name in [n for n in clock.names + ["Gradio: PNG encoding"] if n in cpu[False] or n in cpu[True]]:
        print(f"  {name:<52} {median(cpu, False, name)} {median(wall, False, name)}     |"
              f" {'alongside' if name in overlapping else median(cpu, True, name) + '  '}{median(wall, True, name)}")
    for alongside, what in ((False, "one after the other"), (True, "as served")):
        names = [n for n in cpu[alongside] if n.startswith(("MFCC figure", "SPU heat"))]
        figures = sum(statistics.median(own_cpu[alongside][n]) for n in names)  # matplotlib: one thread
        print(f"figures, {what}: {figures * 1000:.0f} ms CPU (target <= 150 ms; {', '.join(names)}) "
              f"+ PNG encoding in Gradio {statistics.median(cpu[alongside]['Gradio: PNG encoding']) * 1000:.0f} ms")
    print(f"to the browser: {statistics.median(payload) / 1000:.0f} kB (JSON of the outputs + the figure's PNG)")
    for alongside, what in ((False, "one after the other"), (True, "Whisper alongside the audio features (as served)")):
        c = statistics.median(x for x, _ in totals[alongside])
        w = statistics.median(x for _, x in totals[alongside])
        print(f"handler, {what:<48} {c * 1000:6.0f} ms CPU {w * 1000:6.0f} ms wall")


if __name__ == "__main__":
    main()
