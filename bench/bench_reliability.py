"""Reliability of the app under strangers: `python bench/bench_reliability.py [--soak 300] [--clients 64]`.

Starts `python app.py` (its own upload cache folder, offline) and drives its /analyze API with
gradio_client, every request a new visitor session, then prints:
  - hostile transcript: a 100,000-character transcript, time to its refusal and the server's
    resident memory before and after;
  - soak: N sequential requests, good and bad mixed, after a warm-up: resident memory (after the
    warm-up, at the end, growth per request over the last 100), the upload cache (bytes and files),
    open file descriptors and threads, and any answer that was not the expected one;
  - load: C clients at once, one request each, good and bad mixed: how many were answered
    correctly, refused as "queue full", given their own clear error, or lost or mixed up, and the
    time to an answer or refusal (median, p95).
The tests (tests/test_reliability.py) run the same code, shorter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SPEECH_FILE = ROOT / "tests" / "fixtures" / "speech.wav"
SPEECH_TEXT = "I can't believe you did that again, this is wonderful news"
HOSTILE_TRANSCRIPT = "happy " * 16_667  # 100,002 characters


# --- the server ------------------------------------------------------------------------------


@dataclass
class App:
    url: str
    process: subprocess.Popen
    cache: Path  # the server's own Gradio upload/output cache (GRADIO_TEMP_DIR)
    checkpoint_name: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def checkpoint_folder() -> str:
    """The bundled checkpoint, or random weights when it is missing (cost does not depend on them)."""
    from ser_demo.recognizer import default_checkpoint

    if default_checkpoint():
        return default_checkpoint()
    import torch

    from ser_demo.model import MSCNN_SPU_ATT, ModelConfig

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="ser-reliability-")) / "random-mscnn-spu-att"
    MSCNN_SPU_ATT(ModelConfig()).save_pretrained(folder)
    return str(folder)


def start_app(work: Path, **settings: str) -> App:
    """`python app.py` on a free port with its own cache folder under `work`; `settings` are extra
    environment variables (e.g. SER_APP_QUEUE_SIZE="12")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    checkpoint = checkpoint_folder()
    cache = work / "gradio-cache"
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_TEMP_DIR=str(cache),
               SER_CHECKPOINT=checkpoint, PYTHONUNBUFFERED="1", **settings)
    log = work / "app.log"
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=open(log, "w"),
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(process, url, log)
    return App(url, process, cache, Path(checkpoint).name, log)


def wait_until_serving(process: subprocess.Popen, url: str, log: Path, seconds: float = 600) -> None:
    """Return once `url` answers 200; raise with the end of `log` if the app exits or never does."""
    deadline = time.time() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"app.py did not answer within {seconds:g} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@dataclass
class Resources:
    rss_mb: float
    cache_bytes: int
    cache_files: int
    fds: int
    threads: int


def resources(app: App) -> Resources:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{app.pid}/status").read_text().splitlines())
    files = [p for p in app.cache.rglob("*") if p.is_file()]
    sizes = []
    for p in files:
        try:
            sizes.append(p.stat().st_size)
        except FileNotFoundError:  # deleted by the cache clean-up while we looked
            pass
    return Resources(
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        cache_bytes=sum(sizes),
        cache_files=len(sizes),
        fds=len(os.listdir(f"/proc/{app.pid}/fd")),
        threads=int(status["Threads"]),
    )


# --- requests: good and bad, each knowing its own expected answer ------------------------------


@dataclass
class Case:
    name: str
    audio: Optional[str]
    transcript: str
    modality: str = "both"
    error: Optional[str] = None  # None: must be answered; else a phrase the error message must hold
    seconds: Optional[float] = None  # duration the answer must report (its own audio, not another's)


def _clip(folder: Path, name: str, samples: np.ndarray, rate: int = 16000, **kwargs) -> str:
    path = folder / name
    sf.write(path, samples, rate, **kwargs)
    return str(path)


