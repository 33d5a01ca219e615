"""Benchmark of the app: `python bench/bench_app.py [--runs 7] [--checkpoint DIR] [--no-http]`.

For a 5 s recording it prints
  - end-to-end latency from audio to all outputs (the page's own handler: ingestion, Whisper,
    features, model, explanations, plots, HTML), median of repeated runs, split by stage, with
    and without the explanations;
  - the same request through HTTP with gradio_client against `python app.py` (what a visitor
    waits for, minus the browser), and that process's start-up time and resident memory;
  - start-up time and memory of the in-process service (models + Whisper + warm-up).
Targets on a 2-core CPU: < 1.5 s end to end with explanations, < 1 s without.

Without the bundled checkpoint (and no SER_CHECKPOINT) a random-weight checkpoint is used:
latency does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

STAGES = ("ingest", "encoder", "asr", "features", "model", "explanations", "faithfulness", "plots", "total")


def recording(seconds: float = 5.0) -> str:
    """A 5 s clip: the test sentence (espeak-ng, 4.1 s) padded with silence."""
    import numpy as np
    import soundfile as sf

    speech, rate = sf.read(ROOT / "tests" / "fixtures" / "speech.wav", dtype="float32")
    clip = np.zeros(int(seconds * rate), np.float32)
    clip[: min(len(speech), len(clip))] = speech[: len(clip)]
    path = Path(tempfile.mkdtemp(prefix="ser-bench-")) / "five-seconds.wav"
    sf.write(path, clip, rate)
    return str(path)


def checkpoint(given: str | None) -> str:
    from ser_demo.recognizer import default_checkpoint

    if given or default_checkpoint():
        return given or default_checkpoint()
    import torch

    from ser_demo.model import MSCNN_SPU_ATT, ModelConfig

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="ser-bench-")) / "random-mscnn-spu-att"
    MSCNN_SPU_ATT(ModelConfig()).save_pretrained(folder)
    print(f"(no bundled checkpoint: random weights in {folder})")
    return str(folder)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def median_stages(samples: list[dict]) -> dict:
    return {k: statistics.median(s.get(k, 0.0) for s in samples) for k in STAGES}


def print_stages(title: str, samples: list[dict]) -> None:
    m = median_stages(samples)
    parts = "  ".join(f"{k} {m[k] * 1000:.0f}" for k in STAGES[:-1])
    print(f"{title:<34} total {m['total'] * 1000:6.0f} ms   ({parts} ms; median of {len(samples)})")


def in_process(clip: str, runs: int) -> None:
    start = time.perf_counter()
    import app

    service = app.load_service()
    startup = time.perf_counter() - start
    current, peak = rss_mb(os.getpid())
    print(f"in-process start-up (imports, models, Whisper, warm-up): {startup:.2f} s; "
          f"RSS {current:.0f} MB (peak {peak:.0f} MB); {service.startup}")
    name = service.default
    for explanations in (True, False):
        handler = app.make_analyze(service, explanations=explanations)
        samples = []
        for _ in range(runs + 1):
            t = time.perf_counter()
            out = handler(clip, "", "both", name)
            wall = time.perf_counter() - t
            timings = dict(out[-1]["timings"])
            timings["total"] = wall  # the handler's own wall time, HTML and JSON included
            samples.append(timings)
        print_stages("end to end, " + ("with explanations" if explanations else "without explanations"),
                     samples[1:])
        if not explanations:
            break
    typed = app.make_analyze(service)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        out = typed(clip, "I can't believe you did that again, this is wonderful news", "both", name)
        timings = dict(out[-1]["timings"], total=time.perf_counter() - t)
        samples.append(timings)
    print_stages("typed transcript (no Whisper)", samples)


def over_http(clip: str, runs: int, ckpt: str) -> None:
    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", SER_CHECKPOINT=ckpt)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.perf_counter() - start > 300:
                    raise RuntimeError("app.py did not start")
                time.sleep(0.1)
        startup = time.perf_counter() - start
        current, peak = rss_mb(process.pid)
        print(f"`python app.py` start-up until the page answers: {startup:.2f} s; "
              f"RSS {current:.0f} MB (peak {peak:.0f} MB)")
        client = Client(url, verbose=False, analytics_enabled=False)
        name = Path(ckpt).name if Path(ckpt).is_dir() else ckpt
        walls, samples = [], []
        for i in range(runs + 1):
            t = time.perf_counter()
            out = client.predict(handle_file(clip), "", "both", name, api_name="/analyze")
            if i:
                walls.append(time.perf_counter() - t)
                samples.append(out[-1]["timings"])
        print(f"{'through HTTP (gradio_client)':<34} total {statistics.median(walls) * 1000:6.0f} ms   "
              f"(server side {median_stages(samples)['total'] * 1000:.0f} ms; median of {runs})")
        current, peak = rss_mb(process.pid)
        print(f"app RSS after {runs + 1} requests: {current:.0f} MB (peak {peak:.0f} MB)")
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--no-http", action="store_true", help="skip the `python app.py` measurements")
    args = parser.parse_args()
    import torch

    ckpt = checkpoint(args.checkpoint)
    os.environ["SER_CHECKPOINT"] = ckpt
    clip = recording()
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"load average {os.getloadavg()[0]:.1f}; checkpoint {ckpt}; 5.0 s recording")
    in_process(clip, args.runs)
    if not args.no_http:
        over_http(clip, args.runs, ckpt)


if __name__ == "__main__":
    main()
