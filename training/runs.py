"""Writes for training runs: create (admins), run (on a `training` worker), cancel, recover.

A run's life is every job's (studio.jobs); what is particular to training:

    training_run_create   validates kind, base model, snapshot and config (training.ml.config,
                          defaults filled in and stored), saves the run and publishes it
    training_run_execute  claims the run, resumes from its newest checkpoint if it has one
                          (metrics logged after that checkpoint are dropped: they are re-logged),
                          trains (training.ml.run.run_training), registers the model with its
                          lineage, and for a reward model records its validation evaluation
    training_run_cancel   the worker stops at its next step or micro-batch

The worker writes progress through `_RunHooks`: every step's metrics become a TrainingMetric row
and the run's step, epoch, ETA and latest metrics, with a heartbeat; a cancel is seen there.
"""
from __future__ import annotations

import logging
import shutil
import sys
import time
import uuid
from collections import deque
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeling.models import Project
from modelhub.loading import FORMAT_PEFT, pick_device
from modelhub.models import ModelArtifact
from modelhub.registry import model_register, model_resolve_path, model_store_dir
from studio import jobs
from studio.errors import PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, has_role
from training.ml import checkpoints as ckpt
from training.ml.config import ConfigError, config_from_dict
from training.ml.soft_prompt import adapter_start_problem, adapter_type
from training.models import DatasetSnapshot, ModelEvaluation, TrainingMetric, TrainingRun
from training.snapshots import snapshot_read_rows

log = logging.getLogger(__name__)

Status = TrainingRun.Status
AVAILABLE_KINDS = (TrainingRun.Kind.SFT, TrainingRun.Kind.REWARD, TrainingRun.Kind.DPO, TrainingRun.Kind.PPO,
                   TrainingRun.Kind.BEST_OF_N)
REGISTERED_KIND = {TrainingRun.Kind.SFT: ModelArtifact.Kind.SFT, TrainingRun.Kind.REWARD: ModelArtifact.Kind.REWARD,
                   TrainingRun.Kind.DPO: ModelArtifact.Kind.DPO, TrainingRun.Kind.PPO: ModelArtifact.Kind.POLICY,
                   TrainingRun.Kind.BEST_OF_N: ModelArtifact.Kind.BEST_OF_N}
LOG_LINES = 200  # lines of the run's log kept for its page
STEP_LINES = 50  # about this many step lines over a run, so evaluations and resumes stay in view


def _check_admin(user) -> None:
    """`user` None is the command line (manage.py training_run), which acts as the system."""
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can start or cancel training runs.")


# --- Create, cancel ---------------------------------------------------------------------------

