"""The training loop every kind shares: optimizer, schedule, checkpoints and resume, evaluation,
several processes through `accelerate`. What a kind trains on and how its loss is computed is a
`Task` (training.ml.sft, training.ml.reward); this loop never looks inside a batch.

One optimizer step = the examples `task.plan(epoch)[i]` names, split across processes (every
world-th) and, within a process, into micro-batches whose gradients add up. Each task divides
its loss by the step's global count (target tokens, prompts) and the processes' gradients are
summed, so a step's gradient is the same on one process or several, in one micro-batch or
many: a run on two processes ends where a run on one does (a test holds them within float
tolerance). `accelerate launch` starts the processes and their process group
(training.ml.launch).

Several processes, what each does (no DDP wrapper: every collective below is called by every
process the same number of times, whatever its share of a step, so none can hang on another):
    start       rank 0's weights are broadcast to all (a new head or adapter is drawn from the
                seed everywhere; this makes "the same start" a fact, not a hope)
    each step   its items[rank::world] (a small last step can leave a process none: it still
                joins the sums, with zero gradients); then one all-reduce of the metric sums over
                the union of their names, and one of the gradients (bucketed) -- a weight no
                process used keeps no gradient, as on one process
    evaluation  the main process only; the others go on and wait for it in the next collective
    checkpoint  every process's random states gathered; the main process writes between two
                barriers; on resume every process loads the checkpoint (and its own random states)
    end         the final metrics broadcast from the main process; `replica_difference`, how far
                the processes' weights drifted apart (0.0: the same all-reduced gradients gave the
                same updates everywhere)

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
    # A line for the run's log when a phase without optimizer steps starts (sampling, the
    # reference pass, the win rate), so that a run at step 0 for minutes says what it is doing.
    say: Callable[[str], None] = _noop


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

    # Optional, for a task that carries state between steps (PPO's rollout and KL controller):
    # save_state(folder) writes it into a checkpoint, load_state(folder) restores it on resume.


@dataclass
class TrainResult:
    steps: int  # optimizer steps taken in total (resumed runs count every step)
    total_steps: int
    resumed_from: int | None  # the checkpoint step this process started from, if any
    final_metrics: dict  # the last evaluation's metrics
    history: list[dict] = field(default_factory=list)  # the steps this process ran (not resumed ones)
    seconds: float = 0.0
    # Several processes: the largest difference between a process's weight fingerprint and the
    # main process's at the end (0.0 when they hold the same weights); None on one process.
    replica_difference: float | None = None


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
    # The fused kernel: one pass over every weight instead of a loop of small ops. Measured on the
    # 2-core CPU for 133M weights: 0.26 s a step against 1.41 s (foreach 1.28 s); transformers'
    # Trainer uses it too ("adamw_torch_fused").
    device = (decay or no_decay)[0].device.type if (decay or no_decay) else "cpu"
    fused = device in ("cpu", "cuda")
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate, betas=(0.9, 0.95),
                             eps=1e-8, fused=fused or None)


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
    if world > 1:
        _broadcast_weights(model)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total)

    start, resumed_from, final_metrics = 0, None, {}
    latest = ckpt.latest_checkpoint(checkpoint_dir)
    if latest is not None:  # every process loads it (the main process wrote it)
        state = ckpt.checkpoint_load(latest, model=model, optimizer=optimizer, scheduler=scheduler)
        start = resumed_from = latest.step
        final_metrics = state.get("last_evaluation", {})
        own_rng = latest.path / f"rng-{rank}.pt"
        if rank > 0 and own_rng.exists():
            ckpt.rng_restore(torch.load(own_rng, weights_only=False))
        if hasattr(task, "load_state") and (latest.path / "task").is_dir():
            task.load_state(latest.path / "task")

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
        if _eval_due(config, done, step_in_epoch, steps_per_epoch, total) and is_main:
            # The main process only: the others go on and wait for it in the next collective.
            model.eval()
            with torch.no_grad():
                final_metrics = {"step": done, "epoch": record["epoch"], **task.evaluate(model)}
            hooks.evaluate(final_metrics)
        if done % config.checkpoint_every == 0 or step_in_epoch == steps_per_epoch:
            if done < total:  # the finished model is saved by the caller; a finished run never resumes
                _save(checkpoint_dir, done, model, optimizer, scheduler, final_metrics, config, accelerator,
                      hooks, is_main, getattr(task, "save_state", None))
    replica_difference = None
    if world > 1:
        final_metrics = _from_main(final_metrics)
        replica_difference = _replica_difference(model)
    return TrainResult(steps=total, total_steps=total, resumed_from=resumed_from, final_metrics=final_metrics,
                       history=history, seconds=time.perf_counter() - t_start, replica_difference=replica_difference)


def _save(directory, step, model, optimizer, scheduler, last_evaluation, config, accelerator, hooks, is_main,
          save_task=None):
    several = accelerator is not None and accelerator.num_processes > 1
    rng_states = _gather_objects(ckpt.rng_state()) if several else []  # also the barrier before saving
    if is_main:
        path = ckpt.checkpoint_save(directory, step=step, model=model, optimizer=optimizer, scheduler=scheduler,
                                    state={"last_evaluation": last_evaluation}, keep=config.keep_checkpoints,
                                    save_task=save_task)
        # The others' random states (dropout draws differ by rank); a checkpoint without them
        # (killed in between) resumes every process from the main process's.
        for other, state in enumerate(rng_states[1:], start=1):
            torch.save(state, path / f"rng-{other}.pt")
        hooks.checkpoint(step, path)
    if several:
        accelerator.wait_for_everyone()  # nobody goes on (or resumes) before the checkpoint is whole


def _clip(model, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


BUCKET_ELEMENTS = 1 << 24  # values per all-reduce/broadcast (64 MiB of fp32): few calls, bounded extra memory


def _buckets(tensors: list[torch.Tensor]) -> list[list[int]]:
    """Indexes of `tensors` grouped by dtype and device into runs of at most BUCKET_ELEMENTS
    values (a bigger tensor is a bucket of its own)."""
    buckets: list[list[int]] = []
    open_: dict[tuple, tuple[list[int], int]] = {}
    for i, t in enumerate(tensors):
        key = (t.dtype, t.device)
        members, size = open_.get(key, ([], 0))
        if members and size + t.numel() > BUCKET_ELEMENTS:
            buckets.append(members)
            members, size = [], 0
        members.append(i)
        open_[key] = (members, size + t.numel())
    buckets.extend(members for members, _ in open_.values() if members)
    return buckets


def _collective_flat(tensors: list[torch.Tensor], op: Callable[[torch.Tensor], None]) -> None:
    """Run `op` (an in-place collective) over `tensors` flattened bucket by bucket, and copy the
    results back into them."""
    for bucket in _buckets(tensors):
        members = [tensors[i] for i in bucket]
        flat = torch.cat([t.reshape(-1) for t in members])
        op(flat)
        offset = 0
        for t in members:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def _sum_gradients(model) -> None:
    """Add up every process's gradients (each process's loss is already divided by the step's
    global count, so the sum is the step's gradient): all-reduces after the step's micro-batches,
    rather than DDP's after every backward, so processes that ran different numbers of
    micro-batches (or none: a small last step) never wait on each other. A process that did not
    use a weight adds zeros; a weight no process used keeps no gradient, so AdamW skips it as it
    does on one process (zeros would still move it by its momentum and weight decay)."""
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    summed = []
    for param, flag in zip(params, used.tolist()):
        if flag:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            summed.append(param.grad)
    _collective_flat(summed, lambda flat: dist.all_reduce(flat, op=dist.ReduceOp.SUM))


def _broadcast_weights(model) -> None:
    """Every process starts from the main process's weights (what DDP does when it wraps a model)."""
    import torch.distributed as dist

    with torch.no_grad():
        _collective_flat([p.data for p in model.parameters()], lambda flat: dist.broadcast(flat, src=0))


def _gather_objects(value) -> list:
    """Every process's `value` (picklable), in rank order, on every process."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _from_main(value):
    """The main process's `value` on every process."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sum_across(metrics: dict) -> dict:
    """Add up every process's metric sums (`*_sum` and counts): means are taken after. Over the
    union of the names: a process with no items in a step may report none (the reward task's
    sums are empty then), and mismatched all-reduces would hang. Summed in rank order in
    Python, so every process gets the very same numbers."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    gathered = _gather_objects(numeric)
    names = sorted({k for part in gathered for k in part})
    summed = {}
    for name in names:
        values = [part.get(name, 0) for part in gathered]
        summed[name] = sum(values) if all(isinstance(v, int) for v in values) else float(sum(map(float, values)))
    return {**metrics, **summed}


def _replica_difference(model) -> float:
    """How far the processes' weights drifted apart: per weight its sum and sum of squares in
    float64, gathered, the largest difference from the main process's. 0.0 when identical."""
    import torch.distributed as dist

    params = list(model.parameters())
    device = params[0].device
    with torch.no_grad():
        mine = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in params]).reshape(-1)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine.to(device))
    return max(float((other - everyone[0]).abs().max()) for other in everyone)


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
