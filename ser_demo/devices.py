"""Where the tensors live: one place turns "auto" / "cpu" / "cuda" into a device, for the library,
the app and the trainer.

- `resolve_device`: the `--device` flag or SER_DEVICE; "auto" (the default) means CUDA when
  PyTorch sees a GPU, else the CPU. Asking for CUDA where there is none warns and uses the CPU,
  so an app configured for GPU hardware still starts on a CPU-only machine.
- `to_device`: a padded batch (dict of tensors) onto a device.
- `autocast`: mixed precision where it is safe: bfloat16 on CUDA cards that have it. Not float16:
  the attention mask's -1e9 overflows it and its gradients would need loss scaling. On the CPU
  it does nothing (the model is small; float32 is as fast there).
- `init_distributed`: under torchrun, NCCL when every rank has a GPU, else gloo.
- `whisper_device`: the device CTranslate2 (faster-whisper) can use.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Optional

import torch

DEVICE_ENV = "SER_DEVICE"
CHOICES = ("auto", "cpu", "cuda")


def parse_device(name: Optional[str]) -> str:
    """Check a device name: auto, cpu, cuda or cuda:N (empty/None: SER_DEVICE, else auto).
    Raises ValueError naming the choices for anything else."""
    from_env = name is None or not str(name).strip()
    name = (os.environ.get(DEVICE_ENV, "") if from_env else str(name)).strip().lower() or "auto"
    kind, _, index = name.partition(":")
    if kind not in CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        where = f" (from {DEVICE_ENV})" if from_env else ""
        raise ValueError(f"device must be one of {', '.join(CHOICES)} or cuda:N, got {name!r}{where}")
    return name


def resolve_device(name: Optional[str] = None, *, local_rank: Optional[int] = None) -> torch.device:
    """The torch device for `name` (see parse_device). Under torchrun each rank takes the GPU of
    its LOCAL_RANK; "cuda" without a usable GPU falls back to the CPU with a warning."""
    name = parse_device(name)
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name != "auto":
            warnings.warn(f"device {name!r} asked for, but PyTorch sees no CUDA GPU: using the CPU", stacklevel=2)
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if ":" in name:
        index = int(name.partition(":")[2])
        if index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s)")
    else:
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= count:  # more processes on this machine than GPUs: the extra ones use the CPU
            warnings.warn(f"rank {local_rank} has no GPU of its own ({count} on this machine): using the CPU",
                          stacklevel=2)
            return torch.device("cpu")
        index = local_rank
    return torch.device("cuda", index)


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Every tensor of a batch on `device` (non-tensor entries unchanged)."""
    device = torch.device(device)
    non_blocking = device.type == "cuda"  # overlaps the copy with the GPU's work
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def mixed_precision_dtype(device: torch.device | str) -> Optional[torch.dtype]:
    """bfloat16 on a CUDA device that supports it, else None (float32)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, enabled: bool = True):
    """A context for the forward pass: bfloat16 autocast where `mixed_precision_dtype` allows,
    else nothing. Losses are computed outside it, in float32."""
    dtype = mixed_precision_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def ddp_backend(every_rank_has_gpu: bool) -> str:
    """NCCL (GPU to GPU) when every rank trains on a GPU and PyTorch has NCCL, else gloo."""
    if every_rank_has_gpu and torch.distributed.is_nccl_available():
        return "nccl"
    return "gloo"


def init_distributed(device_name: Optional[str] = None):
    """(rank, world size, device, process group for DDP) for this process.

    One process: (0, 1, device, None). Under torchrun (WORLD_SIZE > 1) the default group is gloo,
    which works everywhere and lets the ranks agree on the rest: if every rank has a GPU, DDP
    gets an NCCL group; otherwise it keeps gloo (which also carries CUDA tensors)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, resolve_device(device_name), None
    device = resolve_device(device_name, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    flag = torch.tensor([1 if device.type == "cuda" else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    backend = ddp_backend(bool(flag.item()))
    group = None
    if backend == "nccl":
        torch.cuda.set_device(device)
        group = dist.new_group(backend="nccl")
    return dist.get_rank(), world, device, group


def whisper_device(name: Optional[str] = None) -> str:
    """"cuda" when `name` resolves to a GPU and CTranslate2 was built with CUDA and sees one,
    else "cpu". (Whether its CUDA libraries really load shows only when the model runs: the
    transcriber tries and falls back to the CPU.)"""
    if resolve_device(name).type != "cuda":
        return "cpu"
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # an import or driver failure means no GPU for Whisper, not no Whisper
        return "cpu"
