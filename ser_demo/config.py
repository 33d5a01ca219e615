"""The configuration of MSCNN-SPU-ATT (`ser_demo.model`): its sizes, the switches of the paper's
Table 2, and everything inference needs besides the weights. A checkpoint stores it as
config.json, so a checkpoint describes itself; the checks here refuse a configuration that could
not have made the weights or the features it claims.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from .audio import FeatureParams
from .encoder import CONTEXTS, spec_context
from .statistics_head import check_head_config
from .text import DEFAULT_EMBEDDINGS
from .words_gate import check_words_gate, gate_rule

LABELS = ("angry", "happy", "sad", "neutral")
FRONTENDS = ("mfcc", "whisper")  # audio front-ends: the paper's MFCCs, Whisper encoder states
STATISTICS = ("max", "avg", "std")  # the SPU's three views, in the paper's order (eq. 3)


@dataclass
class ModelConfig:
    """Sizes, Table 2 switches and everything inference needs besides weights (-> config.json)."""

    labels: tuple = LABELS
    n_audio_features: int = 96  # 32 MFCC + delta + delta-delta (4.2)
    n_word_features: int = 50  # GloVe width: 50 offline default, 300 in the paper
    n_speaker_features: int = 256  # speaker embedding width (GE2E 256; speechbrain x-vector 512)
    n_encoder_features: int = 384  # Whisper encoder width (tiny: 384)
    audio_frontends: tuple = ("mfcc",)  # the paper's; ("whisper",) or ("mfcc", "whisper") too
    audio_kernel_sizes: tuple = (3, 5, 7, 9)  # frames; the paper's sizes are a setting here
    encoder_kernel_sizes: tuple = (1, 3, 5)  # encoder states (20 ms each): 20-100 ms
    text_kernel_sizes: tuple = (1, 2, 3)  # tokens
    n_filters: int = 128  # 3.1: 128 filters per kernel size
    n_hidden: int = 128  # width of the reduction layer (3.4)
    dropout: float = 0.3
    # Table 2 switches and the single-modality models
    use_audio: bool = True
    use_text: bool = True
    use_speaker: bool = False  # the speaker embedding ("x-vectors" in Table 2)
    audio_pooling: str = "spu"  # "spu" (max, avg, std) or "max" ("w/o audio SPU")
    text_pooling: str = "spu"  # "spu" or "max" ("w/o text SPU")
    use_swem: bool = True
    use_attention: bool = True
    # Inference-side settings, stored so that a checkpoint describes itself
    feature_params: dict = field(default_factory=lambda: FeatureParams().to_dict())
    normalizer: Optional[dict] = None  # {"mean": [...], "std": [...]} of training frames
    encoder_context: str = "window"  # "window": 30 s zero-padded, shared with ASR; "clip": 25x cheaper
    encoder_layer: Optional[int] = None  # None: the encoder's output; n: its block n (ser_demo.whisper_layers)
    encoder: Optional[dict] = None  # which Whisper encoder made the states (encoder.spec())
    encoder_normalizer: Optional[dict] = None  # mean/std of the training encoder states
    embeddings: str = DEFAULT_EMBEDDINGS
    speaker_model: Optional[str] = "resemblyzer"  # GE2E (offline), or a speechbrain folder / Hub id
    # Front-ends whose frames are mean/variance-normalised per clip before their CNN (not in the
    # paper): removes a recording's channel and a voice's average timbre, which new speakers and
    # microphones change, at the cost of the clip's average level.
    utterance_norm: tuple = ()
    # A linear head on clip statistics whose answer is mixed into the network's (not in the
    # paper; `ser_demo.statistics_head`): {"parts": [...], "share": 0.25, "penalty": L2}.
    statistics_head: Optional[dict] = None
    # The least probability the text branch alone must give a label (one of words_gate_labels, if
    # set) for the words to be read with the voice (not in the paper; `ser_demo.words_gate`); None
    # reads them always.
    words_gate: Optional[float] = None
    # The labels whose probability counts for the gate; None: any. ("angry", "happy", "sad")
    # reads the words only when they carry an emotion: words the text branch is sure are neutral
    # say nothing about the voice, since most of what people say in any mood is worded neutrally.
    words_gate_labels: Optional[tuple] = None

    def __post_init__(self):
        # JSON gives lists back; tuples keep configs hashable and comparable.
        self.labels = tuple(self.labels)
        self.audio_kernel_sizes = tuple(self.audio_kernel_sizes)
        self.text_kernel_sizes = tuple(self.text_kernel_sizes)
        self.encoder_kernel_sizes = tuple(self.encoder_kernel_sizes)
        self.audio_frontends = tuple(self.audio_frontends)
        self.utterance_norm = tuple(self.utterance_norm)
        if set(self.utterance_norm) - set(self.audio_frontends):
            raise ValueError(f"utterance_norm {self.utterance_norm} names front-ends not in audio_frontends {self.audio_frontends}")
        if not self.audio_frontends or set(self.audio_frontends) - set(FRONTENDS):
            raise ValueError(f"audio_frontends must be a non-empty subset of {FRONTENDS}, got {self.audio_frontends}")
        if self.encoder_context not in CONTEXTS:
            raise ValueError(f"encoder_context must be one of {CONTEXTS}, got {self.encoder_context!r}")
        # The request (encoder_context) and the record of what made the features (encoder) must agree.
        if self.encoder is not None and spec_context(self.encoder) != self.encoder_context:
            raise ValueError(f"encoder_context {self.encoder_context!r} contradicts the encoder that made the "
                             f"features ({spec_context(self.encoder)!r} in {self.encoder})")
        if self.encoder_layer is not None and (isinstance(self.encoder_layer, bool) or not isinstance(self.encoder_layer, int)
                                               or self.encoder_layer < 1):
            raise ValueError(f"encoder_layer must be a block number (1, 2, ...) or null, got {self.encoder_layer!r}")
        if self.encoder is not None and self.encoder.get("layer") != self.encoder_layer:
            raise ValueError(f"encoder_layer {self.encoder_layer!r} contradicts the encoder that made the features "
                             f"(layer {self.encoder.get('layer')!r} in {self.encoder})")
        if not (self.use_audio or self.use_text):
            raise ValueError("a model needs audio, text or both")
        for name in ("audio_pooling", "text_pooling"):
            if getattr(self, name) not in ("spu", "max"):
                raise ValueError(f"{name} must be 'spu' or 'max', got {getattr(self, name)!r}")
        if self.use_speaker and not self.use_audio:
            raise ValueError("the speaker embedding belongs to the audio branch: use_audio=True")
        for f in fields(self):  # "False" from a command line is truthy: refuse it here
            if f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise ValueError(f"{f.name} must be true or false, got {getattr(self, f.name)!r}")
        if self.statistics_head is not None:
            check_head_config(self)
        if self.words_gate_labels is not None:
            self.words_gate_labels = tuple(self.words_gate_labels)
        check_words_gate(self.words_gate, self.words_gate_labels, self.labels)
        if self.n_audio_features != 3 * self.feature_params["n_mfcc"]:
            raise ValueError(
                f"n_audio_features={self.n_audio_features} but feature_params give "
                f"3 x {self.feature_params['n_mfcc']} MFCC rows"
            )

    @property
    def statistics_parts(self) -> tuple:
        return tuple(self.statistics_head["parts"]) if self.statistics_head else ()

    @property
    def attends(self) -> bool:
        """Attention needs audio context vectors and text positions (3.3)."""
        return self.use_attention and self.use_audio and self.use_text

    @property
    def audio_kernels(self) -> tuple:
        """(front-end, kernel size) of every audio feature map, in the order the SPU stacks them."""
        sizes = {"mfcc": self.audio_kernel_sizes, "whisper": self.encoder_kernel_sizes}
        return tuple((f, k) for f in self.audio_frontends for k in sizes[f]) if self.use_audio else ()

    @property
    def words_gate_rule(self) -> Optional[str]:
        """When the words gate sets the words aside, in words (`ser_demo.words_gate.gate_rule`); None
        without a gate."""
        return None if self.words_gate is None else gate_rule(self.words_gate, self.words_gate_labels)

    @property
    def audio_statistics(self) -> tuple:
        return STATISTICS if self.audio_pooling == "spu" else ("max",)

    @property
    def text_statistics(self) -> tuple:
        return STATISTICS if self.text_pooling == "spu" else ("max",)

    def to_dict(self) -> dict:
        return asdict(self)