def make_cases(folder: Path, variants: int = 8) -> list[Case]:
    """Requests a visitor might send, good and bad. `variants` good clips of distinct lengths, so
    that an answer given to the wrong request shows in its duration and transcript."""
    from ser_demo.ingest import load_audio

    folder.mkdir(parents=True, exist_ok=True)
    speech, rate = sf.read(SPEECH_FILE, dtype="float32")
    cases = []
    for i in range(variants):
        path = _clip(folder, f"speech-{i}.wav", speech[: int((1.5 + 0.3 * i) * rate)], rate)
        seconds = len(load_audio(path, trim_silence=True)) / 16000  # the app trims silent edges
        cases.append(Case(f"typed-{i}", path, f"request {i} what wonderful news", seconds=seconds))
    cases.append(Case("whisper", str(SPEECH_FILE), "", seconds=len(load_audio(SPEECH_FILE, trim_silence=True)) / 16000))
    cases.append(Case("audio-only", cases[0].audio, "", "audio", seconds=cases[0].seconds))
    cases.append(Case("text-only", None, "i am so sad and alone", "text"))
    not_audio = folder / "notes.wav"
    not_audio.write_text("<html><script>alert(1)</script></html>")
    cases.append(Case("not-audio", str(not_audio), "", error="Could not read"))
    random_bytes = folder / "random.webm"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(20_000))
    cases.append(Case("random-bytes", str(random_bytes), "", error="Could not read"))
    cases.append(Case("silence", _clip(folder, "silence.wav", np.zeros(32000, np.float32)), "", error="No speech"))
    cases.append(Case("too-short", _clip(folder, "short.wav", speech[:1600]), "", error="too short"))
    cases.append(Case("long-transcript", cases[0].audio, "so happy " * 200, error="too long"))
    cases.append(Case("hostile-transcript", cases[0].audio, HOSTILE_TRANSCRIPT, error="too long"))
    cases.append(Case("no-words-text-only", None, "", "text", error="transcript"))
    cases.append(Case("bad-modality", None, "hello", "video", error="not in the list of choices"))
    return cases


def fresh(case: Case, i: int, folder: Path) -> Case:
    """`case` with a file of its own (a few samples shorter, or other bytes): real visitors never
    send the same file twice, and Gradio's cache keeps one copy per content, aged from its first
    upload, so repeated files would neither grow the cache nor show its clean-up."""
    from ser_demo.ingest import load_audio

    if case.audio is None:
        return case
    path = folder / f"{i}-{Path(case.audio).name}"
    try:
        audio, rate = sf.read(case.audio, dtype="float32")
    except sf.LibsndfileError:  # not audio: other bytes of the same kind
        data = Path(case.audio).read_bytes()
        path.write_bytes(np.random.default_rng(i).bytes(len(data)) if "random" in case.name else
                         data + f"<!-- {i} -->".encode())
        return Case(case.name, str(path), case.transcript, case.modality, case.error)
    sf.write(path, audio[: len(audio) - 16 * (i % 50 + 1)], rate)
    seconds = len(load_audio(path, trim_silence=True)) / 16000 if case.seconds is not None else None
    return Case(case.name, str(path), case.transcript, case.modality, case.error, seconds)


@dataclass
class Outcome:
    case: Case
    kind: str  # "ok", "refused" (its expected clear error), "queue full", "wrong" (lost, mixed or unclear)
    seconds: float
    detail: str = ""


