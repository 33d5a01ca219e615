"""From a recording (and optionally its transcript) to an emotion, with everything worth drawing.

`EmotionRecognizer` composes the library: ingestion -> (Whisper) -> MFCC / Whisper encoder states
+ GloVe (+ speaker embedding) -> MSCNN-SPU-ATT. A checkpoint that reads Whisper encoder states of
context "window" runs the encoder once per recording: Whisper's decoder reuses that pass for the
transcript. The audio features do not depend on the words, so while Whisper transcribes (in a
thread of its own) the calling thread computes them: on two cores the two overlap.
It holds no UI code; the app and the command line only call `predict`. The data it takes and
gives (`Heard`, `ModelInputs`, `Prediction`, ...) and the transcript checks are in `utterance`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .transcript import is_unsure, unsure_words_note
from .audio import FeatureParams, Normalizer, mfcc_features
from .calibration import Calibration, load_calibration
from .devices import resolve_device, to_device
from .encoder import WhisperEncoder
from .inputs import collate
from .model import MSCNN_SPU_ATT, ModelConfig, ModelOutput
from .statistics_head import clip_statistics
from .text import Tokens, load_word_vectors
from .utterance import (MAX_TRANSCRIPT_CHARACTERS, MAX_TRANSCRIPT_WORDS, AudioFeatures, Heard, ModelInputs,
                        Prediction, PredictionError, check_transcript_length, unknown_words_note)
from .words_gate import set_aside_note, words_are_read

# The checkpoint trained by `train/` and committed with the project; SER_CHECKPOINT overrides.
BUNDLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "mscnn-spu-att-en-4class"
MODALITIES = ("both", "audio", "text")


def default_checkpoint() -> Optional[str]:
    if os.environ.get("SER_CHECKPOINT"):
        return os.environ["SER_CHECKPOINT"]
    return str(BUNDLED_CHECKPOINT) if (BUNDLED_CHECKPOINT / "model.safetensors").is_file() else None


def load_model(checkpoint: str, **hub_kwargs) -> MSCNN_SPU_ATT:
    """A checkpoint folder or Hub repo id -> the model; a name that is neither says so plainly
    (instead of the Hub client's "Repo id must be in the form ..." for a mistyped folder)."""
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    path = Path(checkpoint).expanduser()
    looks_local = path.is_absolute() or str(checkpoint).startswith((".", "~")) or len(path.parts) > 2 or (
        len(path.parts) == 2 and Path(path.parts[0]).is_dir())
    if looks_local and not path.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {checkpoint} (a Hub model id looks like user/name)")
    try:
        return MSCNN_SPU_ATT.from_pretrained(str(path) if path.is_dir() else checkpoint, **hub_kwargs)
    except (HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError) as err:
        raise FileNotFoundError(
            f"cannot load the checkpoint {checkpoint!r}: it is not a local folder, and the Hugging Face Hub "
            f"has no such model or cannot be reached ({type(err).__name__})"
        ) from None


_OWN = object()  # listen(transcriber=...) default: the recognizer's own transcriber


class EmotionRecognizer:
    max_transcript_words: Optional[int] = MAX_TRANSCRIPT_WORDS
    max_transcript_characters: Optional[int] = MAX_TRANSCRIPT_CHARACTERS
    # listen(features=True): Whisper transcribes in a thread of its own while this thread computes
    # the audio features. False runs one after the other (the same results, on one core's time).
    transcribe_alongside: bool = True
    # Whisper's words that it was itself unsure of (transcript.is_unsure: another language, noise) are
    # left out when the voice is read too, with a note; False reads them anyway.
    skip_unsure_words: bool = True
    # how often answers of each confidence were right in its recipe's cross-validation, when the
    # checkpoint carries that table (`calibration.py`)
    calibration: Optional[Calibration] = None

    def __init__(self, model: MSCNN_SPU_ATT, word_vectors=None, speaker_embedder=None, transcriber=None,
                 encoder=None, device: Optional[str] = None):
        # device: auto (default: $SER_DEVICE, else CUDA when there is a GPU), cpu, cuda
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config: ModelConfig = model.config
        self.feature_params = FeatureParams(**self.config.feature_params)
        self.normalizer = Normalizer.from_config(self.config)
        self.encoder = self.encoder_normalizer = None
        if self.config.use_audio and "whisper" in self.config.audio_frontends:
            # Features of another encoder would be noise to this model: check() refuses them.
            self.encoder = encoder or WhisperEncoder.for_spec(self.config.encoder, transcriber)
            self.encoder.check(self.config.encoder)
            self.encoder_normalizer = Normalizer.encoder_from_config(self.config)
        if self.config.use_text and word_vectors is None:
            word_vectors = load_word_vectors(self.config.embeddings)
        if word_vectors is not None and word_vectors.dim != self.config.n_word_features:
            raise ValueError(
                f"the model expects {self.config.n_word_features}-d word vectors, "
                f"{word_vectors.source} has {word_vectors.dim}"
            )
        self.word_vectors = word_vectors
        if self.config.use_speaker and speaker_embedder is None:
            from .speaker import for_checkpoint

            speaker_embedder = for_checkpoint(self.config)
        if speaker_embedder is not None and speaker_embedder.dim != self.config.n_speaker_features:
            raise ValueError(
                f"the model expects {self.config.n_speaker_features}-d speaker embeddings, "
                f"the speaker model gives {speaker_embedder.dim}"
            )
        self.speaker_embedder = speaker_embedder
        self.transcriber = transcriber

    @classmethod
    def from_pretrained(cls, checkpoint: Optional[str] = None, *, transcriber=None, device: Optional[str] = None,
                        **hub_kwargs) -> "EmotionRecognizer":
        """Load a local folder, a Hub repo id, or (None) the bundled checkpoint."""
        checkpoint = checkpoint or default_checkpoint()
        if checkpoint is None:
            raise FileNotFoundError(
                "no checkpoint given and none bundled yet: pass --checkpoint DIR_OR_REPO (or set SER_CHECKPOINT)"
            )
        recognizer = cls(load_model(checkpoint, **hub_kwargs), transcriber=transcriber, device=device)
        recognizer.calibration = load_calibration(checkpoint, **hub_kwargs)
        return recognizer

    @property
    def labels(self) -> tuple:
        return self.config.labels

    def supported_modalities(self) -> tuple:
        """"both" always works: it means every branch the checkpoint has."""
        c = self.config
        if c.use_audio and c.use_text:
            return MODALITIES
        return ("both", "audio") if c.use_audio else ("both", "text")

    def branches(self, modality: str) -> tuple[bool, bool]:
        """(use audio, use text) for a request in `modality`; refuses what the checkpoint lacks."""
        if modality not in self.supported_modalities():
            raise PredictionError(
                f"this checkpoint supports {', '.join(self.supported_modalities())}, not {modality!r}"
            )
        c = self.config
        return c.use_audio and modality in ("both", "audio"), c.use_text and modality in ("both", "text")

    # --- stages ----------------------------------------------------------------------------

    def audio_features(self, audio: np.ndarray, encoded=None) -> AudioFeatures:
        """What the audio branch reads of `audio` (float32 16 kHz mono, ingested); `encoded`, its
        Whisper encoder pass if `listen` already ran it."""
        c = self.config
        parts = c.statistics_parts
        mfcc = mfcc_features(audio, self.feature_params) if "mfcc" in c.audio_frontends or "mfcc" in parts else None
        features = AudioFeatures(
            mfcc=mfcc if "mfcc" in c.audio_frontends else None,
            encoded=(encoded or self.encoder.encode(audio)) if self.encoder is not None else None,
            speaker=self.speaker_embedder.embed(audio) if c.use_speaker else None,
        )
        if parts:
            features.statistics = clip_statistics(parts, mfcc, getattr(features.encoded, "states", None), features.speaker)
        return features

    def prepare(self, audio: Optional[np.ndarray], transcript: Optional[str], modality: str = "both",
                encoded=None, features: Optional[AudioFeatures] = None) -> ModelInputs:
        """Features of one utterance as a batch of one. `audio` is float32 16 kHz mono (ingested);
        `encoded`, its Whisper encoder pass, or `features`, its audio features, if `listen`
        already computed them."""
        c = self.config
        use_audio, use_text = self.branches(modality)
        if use_audio and audio is None:
            raise PredictionError("this mode needs audio: record or upload a clip")
        tokens = self.word_vectors.encode(transcript if use_text else None) if c.use_text else Tokens([], np.zeros((0, 0), np.float32), [])
        if not use_audio and not tokens.words:
            raise PredictionError("text-only mode needs a transcript with at least one word")
        mfcc = states = speaker = statistics = None
        if use_audio:
            features = features or self.audio_features(audio, encoded)
            mfcc, speaker, statistics = features.mfcc, features.speaker, features.statistics
            states = features.encoded.states if features.encoded is not None else None
        batch = collate(c, [None if mfcc is None else self.normalizer(mfcc)], [tokens.vectors], [speaker],
                        [None if states is None else self.encoder_normalizer(states)], [statistics])
        return ModelInputs(mfcc, tokens, to_device(batch, self.device), states)

    @torch.no_grad()
    def forward(self, inputs: ModelInputs) -> tuple[np.ndarray, ModelOutput]:
        out = self.model(**inputs.batch)
        return out.logits.softmax(-1)[0].cpu().numpy(), out

    def listen(
        self,
        audio=None,
        sample_rate: Optional[int] = None,
        transcript: Optional[str] = None,
        modality: str = "both",
        *,
        max_seconds: Optional[float] = 30.0,
        transcriber=_OWN,
        asr_unavailable: Optional[str] = None,
        features: bool = False,
        alongside: Optional[Callable[[Heard], None]] = None,
        read_all_words: bool = False,
    ) -> Heard:
        """Ingest the recording and find the words: the steps before the features, shared by
        `predict` and the app's analysis. A blank transcript asks Whisper (`transcriber`, by
        default the recognizer's own) when the text branch is used. Raises AudioInputError /
        PredictionError with a message for the user.

        features: also compute the audio features (`heard.features`, for `prepare`), in this
        thread while Whisper transcribes in another (`transcribe_alongside`); then, only when
        Whisper does run alongside, `alongside(heard)`: more work that needs no words.
        read_all_words: read the words with the voice even where the checkpoint's words gate would
        set them aside (the paper's fusion; `ser_demo.words_gate`)."""
        from .ingest import load_audio

        wants_audio, wants_text = self.branches(modality)
        transcriber = self.transcriber if transcriber is _OWN else transcriber
        self.check_transcript(transcript or "")  # before any decoding or model work
        heard = Heard(transcript=(transcript or "").strip())
        needs_asr = wants_text and not heard.transcript
        if audio is not None and (wants_audio or needs_asr):  # text-only still reads it for Whisper
            start = time.perf_counter()
            # Trimmed like the training clips: leading/trailing silence would dilute the SPU means.
            heard.waveform = load_audio(audio, sample_rate, max_seconds=max_seconds, trim_silence=True)
            heard.timings["ingest"] = time.perf_counter() - start
        elif wants_audio:
            raise PredictionError("no audio: record with the microphone or upload a clip (or choose text only)")
        heard.source = "typed" if heard.transcript else "none"
        if wants_audio and self.encoder is not None:
            # First, and not alongside Whisper: both run on one CTranslate2 model, which serves
            # one call at a time; in context "window" the decoder also needs this pass.
            start = time.perf_counter()
            heard.encoded = self.encoder.encode(heard.waveform)
            heard.timings["encoder"] = time.perf_counter() - start
        asr_possible = needs_asr and heard.waveform is not None  # words wanted, and audio to hear them in
        asr = asr_possible and transcriber is not None
        if asr_possible and transcriber is None:
            heard.notes.append(
                "speech recognition is not available"
                + (f" ({asr_unavailable})" if asr_unavailable else "")
                + ": type what was said in the transcript box"
            )

        def hear_audio():
            if features and wants_audio:
                start = time.perf_counter()
                heard.features = self.audio_features(heard.waveform, heard.encoded)
                heard.timings["audio features"] = time.perf_counter() - start

        def transcribe():
            start = time.perf_counter()
            result = (transcriber.transcribe(heard.waveform, encoded=heard.encoded) if self.shares_encoder_with(transcriber)
                      else transcriber.transcribe(heard.waveform))
            heard.timings["asr"] = time.perf_counter() - start
            return result

        result = None
        if asr and features and wants_audio and self.transcribe_alongside:
            with ThreadPoolExecutor(1, thread_name_prefix="whisper") as pool:
                transcribing = pool.submit(transcribe)
                try:
                    hear_audio()
                    if alongside is not None:
                        alongside(heard)
                finally:  # Whisper's own error, if any, wins: it is the visitor's to read
                    result = transcribing.result()
        else:
            hear_audio()
            result = transcribe() if asr else None
        if result is not None:
            heard.transcript, heard.words, heard.source = result.text.strip(), list(result.words), "asr"
            heard.phrases = list(result.phrases)
            self.check_transcript(heard.transcript, heard_by=" Whisper heard")
            if not heard.transcript:
                heard.notes.append("speech recognition heard no words")
            elif self.leaves_out(result.words):
                heard.notes.append(unsure_words_note(result, read=not wants_audio))
                if wants_audio:  # the voice answers alone
                    heard.unsure_words, heard.transcript, heard.words, heard.phrases = heard.transcript, "", [], []
        if wants_audio and wants_text and heard.transcript and not read_all_words:
            self.gate_words(heard)
        if wants_text and not heard.transcript:
            if not wants_audio:
                raise PredictionError(
                    "text-only mode needs a transcript with at least one word: type what was said"
                    + ("" if transcriber is not None else " (speech recognition is not available)")
                )
            if not (heard.unsure_words or heard.words_set_aside):  # its note says why already
                heard.notes.append("no transcript: the text branch saw an empty sentence")
        if not wants_text:
            heard.transcript, heard.source = "", "none"
        heard.audio_used = wants_audio
        return heard

    def gate_words(self, heard: Heard) -> None:
        """The words gate (`ser_demo.words_gate`): words the text branch, reading them alone, is not
        sure of (of an emotion, with `words_gate_labels`) are set aside (`heard.words_set_aside`,
        with a note), and the voice answers alone."""
        threshold = self.config.words_gate
        if threshold is None or not self.word_vectors.encode(heard.transcript).words:
            return
        start = time.perf_counter()
        text_alone, _ = self.forward(self.prepare(None, heard.transcript, "text"))
        heard.timings["words gate"] = time.perf_counter() - start
        gate_labels = self.config.words_gate_labels
        if not words_are_read(text_alone, threshold, self.labels, gate_labels)[0]:
            heard.notes.append(set_aside_note(heard.transcript, text_alone, self.labels, threshold, gate_labels))
            heard.words_set_aside, heard.transcript = heard.transcript, ""

    def shares_encoder_with(self, transcriber) -> bool:
        """Whether `transcriber` decodes from the encoder pass the model reads (context "window"
        of the transcriber's own Whisper): then one pass per recording serves both."""
        return (self.encoder is not None and self.encoder.shares_with_decoder
                and getattr(transcriber, "model", None) is self.encoder.whisper)

    def leaves_out(self, words) -> bool:
        """Whether Whisper was unsure of `words` (of a clip or one utterance) and this recognizer
        leaves them out wherever the voice is read (skip_unsure_words)."""
        return self.skip_unsure_words and is_unsure(words)

    def calibration_for(self, has_audio: bool) -> Optional[Calibration]:
        """The table that says how often answers of each confidence were right in the
        cross-validation of this checkpoint's recipe (`calibration.py`); None without one, or for
        the words alone (the table is of answers that heard the voice)."""
        return self.calibration if has_audio else None

    def calibration_record(self, modality: str, has_audio: bool, confidence: float) -> Optional[dict]:
        """How often answers as sure as `confidence` were right (see `calibration_for`)."""
        table = self.calibration_for(has_audio)
        return table.record(modality, confidence) if table else None

    def check_transcript(self, transcript: str, heard_by: str = "") -> None:
        """Refuse a transcript longer than this recognizer's limits (PredictionError)."""
        check_transcript_length(transcript, self.max_transcript_words, self.max_transcript_characters, heard_by)

    def predict(
        self,
        audio=None,
        sample_rate: Optional[int] = None,
        transcript: Optional[str] = None,
        *,
        modality: str = "both",
        max_seconds: Optional[float] = 30.0,
        read_all_words: bool = False,
    ) -> Prediction:
        """Classify one utterance. `audio`: a path, a Gradio (rate, array) pair, or an array with
        `sample_rate`. A missing transcript is filled in by the transcriber, if there is one.
        `read_all_words` reads the words even where the words gate would set them aside."""
        start = time.perf_counter()
        heard = self.listen(audio, sample_rate, transcript, modality, max_seconds=max_seconds, features=True,
                            read_all_words=read_all_words)
        timings, notes = heard.timings, heard.notes
        t = time.perf_counter()
        inputs = self.prepare(heard.waveform_for_model, heard.transcript, modality, heard.encoded, heard.features)
        timings["features"] = time.perf_counter() - t
        t = time.perf_counter()
        probs, out = self.forward(inputs)
        timings["model"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        if inputs.tokens.unknown_words:
            notes.append(unknown_words_note(inputs.tokens))
        c = self.config
        attention = {}
        if out.attention is not None and inputs.tokens.words:
            attention = {s: out.attention[0, j].tolist() for j, s in enumerate(c.audio_statistics)}
        answers = {}
        if out.head_logits is not None and inputs.has_audio:
            for name, logits in (("network_probabilities", out.network_logits), ("head_probabilities", out.head_logits)):
                answers[name] = dict(zip(c.labels, map(float, logits.softmax(-1)[0].cpu())))
        return Prediction(
            label=c.labels[int(probs.argmax())],
            probabilities={label: float(p) for label, p in zip(c.labels, probs)},
            modality=modality,
            transcript=heard.transcript or None,
            tokens=inputs.tokens.words,
            known=inputs.tokens.known,
            mfcc=inputs.mfcc,
            frame_seconds=self.feature_params.hop_length / self.feature_params.sample_rate,
            kernel_sizes=c.audio_kernels,
            statistics=c.audio_statistics,
            audio_statistics=out.audio_statistics[0].cpu().numpy() if out.audio_statistics is not None and inputs.has_audio else None,
            attention=attention,
            timings=timings,
            words=heard.words,
            notes=notes,
            encoder_states=inputs.encoder_states,
            calibration=self.calibration_record(modality, inputs.has_audio, float(probs.max())),
            words_set_aside=heard.words_set_aside or None,
            **answers,
        )
