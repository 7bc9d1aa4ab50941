"""Resumable checkpoints: everything a killed run needs to continue as if it never stopped.

    checkpoint-<step>/
        trainable.safetensors   the weights that train (all of them, or the LoRA adapter and head)
        optimizer.pt            AdamW's moments
        scheduler.pt            the learning-rate schedule's position
        rng.pt                  Python, NumPy and torch (CPU and CUDA) random states
        state.json              step, epoch, and what the run needs to carry on (e.g. metrics so far)
        task/                   what the kind itself carries between steps, if anything (PPO: the
                                rollout being trained on and its KL controller)

A checkpoint is written into a temporary folder and renamed when complete, so a run killed while
saving leaves the previous checkpoint intact; only the newest `keep` are kept.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

PREFIX = "checkpoint-"


@dataclass
class Checkpoint:
    step: int
    path: Path

    @property
    def state(self) -> dict:
        return json.loads((self.path / "state.json").read_text())


def rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_restore(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The weights that train, by name: every weight of a fully trained model (a weight tied to
    another, like SmolLM2's output and input embeddings, once), or a LoRA adapter and its head."""
    model = getattr(model, "module", model)
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def checkpoint_save(directory: Path, *, step: int, model, optimizer, scheduler, state: dict, keep: int,
                    save_task: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint `step` (`save_task(folder)` writes the task's own state into it), keep
    the newest `keep`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{step}"
    tmp = directory / f".{PREFIX}{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
    if save_task is not None:
        (tmp / "task").mkdir()
        save_task(tmp / "task")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def checkpoints(directory: Path) -> list[Checkpoint]:
    """The complete checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if path.name.startswith(PREFIX) and (path / "state.json").exists():
            tail = path.name[len(PREFIX):]
            if tail.isdigit():
                found.append(Checkpoint(int(tail), path))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    found = checkpoints(directory)
    return found[-1] if found else None


def checkpoint_load(checkpoint: Checkpoint, *, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, schedule and random states; returns the saved state dict."""
    from safetensors.torch import load_file

    target = getattr(model, "module", model)
    weights = load_file(checkpoint.path / "trainable.safetensors")
    device = next(target.parameters()).device
    params = dict(target.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise ValueError(f"Checkpoint {checkpoint.path} does not fit this model (unknown weights {missing[:3]}).")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(device))
    optimizer.load_state_dict(torch.load(checkpoint.path / "optimizer.pt", map_location=device, weights_only=False))
    scheduler.load_state_dict(torch.load(checkpoint.path / "scheduler.pt", weights_only=False))
    rng_restore(torch.load(checkpoint.path / "rng.pt", weights_only=False))
    return checkpoint.state