def check(case: Case, result=None, error: Optional[BaseException] = None) -> tuple[str, str]:
    """Classify one answer against what `case` must get."""
    if error is not None:
        from gradio_client.utils import QueueError

        message = str(error)
        if isinstance(error, QueueError) or "queue is full" in message.lower():
            return "queue full", message
        if case.error is not None and case.error.lower() in message.lower() and "Traceback" not in message:
            return "refused", message
        return "wrong", f"{type(error).__name__}: {message[:300]}"
    if case.error is not None:
        return "wrong", f"answered, but should have been refused with {case.error!r}"
    details = result[-1]
    expected_text = case.transcript.strip() if case.modality != "audio" else ""
    if case.transcript and details["transcript"] != expected_text:
        return "wrong", f"transcript {details['transcript'][:80]!r} is not this request's"
    if case.seconds is not None and abs((details["duration_seconds"] or 0) - case.seconds) > 0.011:
        return "wrong", f"duration {details['duration_seconds']} s is not this request's {case.seconds:.3f} s"
    if abs(sum(details["probabilities"].values()) - 1.0) > 1e-3:
        return "wrong", "probabilities do not add up to 1"
    return "ok", details["label"]


def send(client, app: App, case: Case, timeout: float = 300.0) -> Outcome:
    from gradio_client import handle_file

    start = time.perf_counter()
    try:
        job = client.submit(handle_file(case.audio) if case.audio else None, case.transcript, case.modality,
                            app.checkpoint_name, api_name="/analyze")
        kind, detail = check(case, job.result(timeout=timeout))
    except Exception as error:  # noqa: BLE001 - classified, never swallowed: "wrong" fails the caller
        kind, detail = check(case, error=error)
    return Outcome(case, kind, time.perf_counter() - start, detail)


def client_for(app: App):
    from gradio_client import Client

    # Figures stay on the server (their URLs come back): the check reads the JSON details only.
    return Client(app.url, verbose=False, analytics_enabled=False, download_files=False,
                  httpx_kwargs={"timeout": 300})


# --- soak, load, hostile transcript ------------------------------------------------------------


@dataclass
class SoakReport:
    outcomes: list[Outcome]
    samples: list[tuple[int, Resources]]  # (requests sent so far, resources then)
    warm_up: int

    def after_warm_up(self) -> Resources:
        return next(r for n, r in self.samples if n >= self.warm_up)

    def slope_mb_per_request(self, last: int = 100) -> float:
        """Least-squares growth of resident memory per request over the last `last` requests."""
        n_end = self.samples[-1][0]
        points = [(n, r.rss_mb) for n, r in self.samples if n >= max(self.warm_up, n_end - last)]
        x, y = np.array([p[0] for p in points], float), np.array([p[1] for p in points])
        return float(np.polyfit(x, y, 1)[0]) if len(points) > 2 else 0.0

    @property
    def wrong(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "wrong"]


def soak(app: App, cases: list[Case], requests: int, warm_up: int, every: int = 10,
         on_progress=None) -> SoakReport:
    """`warm_up` + `requests` sequential requests cycling through `cases`, each from a new visitor
    session with a file of its own; resources sampled every `every` requests."""
    client = client_for(app)
    report = SoakReport([], [(0, resources(app))], warm_up)
    folder = Path(tempfile.mkdtemp(prefix="ser-soak-"))
    try:
        for i in range(warm_up + requests):
            client.reset_session()  # a new visitor: Gradio keeps per-session state
            case = fresh(cases[i % len(cases)], i, folder)
            report.outcomes.append(send(client, app, case))
            if (i + 1) % every == 0 or i + 1 == warm_up:
                report.samples.append((i + 1, resources(app)))
                if on_progress:
                    on_progress(i + 1, report.samples[-1][1])
    finally:
        client.close()
        shutil.rmtree(folder, ignore_errors=True)
    return report


def load(app: App, cases: list[Case], clients: int) -> list[Outcome]:
    """`clients` visitors, each with its own connection, send one request each at the same moment.
    (They connect a few at a time first: the check is about the requests, not the handshakes.)"""
    with ThreadPoolExecutor(8) as pool:
        connections = list(pool.map(lambda _: client_for(app), range(clients)))
    with ThreadPoolExecutor(clients) as pool:
        barrier = threading.Barrier(clients)

        def one(i: int) -> Outcome:
            barrier.wait()
            return send(connections[i], app, cases[i % len(cases)])

        outcomes = list(pool.map(one, range(clients)))
    for connection in connections:  # visitors leave: their heartbeat streams end
        connection.close()
    return outcomes


