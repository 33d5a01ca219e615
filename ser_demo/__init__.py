"""ser_demo: an open implementation of MSCNN-SPU-ATT (Peng et al., ICASSP 2021) for speech emotion.

    from ser_demo import load_recognizer
    recognizer = load_recognizer()                      # bundled checkpoint, offline
    prediction = recognizer.predict("clip.wav", transcript="I can't believe it")
    prediction.label, prediction.probabilities

Modules, one concern each: audio (MFCC features), ingest (any recording -> 16 kHz mono),
asr (Whisper), text (GloVe), model (the network), inputs (its padded batches), speaker (x-vectors),
recognizer (the pipeline), utterance (what passes through it), analysis (the staged pipeline the
app runs), explain, plotting, charts and summaries (what the app draws and says).
"""

from __future__ import annotations

from typing import Optional

from .model import LABELS, MSCNN_SPU_ATT, ModelConfig
from .recognizer import BUNDLED_CHECKPOINT, EmotionRecognizer
from .utterance import Prediction, PredictionError

__all__ = [
    "LABELS", "MSCNN_SPU_ATT", "ModelConfig", "EmotionRecognizer", "Prediction", "PredictionError",
    "BUNDLED_CHECKPOINT", "load_recognizer",
]


def load_recognizer(checkpoint: Optional[str] = None, *, asr: Optional[str] = "default", **hub_kwargs) -> EmotionRecognizer:
    """The recognizer of `checkpoint` (folder or Hub id; None = bundled), with Whisper attached.

    `asr="default"` loads the configured Whisper backend (SER_ASR_BACKEND / SER_ASR_MODEL);
    `asr=None` loads none, and transcripts must then be typed."""
    transcriber = None
    if asr is not None:
        from .asr import load_transcriber

        transcriber = load_transcriber(None if asr == "default" else asr)
    return EmotionRecognizer.from_pretrained(checkpoint, transcriber=transcriber, **hub_kwargs)
