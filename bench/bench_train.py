"""Training throughput: MSCNN-SPU-ATT against a BiLSTM-attention baseline (the paper's title claims
efficiency), plus optionally the wall time of one full speaker-independent fold.

    python bench/bench_train.py                     # throughput only (~1 min)
    python bench/bench_train.py --fold ../shared/data --epochs 10   # + one full fold
    python bench/bench_train.py --device cuda [--fold ...]          # on a GPU (bfloat16 autocast where supported)

All models see the same batches: 64 utterances of MFCC frames (96-d) and GloVe words (50-d),
lengths drawn from RAVDESS/TESS-like ranges, forward + backward + Adam step, on the CPU or a GPU.
The baseline is MDRE-like (Yoon et al. 2018): a BiLSTM per modality, 128 units per direction, with
the audio summary attending over the text states - hidden sizes of the same order as MSCNN's 128
filters. The third row is the bundled checkpoint's model (Whisper encoder states at half the MFCC
frame rate and a GE2E speaker embedding instead of MFCCs), the one the recipe trains.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ser_demo.devices import autocast, parse_device, resolve_device, to_device  # noqa: E402
from ser_demo.model import MSCNN_SPU_ATT, ModelConfig, lengths_to_mask  # noqa: E402
from ser_demo.recognizer import BUNDLED_CHECKPOINT  # noqa: E402


class BiLSTMAttention(nn.Module):
    """MDRE-style baseline: BiLSTM encoders, audio final state attends over text states."""

    def __init__(self, n_audio=96, n_words=50, hidden=128, n_labels=4):
        super().__init__()
        self.audio_rnn = nn.LSTM(n_audio, hidden, batch_first=True, bidirectional=True)
        self.text_rnn = nn.LSTM(n_words, hidden, batch_first=True, bidirectional=True)
        self.query = nn.Linear(2 * hidden, 2 * hidden, bias=False)
        self.out = nn.Sequential(nn.Dropout(0.3), nn.Linear(6 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))

    def forward(self, mfcc, audio_lengths, words, word_lengths):
        packed = nn.utils.rnn.pack_padded_sequence(mfcc.transpose(1, 2), audio_lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_audio, _) = self.audio_rnn(packed)
        audio = torch.cat([h_audio[0], h_audio[1]], -1)
        packed = nn.utils.rnn.pack_padded_sequence(words, word_lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        states, (h_text, _) = self.text_rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=words.shape[1])
        mask = lengths_to_mask(word_lengths, words.shape[1])
        scores = torch.einsum("bd,btd->bt", self.query(audio), states).masked_fill(~mask, -1e9)
        attended = torch.einsum("bt,btd->bd", scores.softmax(-1) * mask, states)
        return self.out(torch.cat([audio, torch.cat([h_text[0], h_text[1]], -1), attended], -1))


def make_batch(g, batch=64, frames=(150, 300), tokens=(5, 25)):
    audio_lengths = torch.randint(*frames, (batch,), generator=g)
    word_lengths = torch.randint(*tokens, (batch,), generator=g)
    return {
        "mfcc": torch.randn(batch, 96, int(audio_lengths.max()), generator=g),
        "audio_lengths": audio_lengths,
        "words": torch.randn(batch, int(word_lengths.max()), 50, generator=g),
        "word_lengths": word_lengths,
        # the bundled checkpoint's inputs: Whisper encoder states (50 per second, half the MFCC
        # rate) and a GE2E speaker embedding
        "encoder_states": torch.randn(batch, 384, int(audio_lengths.max()) // 2, generator=g),
        "encoder_lengths": audio_lengths // 2,
        "speaker": torch.randn(batch, 256, generator=g),
    }


def inputs_of(model, batch):
    """The part of a batch that a model takes."""
    if isinstance(model, BiLSTMAttention):
        return {k: batch[k] for k in ("mfcc", "audio_lengths", "words", "word_lengths")}
    config = model.config
    keep = {"words", "word_lengths"}
    keep |= {"mfcc", "audio_lengths"} if "mfcc" in config.audio_frontends else set()
    keep |= {"encoder_states", "encoder_lengths"} if "whisper" in config.audio_frontends else set()
    keep |= {"speaker"} if config.use_speaker else set()
    return {k: v for k, v in batch.items() if k in keep}


def throughput(model, batches, labels, device, warmup=2):
    """Median seconds per training step, the batch's copy to the device included (as in training)."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    model.train()
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        batch = to_device(inputs_of(model, batch), device)
        with autocast(device):
            out = model(**batch)
        logits = out.logits if hasattr(out, "logits") else out
        loss = F.cross_entropy(logits.float(), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # GPU work is asynchronous: wait before reading the clock
        if i >= warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return len(labels) / seconds, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fold", default=None, metavar="SHARED_DATA", help="also time one full fold on these corpora")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default=None, help="auto (default: $SER_DEVICE, else CUDA when available), cpu, cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)

    g = torch.Generator().manual_seed(0)
    batches = [make_batch(g) for _ in range(args.steps)]
    labels = torch.randint(0, 4, (64,), generator=g)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, batch 64, median of {args.steps - 2} steps")
    print(f"{'model':<22} {'params':>10} {'utt/s':>8} {'s/batch':>8}")
    results = {}
    bundled = MSCNN_SPU_ATT.from_pretrained(BUNDLED_CHECKPOINT)
    models = (("MSCNN-SPU-ATT", MSCNN_SPU_ATT(ModelConfig())), ("BiLSTM-attention", BiLSTMAttention()),
              ("bundled (Whisper+GE2E)", bundled))
    for name, model in models:
        torch.manual_seed(0)
        rate, seconds = throughput(model, batches, labels, device)
        results[name] = rate
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<22} {params:>10,} {rate:>8.1f} {seconds:>8.3f}")
    print(f"speed-up of MSCNN-SPU-ATT over the BiLSTM baseline: {results['MSCNN-SPU-ATT'] / results['BiLSTM-attention']:.2f}x")

    if args.fold:
        data = Path(args.fold)
        out = Path("runs/bench-fold")
        command = [sys.executable, "-m", "train", "cv", "--audio", f"ravdess={data / 'ravdess'}", "--audio", f"tess={data / 'tess'}",
                   "--text", str(data / "goemotions"), "--protocol", "speaker-independent", "--seeds", "0", "--max-folds", "1",
                   "--epochs", str(args.epochs), "--drop-text", "0.3", "--drop-audio", "0.3", "--no-progress", "--out", str(out),
                   "--device", parse_device(args.device)]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL)
        print(f"one full speaker-independent fold (RAVDESS 01-18 + TESS + GoEmotions, {args.epochs} epochs, on {device}, "
              f"features cached after the first run): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
