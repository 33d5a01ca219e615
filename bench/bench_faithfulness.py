"""Benchmark of the faithfulness measures on the page: `python bench/bench_faithfulness.py [--runs 9]`.

For a 5 s recording (the test sentence padded with silence) and its typed transcript it prints,
as medians of repeated runs, what the page's analysis spends on the explanations it already had
(leave-one-word-out, uniform attention, occlusion) and what faithfulness adds: the word deletion
curves, the audio-window curves, and drawing their two charts (inline SVG).
Target on a 2-core CPU: faithfulness adds <= 150 ms (computation and figures together).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_app import checkpoint, recording  # noqa: E402  (this folder is on sys.path)

TRANSCRIPT = "I can't believe you did that again, this is wonderful news"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()

    import torch

    from ser_demo import deletion_curves as D
    from ser_demo import faithfulness as F
    from ser_demo.analysis import analyze
    from ser_demo.charts import deletion_curves_svg
    from ser_demo.explain import explain
    from ser_demo.recognizer import EmotionRecognizer

    recognizer = EmotionRecognizer.from_pretrained(checkpoint(args.checkpoint))
    clip = recording(5.0)
    analysis = analyze(recognizer, clip, TRANSCRIPT, "both")  # warm-up (librosa, torch kernels)
    heard = recognizer.listen(clip, None, TRANSCRIPT, "both")
    inputs = recognizer.prepare(heard.waveform, heard.transcript, "both")
    e = explain(recognizer, inputs)
    statistics_ = torch.as_tensor(e.audio_statistics)[None]
    windows, relevance = F.explained_windows(e)
    wall = {k: [] for k in ("analysis", "explanations", "faithfulness", "words", "windows", "figures")}
    cpu = {k: [] for k in ("explain", "faithfulness", "words", "windows", "figures")}
    wall["explain"] = []

    def timed(name, work):
        w, c = time.perf_counter(), time.process_time()
        result = work()
        wall[name].append(time.perf_counter() - w)
        cpu[name].append(time.process_time() - c)
        return result

    for _ in range(args.runs):
        a = analyze(recognizer, clip, TRANSCRIPT, "both")
        wall["analysis"].append(sum(a.timings.values()))
        wall["explanations"].append(a.timings["explanations"])
        timed("explain", lambda: explain(recognizer, inputs))
        timed("faithfulness", lambda: F.measure(recognizer.model, inputs.batch, e))
        words = timed("words", lambda: D.word_deletion_curves(
            recognizer.model, inputs.batch, e.target, attention=e.attention, permutations=6,
            audio_statistics=statistics_))
        cut = timed("windows", lambda: D.window_deletion_curves(
            recognizer.model, inputs.batch, e.target, windows, relevance, frame_seconds=e.frame_seconds,
            sufficiency=False))
        timed("figures", lambda: (deletion_curves_svg(words, e.label), deletion_curves_svg(cut, e.label)))
    ms = {k: 1000 * statistics.median(v) for k, v in wall.items()}
    cpu_ms = {k: 1000 * statistics.median(v) for k, v in cpu.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    duration = len(heard.waveform) / 16000
    print(f"{duration:.2f} s of speech after trimming, {len(e.tokens)} words, {len(windows)} windows of 0.25 s; "
          f"median of {args.runs} runs; {torch.get_num_threads()} torch threads; load average {load:.1f}")
    print(f"  analysis (features, model, explanations, faithfulness): {ms['analysis']:.0f} ms")
    print(f"  explanations already on the page:                       {ms['explanations']:.0f} ms")
    print(f"  explain() alone (model, leave-one-word-out, uniform, occlusion): {ms['explain']:.0f} ms wall, "
          f"{cpu_ms['explain']:.0f} ms CPU")
    print(f"  faithfulness (words and windows):  {ms['faithfulness']:.0f} ms wall, {cpu_ms['faithfulness']:.0f} ms CPU"
          f"  (words {ms['words']:.0f} / {cpu_ms['words']:.0f}, windows {ms['windows']:.0f} / {cpu_ms['windows']:.0f})")
    print(f"  its two figures:                   {ms['figures']:.0f} ms wall, {cpu_ms['figures']:.0f} ms CPU")
    added, added_cpu = ms["faithfulness"] + ms["figures"], cpu_ms["faithfulness"] + cpu_ms["figures"]
    print(f"faithfulness adds {added:.0f} ms wall, {added_cpu:.0f} ms CPU to the page; target <= 150 ms: "
          f"{'met' if added <= 150 else 'not met'} in wall time, {'met' if added_cpu <= 150 else 'not met'} in CPU time "
          f"(wall time counts the waits for a core under load {load:.1f})")

if __name__ == "__main__":
    main()
