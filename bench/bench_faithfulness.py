"""Benchmark of the faithfulness measures on the page: `python bench/bench_faithfulness.py [--runs 9]`.

For a 5 s recording (the test sentence padded with silence) and its typed transcript it prints,
as medians of repeated runs, what the page's analysis spends on the explanations it already had
(leave-one-word-out, uniform attention, occlusion) and what faithfulness adds: the word deletion
curves, the audio-window curves, and drawing their two figures.
Target on a 2-core CPU: faithfulness adds <= 150 ms (computation and figures together).
"""

from __future__ import annotations

import argparse
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

    from ser_demo import faithfulness as F
    from ser_demo.explain import analyze, explain
    from ser_demo.plotting import plot_deletion_curves, render
    from ser_demo.recognizer import EmotionRecognizer

    recognizer = EmotionRecognizer.from_pretrained(checkpoint(args.checkpoint))
    clip = recording(5.0)
    analysis = analyze(recognizer, clip, TRANSCRIPT, "both")  # warm-up (librosa, torch kernels)
    heard = recognizer.listen(clip, None, TRANSCRIPT, "both")
    inputs = recognizer.prepare(heard.waveform, heard.transcript, "both")
    e = explain(recognizer, inputs)
    statistics_ = torch.as_tensor(e.audio_statistics)[None]
    windows, relevance = F.explained_windows(e)
    samples = {k: [] for k in ("explanations", "faithfulness", "words", "windows", "figures", "analysis")}
    for _ in range(args.runs):
        a = analyze(recognizer, clip, TRANSCRIPT, "both")
        samples["analysis"].append(sum(v for k, v in a.timings.items()))
        samples["explanations"].append(a.timings["explanations"])
        samples["faithfulness"].append(a.timings["faithfulness"])
        t = time.perf_counter()
        words = F.word_deletion_curves(recognizer.model, inputs.batch, e.target, attention=e.attention,
                                       permutations=6, audio_statistics=statistics_)
        samples["words"].append(time.perf_counter() - t)
        t = time.perf_counter()
        cut = F.window_deletion_curves(recognizer.model, inputs.batch, e.target, windows, relevance,
                                       frame_seconds=e.frame_seconds)
        samples["windows"].append(time.perf_counter() - t)
        t = time.perf_counter()
        render(plot_deletion_curves(words, e.label))
        render(plot_deletion_curves(cut, e.label))
        samples["figures"].append(time.perf_counter() - t)
    ms = {k: 1000 * statistics.median(v) for k, v in samples.items()}
    duration = len(heard.waveform) / 16000
    print(f"{duration:.2f} s of speech after trimming, {len(e.tokens)} words, {len(windows)} windows of 0.25 s; "
          f"median of {args.runs} runs; {torch.get_num_threads()} torch threads")
    print(f"  analysis (features, model, explanations, faithfulness): {ms['analysis']:.0f} ms")
    print(f"  explanations already on the page:                       {ms['explanations']:.0f} ms")
    print(f"  faithfulness in the analysis:                           {ms['faithfulness']:.0f} ms"
          f"  (words {ms['words']:.0f} ms, windows {ms['windows']:.0f} ms)")
    print(f"  its two figures:                                        {ms['figures']:.0f} ms")
    added = ms["faithfulness"] + ms["figures"]
    print(f"faithfulness adds {added:.0f} ms to the page (target <= 150 ms): {'met' if added <= 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
