"""The training loop every kind shares: optimizer, schedule, checkpoints and resume, evaluation,
several processes through `accelerate`. What a kind trains on and how its loss is computed is a
`Task` (training.ml.sft, training.ml.reward); this loop never looks inside a batch.

One optimizer step = the examples `task.plan(epoch)[i]` names, split across processes (every
world-th) and, within a process, into micro-batches whose gradients add up. Each task divides
its loss by the step's global count (target tokens, prompts) and the processes' gradients are
summed, so a step's gradient is the same on one process or several, in one micro-batch or
many: a run on two processes ends where a run on one does (a test holds them within float
tolerance). `accelerate launch` starts the processes and their process group.

Kill and resume: a checkpoint holds the trainable weights, AdamW's moments, the schedule, the
random states and the step; the data order of an epoch depends only on (seed, epoch). A run
killed after checkpoint N and started again loads N and takes exactly the steps the
uninterrupted run would have taken from there.

Why our own loop and not transformers' Trainer: the reward model scores each answer once (its
K answers on one prompt encoding) and averages the ranking loss per prompt, which Trainer's
per-example batches cannot express; and every phase here is a function a test calls.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from training.ml import checkpoints as ckpt
from training.ml.config import TrainConfig


def _noop(*_args, **_kwargs) -> None:
    return None


@dataclass
class Hooks:
    """How a run reports (the Celery task writes these to the database; tests collect them).
    Any hook may raise to stop the run (a cancelled job raises JobCancelled from `progress`)."""

    # Each optimizer step's metrics: {"step", "epoch", "loss", "lr", "grad_norm", "seconds", ...}.
    log: Callable[[dict], None] = _noop
    # Validation metrics, each time the run evaluates: {"step", "epoch", "validation/loss", ...}.
    evaluate: Callable[[dict], None] = _noop
    # A checkpoint was written: (step, its folder).
    checkpoint: Callable[[int, Path], None] = _noop
    # Called often (every micro-batch, while preparing): (step, total steps). Heartbeats, cancel.
    progress: Callable[[int, int], None] = _noop


class Task(Protocol):
    """A kind of training: its data plan, its loss, its evaluation."""

    def plan(self, epoch: int) -> list[list[int]]:
        """The training examples of each optimizer step of `epoch` (indexes)."""

    def step(self, model, items: list[int], *, global_items: list[int], backward: Callable[[torch.Tensor], None],
             progress: Callable[[], None]) -> dict:
        """Forward and backward over this process's `items` of a step whose examples, over every
        process, are `global_items` (the loss is divided by their count); returns the step's
        metrics as sums ("loss_sum", "loss_count"...) that add up across processes."""

    def evaluate(self, model) -> dict:
        """Validation metrics ({"validation/loss": ...}), computed without gradients."""


@dataclass
class TrainResult:
    steps: int  # optimizer steps taken in total (resumed runs count every step)
    total_steps: int
    resumed_from: int | None  # the checkpoint step this process started from, if any
    final_metrics: dict  # the last evaluation's metrics
    history: list[dict] = field(default_factory=list)  # the steps this process ran (not resumed ones)
    seconds: float = 0.0


def total_steps(*, n_steps_per_epoch: int, config: TrainConfig) -> int:
    total = config.epochs * n_steps_per_epoch
    return min(total, config.max_steps) if config.max_steps else total


def build_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the weights that train; no weight decay on biases and norm weights (1-D)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate, betas=(0.9, 0.95),
                             eps=1e-8)


def build_scheduler(optimizer, config: TrainConfig, total: int):
    """Linear warm-up over `warmup_ratio` of the run's steps, then cosine/linear decay to 0, or
    constant."""
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[config.lr_schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * total),
                         num_training_steps=max(total, 1))


def _eval_due(config: TrainConfig, step: int, step_in_epoch: int, steps_per_epoch: int, total: int) -> bool:
    if step == total or step_in_epoch == steps_per_epoch:
        return True
    return bool(config.eval_every) and step % config.eval_every == 0


def train(*, model, task: Task, config: TrainConfig, checkpoint_dir: Path, hooks: Hooks | None = None,
          accelerator=None) -> TrainResult:
    """Train `model` on `task` to the end of its schedule, resuming from the newest checkpoint in
    `checkpoint_dir` if there is one. The model must already sit on the accelerator's device."""
    hooks = hooks or Hooks()
    t_start = time.perf_counter()
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    is_main = rank == 0
    steps_per_epoch = len(task.plan(0))
    if steps_per_epoch == 0:
        raise ValueError("No training examples: nothing to train on.")
    total = total_steps(n_steps_per_epoch=steps_per_epoch, config=config)

    torch.manual_seed(config.seed)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total)

    start, resumed_from, final_metrics = 0, None, {}
    latest = ckpt.latest_checkpoint(checkpoint_dir)
    if latest is not None:
        state = ckpt.checkpoint_load(latest, model=model, optimizer=optimizer, scheduler=scheduler)
        start = resumed_from = latest.step
        final_metrics = state.get("last_evaluation", {})

    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    history: list[dict] = []
    plans: dict[int, list[list[int]]] = {}
    for step in range(start, total):
        epoch, index = divmod(step, steps_per_epoch)
        if epoch not in plans:
            plans = {epoch: task.plan(epoch)}
        items = plans[epoch][index]
        local = items[rank::world]
        hooks.progress(step, total)
        t0 = time.perf_counter()
        model.train()
        metrics = task.step(model, local, global_items=items, backward=backward,
                            progress=lambda: hooks.progress(step, total))
        if world > 1:
            metrics = _sum_across(metrics)
            _sum_gradients(model)
        grad_norm = _clip(model, config.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        record = {"step": done, "epoch": round(done / steps_per_epoch, 4), "lr": lr,
                  "grad_norm": grad_norm, "seconds": round(time.perf_counter() - t0, 3), **_finish(metrics)}
        history.append(record)
        if is_main:
            hooks.log(record)
        step_in_epoch = index + 1
        if _eval_due(config, done, step_in_epoch, steps_per_epoch, total):
            model.eval()
            with torch.no_grad():
                final_metrics = {"step": done, "epoch": record["epoch"], **task.evaluate(model)} if is_main else {}
            if is_main:
                hooks.evaluate(final_metrics)
        if done % config.checkpoint_every == 0 or step_in_epoch == steps_per_epoch:
            if done < total:  # the finished model is saved by the caller; a finished run never resumes
                _save(checkpoint_dir, done, model, optimizer, scheduler, final_metrics, config, accelerator,
                      hooks, is_main)
    return TrainResult(steps=total, total_steps=total, resumed_from=resumed_from, final_metrics=final_metrics,
                       history=history, seconds=time.perf_counter() - t_start)


def _save(directory, step, model, optimizer, scheduler, last_evaluation, config, accelerator, hooks, is_main):
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
    if is_main:
        path = ckpt.checkpoint_save(directory, step=step, model=model, optimizer=optimizer, scheduler=scheduler,
                                    state={"last_evaluation": last_evaluation}, keep=config.keep_checkpoints)
        hooks.checkpoint(step, path)
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


def _clip(model, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


def _sum_gradients(model) -> None:
    """Add up every process's gradients (each process's loss is already divided by the step's
    global count, so the sum is the step's gradient): one all-reduce per weight after the step's
    micro-batches, rather than DDP's after every backward, so processes that ran different
    numbers of micro-batches never wait on each other."""
    import torch.distributed as dist

    for param in model.parameters():
        if param.requires_grad:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)


def _sum_across(metrics: dict) -> dict:
    """Add up every process's metric sums (`*_sum` and counts): means are taken after."""
    import torch.distributed as dist

    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return {**metrics, **dict(zip(keys, values.tolist()))}


def _finish(metrics: dict) -> dict:
    """Turn a step's sums into its reported means: "loss_sum"/"loss_count" -> "loss"."""
    out = {}
    for key, value in metrics.items():
        if key.endswith("_sum"):
            name = key[:-4]
            count = metrics.get(f"{name}_count", 0)
            out[name] = round(value / count, 6) if count else None
        elif not key.endswith("_count"):
            out[key] = value
    return out