def check_run_config(kind: str, config) -> dict:
    """The run's config with every default filled in; ValidationFailed names a wrong field."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ValidationFailed("config must be a JSON object of settings (or {} for the defaults).",
                               {"config": ["A JSON object."]})
    try:
        return config_from_dict(kind, config).as_dict()
    except ConfigError as exc:
        raise ValidationFailed(f"config.{exc.field}: {exc.message}.", {"config": {exc.field: [exc.message]}}) from exc


def _check_kind(kind) -> str:
    if kind in AVAILABLE_KINDS:
        return kind
    if kind in TrainingRun.Kind.values:
        message = f"{kind} runs are not available yet; {', '.join(AVAILABLE_KINDS)} are."
    else:
        message = f"Unknown kind {kind!r}; use one of {', '.join(AVAILABLE_KINDS)}."
    raise ValidationFailed(message, {"kind": [message]})


def _check_base(*, kind: str, base_model: ModelArtifact, project: Project, config: dict) -> None:
    if not base_model.is_generative:
        raise ValidationFailed(f"{base_model.name} is a reward model; start from a language model (the base or an "
                               "SFT model).", {"base_model": ["Not a language model."]})
    if base_model.project_id is not None and base_model.project_id != project.pk:
        raise ValidationFailed(f"{base_model.name} was trained on another project's labels; train from this "
                               "project's models or an imported one.", {"base_model": ["Another project's model."]})
    start = adapter_type(model_resolve_path(model=base_model)) if base_model.format == FORMAT_PEFT else ""
    problem = adapter_start_problem(kind=kind, lora=config["lora"], soft_prompt=config["soft_prompt"], start=start)
    if problem:
        raise ValidationFailed(f"{base_model.name} {problem}", {"base_model": [problem]})


# Kinds that take a reward model: PPO and best-of-n learn from it (required); DPO is judged by it
# (optional). Each is judged at the end by its win rate over its starting model.
JUDGED_KINDS = (TrainingRun.Kind.DPO, TrainingRun.Kind.PPO, TrainingRun.Kind.BEST_OF_N)
NEEDS_REWARD_MODEL = (TrainingRun.Kind.PPO, TrainingRun.Kind.BEST_OF_N)


def _check_reward_model(*, kind: str, reward_model, project: Project) -> ModelArtifact:
    if kind not in JUDGED_KINDS:
        raise ValidationFailed(f"{kind} runs take no reward_model.", {"reward_model": ["Not used by this kind."]})
    reward_model = _resolve(ModelArtifact, reward_model, "reward_model", "model")
    if reward_model.kind != ModelArtifact.Kind.REWARD:
        raise ValidationFailed(f"{reward_model.name} is not a reward model; pick one trained by a reward run.",
                               {"reward_model": ["Not a reward model."]})
    if reward_model.project_id is not None and reward_model.project_id != project.pk:
        raise ValidationFailed(f"{reward_model.name} was trained on another project's labels; judge with this "
                               "project's reward model.", {"reward_model": ["Another project's model."]})
    return reward_model


def _resolve(model_class, value, field: str, what: str):
    if isinstance(value, model_class):
        return value
    lookup = {"sha256": str(value).lower()} if model_class is DatasetSnapshot else {"pk": value}
    if model_class is not DatasetSnapshot and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValidationFailed(f"{field} must be a {what} id.", {field: [f"A {what} id."]})
    found = model_class.objects.filter(**lookup).first() if value not in (None, "") else None
    if found is None:
        raise ValidationFailed(f"No {what} {value!r}.", {field: [f"No {what} {value!r}."]})
    return found


def training_run_create(*, user, kind, base_model, snapshot, config=None, reward_model=None,
                        enqueue: bool = True) -> TrainingRun:
    """An admin starts a run: validated, saved ("queued") with its full config, and published to
    the `training` queue (unless `enqueue` is False: `manage.py training_run --foreground` runs it
    in its own process). Must not run inside a transaction: the worker has to see the row."""
    _check_admin(user)
    kind = _check_kind(kind)
    base_model = _resolve(ModelArtifact, base_model, "base_model", "model")
    snapshot = _resolve(DatasetSnapshot, snapshot, "snapshot", "snapshot")
    project = snapshot.project
    if reward_model is not None:
        reward_model = _check_reward_model(kind=kind, reward_model=reward_model, project=project)
    elif kind in NEEDS_REWARD_MODEL:
        raise ValidationFailed(f"{kind} runs learn from a reward model: give reward_model (a reward model's id).",
                               {"reward_model": ["Required for this kind."]})
    if project.is_archived:
        raise ValidationFailed("The snapshot's project is archived; unarchive it to train.")
    full_config = check_run_config(kind, config)
    _check_base(kind=kind, base_model=base_model, project=project, config=full_config)
    if not snapshot.file_path.exists():
        raise ValidationFailed(f"The file of snapshot {snapshot.short_hash} is missing from the data directory; "
                               "make the snapshot again.", {"snapshot": ["File missing."]})
    with transaction.atomic():
        run = TrainingRun.objects.create(kind=kind, project=project, base_model=base_model, snapshot=snapshot,
                                         reward_model=reward_model, config=full_config, created_by=user, celery_task_id=str(uuid.uuid4()))
    if enqueue:
        jobs.job_enqueue(job=run)
    return run


def training_run_cancel(*, user, run: TrainingRun) -> TrainingRun:
    """Stop a queued or running run; its checkpoints stay on disk until it is deleted."""
    _check_admin(user)
    return jobs.job_cancel(job=run)


def training_runs_recover(*, worker_prefix: str = "") -> list[int]:
    """Re-queue runs whose worker is gone: they resume from their newest checkpoint."""
    return jobs.jobs_recover(model=TrainingRun, worker_prefix=worker_prefix)


# --- Run (on a worker) ------------------------------------------------------------------------

def training_run_execute(*, run_id: int, worker: str = "") -> TrainingRun | None:
    return jobs.job_run(model=TrainingRun, job_id=run_id, worker=worker, body=_run_body,
                        select_related=("base_model", "base_model__parent", "snapshot", "project"))


class _RunHooks:
    """training.ml.trainer.Hooks that write to the database, each with a heartbeat: a cancelled
    run raises JobCancelled out of the trainer at its next step or micro-batch."""

    def __init__(self, run: TrainingRun, lines: deque):
        self.run = run
        self.lines = lines
        self.beat = jobs.Heartbeat(run)
        self.step_seconds: list[float] = []
        self.started = time.perf_counter()

    def _say(self, line: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {line}")

    def say(self, line: str) -> None:
        self._say(line)
        self.beat(force=True, log_tail="\n".join(self.lines))

    def progress(self, step: int, total: int) -> None:
        if total and total != self.run.total_steps:
            self.beat(force=True, total_steps=total)
        else:
            self.beat()

    def log(self, record: dict) -> None:
        run = self.run
        step = record["step"]
        self.step_seconds.append(record.get("seconds") or 0.0)
        recent = self.step_seconds[-20:]
        eta = round(sum(recent) / len(recent) * max(run.total_steps - step, 0), 1) if recent else None
        TrainingMetric.objects.update_or_create(run=run, split=TrainingMetric.Split.TRAIN, step=step,
                                                defaults={"values": record})
        latest = {**run.metrics, **{f"train/{k}": v for k, v in record.items() if k not in ("step", "epoch")}}
        loss = record.get("loss")
        if record.get("alarm"):
            self._say(f"WARNING at step {step}: {record['alarm']}")
        if step <= 3 or step == run.total_steps or step % max(run.total_steps // STEP_LINES, 1) == 0:
            self._say(f"step {step}/{run.total_steps}  loss {loss if loss is not None else '-'}  "
                      f"lr {record.get('lr', 0):.3g}  {record.get('seconds', 0):.1f} s")
        self.beat(force=True, step=step, epoch=record.get("epoch", 0.0), eta_seconds=eta, metrics=latest,
                  log_tail="\n".join(self.lines))

    def evaluate(self, metrics: dict) -> None:
        run = self.run
        TrainingMetric.objects.update_or_create(run=run, split=TrainingMetric.Split.VALIDATION,
                                                step=metrics["step"], defaults={"values": metrics})
        shown = {k: v for k, v in metrics.items() if k.startswith("validation/") and isinstance(v, (int, float))}
        self._say("validation at step {}: {}".format(
            metrics["step"], ", ".join(f"{k.removeprefix('validation/')} {v:.4g}" for k, v in shown.items())
            or "nothing to validate on (the snapshot's validation split holds no examples of this kind)"))
        self.beat(force=True, metrics={**run.metrics, **{k: v for k, v in metrics.items() if k.startswith("validation/")}},
                  log_tail="\n".join(self.lines))

    def checkpoint(self, step: int, path: Path) -> None:
        self._say(f"checkpoint saved at step {step}")
        self.beat(force=True, checkpoint_step=step, log_tail="\n".join(self.lines))


def _library_versions() -> dict:
    import accelerate
    import peft
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__}


def _paths(run: TrainingRun, base: ModelArtifact | None = None) -> tuple[Path, Path | None]:
    """(the model's path, the base of an adapter) for the run's base model (or `base`), with a
    message a user can act on when one is missing."""
    base = base or run.base_model
    path = model_resolve_path(model=base)
    adapter_of = None
    if base.format == FORMAT_PEFT:
        if base.parent is None:
            raise jobs.JobFailure(f"Adapter {base.name} (id {base.pk}) has no parent model to apply it to.")
        adapter_of = model_resolve_path(model=base.parent)
    for p in (path, adapter_of):
        if p is not None and not p.exists():
            raise jobs.JobFailure(f"Model {base.name} (id {base.pk}) is missing: {p} does not exist. Re-import it or "
                                  "start the run from another model.")
    return path, adapter_of


def _failure_message(exc: BaseException) -> str | None:
    """Words a user can act on for the failures training has; None for unexpected ones."""
    import torch

    from training.ml.ppo import PolicyDiverged
    from training.ml.run import TrainingDataError

    if isinstance(exc, (TrainingDataError, ConfigError, PolicyDiverged)):
        return str(exc)
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return ("The run ran out of memory. Lower tokens_per_microbatch (or max_length), or turn on lora, and start "
                "it again; it resumes from its last checkpoint.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return "The disk is full: checkpoints and the model could not be written. Free space and start the run again."
    return None


def _run_body(run: TrainingRun) -> None:
    from training.ml.run import RunSpec, run_training

    base_path, adapter_of = _paths(run)
    snapshot = run.snapshot
    if not snapshot.file_path.exists():
        raise jobs.JobFailure(f"The file of snapshot {snapshot.short_hash} is missing from the data directory.")
    checkpoint_dir = run.run_dir / "checkpoints"
    output_dir = model_store_dir() / "trained" / f"run-{run.pk}-{run.kind}"
    lines: deque = deque((run.log_tail or "").splitlines(), maxlen=LOG_LINES)
    latest = ckpt.latest_checkpoint(checkpoint_dir)
    if latest is not None:
        # The steps after the checkpoint are run again: their metrics are logged again.
        TrainingMetric.objects.filter(run=run, step__gt=latest.step).delete()
        run.resumed_from_step, run.resumes = latest.step, run.resumes + 1
        run.save(update_fields=["resumed_from_step", "resumes", "updated_at"])
        lines.append(f"{time.strftime('%H:%M:%S')} resumed from the checkpoint at step {latest.step}")
    try:
        device = pick_device(getattr(settings, "STUDIO_DEVICE", "") or None)
    except Exception as exc:
        raise jobs.JobFailure(str(exc)) from exc
    hooks = _RunHooks(run, lines)
    hooks.beat(force=True, device=str(device)[:40], log_tail="\n".join(lines))
    judge_path, judge_adapter_of = _paths(run, run.reward_model) if run.reward_model else (None, None)
    spec = RunSpec(kind=run.kind, base_path=str(base_path), config=run.config, output_dir=str(output_dir),
                   checkpoint_dir=str(checkpoint_dir), base_adapter_of=str(adapter_of) if adapter_of else None,
                   reward_model_path=str(judge_path) if judge_path else None,
                   reward_model_adapter_of=str(judge_adapter_of) if judge_adapter_of else None)
    from training.ml.trainer import Hooks

    run_hooks = Hooks(log=hooks.log, evaluate=hooks.evaluate, checkpoint=hooks.checkpoint, progress=hooks.progress,
                      say=hooks.say)
    processes = int(getattr(settings, "STUDIO_TRAINING_PROCESSES", 1) or 1)
    try:
        if processes > 1:  # `accelerate launch` processes (training.launcher), their events replayed into the hooks
            from training.launcher import run_in_processes

            out = run_in_processes(run, spec, snapshot.file_path, processes, run_hooks, cpu=device.type != "cuda")
        else:
            out = run_training(spec, lambda: snapshot_read_rows(snapshot=snapshot), device=device, hooks=run_hooks)
    except jobs.JobCancelled:
        raise
    except Exception as exc:
        message = _failure_message(exc)
        if message is None:
            raise
        raise jobs.JobFailure(message) from exc
    if out.data.get("note"):
        lines.append(f"{time.strftime('%H:%M:%S')} {out.data['note']}")
    model = _register(run, out, output_dir)
    metrics = {**run.metrics, **{k: v for k, v in out.metrics.items()}}
    if out.reward_offset:
        metrics["reward_offset"] = out.reward_offset
    if out.win_rate:
        metrics["win_rate"] = out.win_rate  # with its sampled examples, for the run page
        lines.append(f"{time.strftime('%H:%M:%S')} {_win_rate_line(out.win_rate, run.reward_model)}")
    lines.append(f"{time.strftime('%H:%M:%S')} registered model {model.name} (id {model.pk})")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the model is saved; a finished run never resumes
    jobs.job_finish(run, status=Status.SUCCEEDED, model=model, metrics=metrics, data_stats=out.data,
                    step=out.result.steps, total_steps=out.result.total_steps, device=out.device[:40],
                    log_tail="\n".join(lines))


def _register(run: TrainingRun, out, output_dir: Path) -> ModelArtifact:
    """The trained model in the registry with its lineage; a run registers one model once."""
    existing = ModelArtifact.objects.filter(training_run=run).first() or ModelArtifact.objects.filter(
        name=_model_name(run)).first()
    if existing is not None:
        return existing
    base = run.base_model
    adapter = out.adapter
    # An adapter trained further on an adapter adapts the same weights: its parent is theirs.
    parent = base.parent if adapter and base.format == FORMAT_PEFT else base
    config = {"run": run.pk, "kind": run.kind, "training": out.config.as_dict(), "device": out.device,
              "seconds": out.seconds,
              # False when it trained on the validation split too: no metric on that split is held out.
              "held_out": out.data.get("held_out", True)}
    if base != parent:
        config["trained_from_model"] = base.pk
    if out.reward_offset:
        config["reward_offset"] = out.reward_offset
    metrics = {k: v for k, v in out.metrics.items() if not isinstance(v, dict)}
    model = model_register(
        name=_model_name(run), path=output_dir, kind=REGISTERED_KIND[run.kind], format=FORMAT_PEFT if adapter else "",
        parent=parent, project=run.project, snapshot=run.snapshot, config=config, metrics=metrics,
        library_versions=_library_versions(), created_by=run.created_by,
        description=f"{run.get_kind_display()} run {run.pk} of {base.name} on snapshot {run.snapshot.short_hash}.")
    if run.kind == TrainingRun.Kind.REWARD and "validation/accuracy" in out.metrics:
        results = {k.removeprefix("validation/"): v for k, v in out.metrics.items() if k.startswith("validation/")}
        results.update({"identical_pairs": out.data["validation"]["identical_pairs"],
                        "truncated_prompts": out.data["validation"]["truncated_prompts"],
                        "truncated_responses": out.data["validation"]["truncated_responses"]})
        now = timezone.now()
        ModelEvaluation.objects.create(model=model, snapshot=run.snapshot, split=ModelEvaluation.Split.VALIDATION,
                                       training_run=run, accuracy=results.get("accuracy"), results=results,
                                       status=ModelEvaluation.Status.SUCCEEDED, created_by=run.created_by,
                                       started_at=now, finished_at=now)
    return model


def _win_rate_line(result: dict, judge: ModelArtifact) -> str:
    if not result.get("prompts"):
        return f"win rate not measured: {result.get('note', 'no prompts')}"
    low, high = result["win_rate_ci"]
    return (f"win rate over the starting model, judged by {judge.name}: {result['win_rate']:.3f} [{low:.3f}, "
            f"{high:.3f}] on {result['prompts']} held-out prompts ({result['wins']} won, {result['ties']} tied, "
            f"{result['losses']} lost); KL {result['kl']:.2f} nats per answer")


def _model_name(run: TrainingRun) -> str:
    return f"{run.kind}-{run.project.slug}-run{run.pk}"
