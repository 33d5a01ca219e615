"""Emotion while someone speaks: a microphone stream in, a point of the four probabilities about
once a second out, and a transcript that grows as Whisper catches up.

    live = LiveTimeline(recognizer, transcriber)
    for rate, chunk in microphone:            # e.g. Gradio's streaming gr.Audio: (48000, int16 array)
        for point in live.feed(chunk, rate):
            draw(point.time, point.probabilities)   # None: silence
        show(live.transcript)
    final = live.finish()                     # the whole recording, for `timeline.timeline`

Each point is exactly what `predict` says of the last few seconds with the audio branch alone
(no transcription): for a checkpoint that reads Whisper's encoder, one encoder pass per point,
as the checkpoint was trained: over the 3 s alone for context "clip" (about 20 ms of CPU), over
a zero-padded 30 s window for context "window" (about 0.5 s). Either way a pass serves one
point only: the states of a clip depend on all the audio the pass reads, so states cut out of a
pass shared by several points would not be the features the model was trained on. Points are
computed on a background thread: `feed` stores audio, starts a point when one is
due and none is in flight, and hands out finished points (waiting up to `wait` seconds for the
one in flight), so a machine slower than real time gets fewer points, never a growing lag.
Whisper runs on another background thread, shared by every stream: it transcribes each stretch
of speech once a pause ends it, starting between points (both use the same Whisper model, which runs
one job at a time), so a slow transcription delays the words, never the chart. No UI code here.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soxr

from .audio import SAMPLE_RATE
from .ingest import MIN_ACTIVE_SECONDS, AudioInputError, active_seconds, check_sample_rate, to_mono_float32
from .recognizer import EmotionRecognizer
from .segments import MIN_PAUSE_SECONDS, WINDOW_SECONDS, voice_activity

LIVE_WINDOW_SECONDS = 3.0  # the audio each point describes: enough for the SPU statistics
LIVE_STEP_SECONDS = 1.0  # one point a second
LIVE_MAX_SECONDS = 120.0  # longest stream kept (memory: 7.7 MB of float32 at 16 kHz)

_whisper_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-whisper")
_point_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-points")


class _PointsInFlight:
    """How many points, over all streams, are queued or being computed: Whisper's transcriptions
    wait for none (a bounded while), so that a point never queues behind one on the encoder."""

    def __init__(self):
        self._count, self._changed = 0, threading.Condition()

    def add(self) -> None:
        with self._changed:
            self._count += 1

    def done(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_for_none(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout)


_points_in_flight = _PointsInFlight()


@dataclass
class LivePoint:
    time: float  # seconds from the start of the stream: the end of the audio it describes
    probabilities: Optional[dict[str, float]]  # None where the window held no speech


class LiveTimeline:
    def __init__(self, recognizer: EmotionRecognizer, transcriber=None, *, window: float = LIVE_WINDOW_SECONDS,
                 step: float = LIVE_STEP_SECONDS, max_seconds: float = LIVE_MAX_SECONDS, modality: str = "audio",
                 background: bool = True):
        """background=False classifies inside `feed` (every point, in order: for tests and
        offline replays of a stream)."""
        self.recognizer, self.transcriber, self.background = recognizer, transcriber, background
        self.window, self.step, self.max_seconds, self.modality = window, step, max_seconds, modality
        self.recognizer.branches(modality)  # refuses a modality the checkpoint lacks, up front
        self.points: list[LivePoint] = []
        self.phrases: list[tuple[float, float, str]] = []  # (start, end, text) as Whisper returns them
        self.full = False  # True once max_seconds were reached; later audio is ignored
        self._chunks: list[np.ndarray] = []
        self._length = 0  # samples at 16 kHz received so far
        self._audio: Optional[np.ndarray] = None  # concatenation cache
        self._resampler: Optional[soxr.ResampleStream] = None
        self._rate: Optional[int] = None
        self._next_point = window / 2  # the first point once there is half a window of audio
        self._transcribed = 0  # samples before this were handed to Whisper
        self._pending: Optional[Future] = None
        self._classifying: Optional[Future] = None
        self._lock = threading.Lock()

    @property
    def duration(self) -> float:
        return self._length / SAMPLE_RATE

    @property
    def waveform(self) -> np.ndarray:
        if self._audio is None or len(self._audio) != self._length:
            self._audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            self._chunks = [self._audio]
        return self._audio

    @property
    def transcript(self) -> str:
        self._collect()
        with self._lock:
            return " ".join(text for _, _, text in self.phrases).strip()

    def feed(self, chunk, rate: int, wait: float = 0.0) -> list[LivePoint]:
        """Add one chunk of the stream (any rate, int or float samples, mono or not); returns the
        points finished since the last call (at most one per chunk, so a stream that fell behind
        catches up at the cost of one classification per chunk). `wait`: seconds that the call
        which starts a point waits for it, so that it is handed out when ready rather than with the
        next chunk (the app waits less than the time between chunks; a slow machine makes only that
        one call wait, never every chunk)."""
        if self.full:
            return []
        rate = check_sample_rate(rate)
        samples = to_mono_float32(np.asarray(chunk))
        if not np.isfinite(samples).all():
            raise AudioInputError("The microphone sent invalid samples (NaN or infinity). Record again.")
        if self._resampler is None or rate != self._rate:
            self._resampler, self._rate = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32"), rate
        samples = self._resampler.resample_chunk(samples) if rate != SAMPLE_RATE else samples
        room = int(self.max_seconds * SAMPLE_RATE) - self._length
        if len(samples) >= room:
            samples, self.full = samples[:room], True
        self._chunks.append(samples)
        self._length += len(samples)
        new = self._finished_point()
        if self.duration >= self._next_point and self._classifying is None:
            end, audio = self.duration, self._window(self.duration)
            self._next_point = end + self.step * 0.9  # chunk edges never push a point a whole step
            if self.background:
                _points_in_flight.add()
                self._classifying = _point_worker.submit(self._point_in_flight, end, audio)
            else:
                new.append(self._point(end, audio))
            if wait > 0 and self.background:  # only the chunk that started the point waits for it
                futures_wait([self._classifying], timeout=wait)
                new += self._finished_point()
        self._transcribe(final=self.full)
        return new

    def _window(self, end: float) -> np.ndarray:
        return self.waveform[max(0, int((end - self.window) * SAMPLE_RATE)):int(end * SAMPLE_RATE)].copy()

    def _finished_point(self, wait: bool = False) -> list[LivePoint]:
        future = self._classifying
        if future is None or not (wait or future.done()):
            return []
        self._classifying = None
        return [future.result()]

    def finish(self, timeout: Optional[float] = None) -> np.ndarray:
        """The stream ended: transcribe what is left (waiting up to `timeout` s) and return the
        whole recording as float32 16 kHz."""
        if self._classifying is not None:
            self._finished_point(wait=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._transcribe(final=True)
            pending = self._pending
            if pending is None:
                break
            try:
                pending.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except Exception:  # a timeout or a failure: the words are late, the recording is not
                break
            self._collect()
        return self.waveform

    def _point_in_flight(self, end: float, audio: np.ndarray) -> LivePoint:
        """`_point`, counted in flight from its submission (`feed`) to its end."""
        try:
            return self._point(end, audio)
        finally:
            _points_in_flight.done()

    def _point(self, end: float, audio: np.ndarray) -> LivePoint:
        point = LivePoint(end, None)
        if active_seconds(audio) >= MIN_ACTIVE_SECONDS:
            r = self.recognizer
            try:
                heard = r.listen(audio, SAMPLE_RATE, None, self.modality, max_seconds=None, transcriber=None)
                probabilities, _ = r.forward(r.prepare(heard.waveform_for_model, heard.transcript, self.modality, heard.encoded))
            except AudioInputError:  # too little left after trimming: silence
                probabilities = None
            if probabilities is not None:
                point.probabilities = {label: float(p) for label, p in zip(r.labels, probabilities)}
        self.points.append(point)
        return point

    def _collect(self) -> None:
        """Take Whisper's finished work, if any."""
        with self._lock:
            pending = self._pending
            if pending is None or not pending.done():
                return
            self._pending = None
        try:
            start, end, text = pending.result()
        except Exception:  # one failed stretch loses its words, not the stream
            return
        if text:
            with self._lock:
                self.phrases.append((start, end, text))

    def _transcribe(self, final: bool = False) -> None:
        """Hand the next finished stretch of speech (ended by a pause, or Whisper's window full,
        or the stream's end) to the background worker, one stretch at a time per stream."""
        if self.transcriber is None:
            return
        self._collect()
        if self._pending is not None:
            return
        tail = self.waveform[self._transcribed:]
        if len(tail) < SAMPLE_RATE * MIN_PAUSE_SECONDS and not (final and len(tail)):
            return
        speech = voice_activity(tail)
        if not speech:
            if len(tail) > SAMPLE_RATE * self.window:  # only silence so far: never send it
                self._transcribed = self._length - int(SAMPLE_RATE * MIN_PAUSE_SECONDS)
            return
        paused = len(tail) / SAMPLE_RATE - speech[-1].end >= MIN_PAUSE_SECONDS
        if not (final or paused or len(tail) >= SAMPLE_RATE * WINDOW_SECONDS):
            return
        cut = len(tail) if final or not paused else int((speech[-1].end + MIN_PAUSE_SECONDS / 2) * SAMPLE_RATE)
        cut = min(cut, int(SAMPLE_RATE * WINDOW_SECONDS))
        offset = self._transcribed / SAMPLE_RATE
        stretch = tail[:cut].copy()
        self._transcribed += cut

        def run():
            _points_in_flight.wait_for_none(timeout=self.step)
            result = self.transcriber.transcribe(stretch)
            text = result.text.strip()
            if text and self.recognizer.leaves_out(result.words):
                text = f'(Whisper unsure: "{text}")'  # made up, most likely: the full timeline leaves it out
            return offset, offset + len(stretch) / SAMPLE_RATE, text

        self._pending = _whisper_worker.submit(run)