def hostile_transcript(app: App, audio: str) -> tuple[Outcome, float, float]:
    """A 100,000-character transcript: its outcome and the server's RSS (MB) before and after."""
    client = client_for(app)
    before = resources(app).rss_mb
    outcome = send(client, app, Case("hostile", audio, HOSTILE_TRANSCRIPT, error="too long"))
    client.close()
    return outcome, before, resources(app).rss_mb


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(outcomes: list[Outcome]) -> str:
    kinds = {k: sum(o.kind == k for o in outcomes) for k in ("ok", "refused", "queue full", "wrong")}
    times = [o.seconds for o in outcomes]
    return (f"{len(outcomes)} requests: {kinds['ok']} answered correctly, {kinds['refused']} refused with their "
            f"own clear error, {kinds['queue full']} told the queue is full, {kinds['wrong']} lost/mixed/unclear; "
            f"time to answer or refusal median {statistics.median(times):.2f} s, p95 {percentile(times, 95):.2f} s, "
            f"max {max(times):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", type=int, default=300, help="requests after the warm-up (0: skip)")
    parser.add_argument("--warm-up", type=int, default=30)
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (0: skip)")
    parser.add_argument("--delete-cache", default=None,
                        help="SER_APP_DELETE_CACHE for the server, 'frequency,age' seconds (default: the app's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ser-reliability-"))
    settings = {"SER_APP_DELETE_CACHE": args.delete_cache} if args.delete_cache else {}
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; work folder {work}")
    start = time.perf_counter()
    app = start_app(work, **settings)
    print(f"app started in {time.perf_counter() - start:.1f} s; {resources(app)}")
    try:
        cases = make_cases(work / "clips")
        if args.clients:
            outcomes = load(app, cases, args.clients)
            print(f"load, {args.clients} clients at once: {summarize(outcomes)}")
            for o in [o for o in outcomes if o.kind == "wrong"][:5]:
                print(f"  WRONG {o.case.name}: {o.detail}")
            print(f"after the load: {resources(app)}")
        outcome, before, after = hostile_transcript(app, cases[0].audio)
        print(f"hostile transcript (100,002 characters): {outcome.kind} in {outcome.seconds:.3f} s "
              f"({outcome.detail[:90]}); server RSS {before:.0f} -> {after:.0f} MB ({after - before:+.1f} MB)")
        if args.soak:
            def progress(n, r):
                print(f"  after {n:4d} requests: RSS {r.rss_mb:7.1f} MB, cache {r.cache_bytes / 1e6:6.2f} MB "
                      f"in {r.cache_files} files, {r.fds} fds, {r.threads} threads", flush=True)

            report = soak(app, cases, args.soak, args.warm_up, on_progress=progress)
            first, last = report.after_warm_up(), report.samples[-1][1]
            print(f"soak: {summarize(report.outcomes[args.warm_up:])}")
            print(f"soak: RSS after warm-up {first.rss_mb:.0f} MB, after {report.samples[-1][0]} requests "
                  f"{last.rss_mb:.0f} MB ({last.rss_mb - first.rss_mb:+.1f} MB); growth over the last 100: "
                  f"{report.slope_mb_per_request(100):+.3f} MB per request; cache {first.cache_bytes / 1e6:.2f} -> "
                  f"{last.cache_bytes / 1e6:.2f} MB (max {max(r.cache_bytes for _, r in report.samples) / 1e6:.2f} MB); "
                  f"fds {first.fds} -> {last.fds}; threads {first.threads} -> {last.threads}")
            for o in report.wrong[:5]:
                print(f"  WRONG {o.case.name}: {o.detail}")
    finally:
        app.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
