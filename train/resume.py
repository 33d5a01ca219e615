"""A training run's resumable state: safetensors + JSON, never pickle.

`fit` saves it at the end of every epoch into its run folder and, started again with the same
folder, goes on from the last epoch saved, so a long cross-validation survives being stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file


def save_state(run_dir: Path, model, optimizer, best_state, info: dict, averaged=None, adversary=None) -> None:
    """Everything a resumed run needs to go on as if never stopped: weights, Adam's moments, the
    weight average (EMA), the speaker adversary's weights and the random state that dropout draws
    from."""
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    if adversary is not None:
        tensors |= {f"adversary.{k}": v.contiguous() for k, v in adversary.state_dict().items()}
    tensors |= {f"best.{k}": v.contiguous() for k, v in best_state.items()}
    for i, state in optimizer.state_dict()["state"].items():
        tensors |= {f"adam.{i}.{k}": torch.as_tensor(v).reshape(-1) if k == "step" else v for k, v in state.items()}
    if averaged is not None:
        tensors |= {f"ema.{k}": v.contiguous().reshape(-1) if v.dim() == 0 else v.contiguous()
                    for k, v in averaged.state_dict().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors |= {f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    tmp = run_dir / "state.safetensors.tmp"
    save_file({k: v.detach().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, run_dir / "state.safetensors")
    (run_dir / "state.json").write_text(json.dumps(info, indent=1))


def load_state(run_dir: Path, model, optimizer, averaged=None, log: Callable[[str], None] = print,
               adversary=None) -> Optional[tuple[dict, dict]]:
    if not (run_dir / "state.json").is_file():
        return None
    tensors = load_file(str(run_dir / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    saved = {k[10:]: v for k, v in tensors.items() if k.startswith("adversary.")}
    if adversary is not None and saved:
        adversary.load_state_dict(saved)
    elif adversary is not None:  # a run started without one: it starts from scratch here
        log("the saved state has no speaker adversary: it starts learning from this epoch")
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, i, name = key.split(".", 2)
            opt["state"].setdefault(int(i), {})[name] = value.reshape(()) if name == "step" else value
    optimizer.load_state_dict(opt)
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    if averaged is not None and ema:
        reference = averaged.state_dict()
        averaged.load_state_dict({k: v.reshape(reference[k].shape) for k, v in ema.items()})
    elif averaged is not None:  # a state saved before the average was: it starts again from here
        log("the saved state has no weight average (written before states kept it): further epochs restart it")
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return best, json.loads((run_dir / "state.json").read_text())
