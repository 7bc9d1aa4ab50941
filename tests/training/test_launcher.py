"""A training run in two processes from the worker's service: with STUDIO_TRAINING_PROCESSES=2,
training_run_execute launches `accelerate launch` (two CPU processes, gloo), replays their
events into the run's hooks -- a metric row a step, validation rows, heartbeats -- and registers
the model as an in-process run does; a cancel ends the processes."""
from __future__ import annotations

import json
import time

import pytest

from modelhub.models import ModelArtifact
from training import runs
from training.models import ModelEvaluation, TrainingMetric, TrainingRun

pytestmark = pytest.mark.django_db

FAST_REWARD = {"learning_rate": 3e-3, "epochs": 3, "prompts_per_step": 4, "checkpoint_every": 5}


@pytest.fixture
def two_processes(settings, tmp_path):
    settings.STUDIO_TRAINING_PROCESSES = 2
    settings.STUDIO_DEVICE = "cpu"
    settings.MODEL_DIR = tmp_path / "models"  # not the development model store
    return settings


def events_of(run) -> list[dict]:
    path = run.run_dir / "launch" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has ended)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_a_reward_run_in_two_processes_trains_registers_and_evaluates(marker, tiny_model, published, two_processes):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config=FAST_REWARD)
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    events = events_of(run)
    assert sorted(e["rank"] for e in events if e["event"] == "process") == [0, 1]  # really two processes
    assert run.step == run.total_steps > 0 and run.progress_percent == 100
    train_rows = TrainingMetric.objects.filter(run=run, split="train").order_by("step")
    assert [m.step for m in train_rows] == list(range(1, run.total_steps + 1))  # one row a step, as in-process
    assert TrainingMetric.objects.filter(run=run, split="validation").count() == 3  # one per epoch
    assert run.metrics["validation/accuracy"] >= 0.9 and "train/loss" in run.metrics
    assert run.data_stats["train"]["examples"] + run.data_stats["validation"]["examples"] == 40
    assert "validation at step" in run.log_tail and "checkpoint saved at step 5" in run.log_tail
    assert "normalising: scoring" in run.log_tail  # a line the training processes sent as an event
    assert "x2 processes" in run.device and run.heartbeat_at is not None

    model = run.model
    assert model.kind == ModelArtifact.Kind.REWARD and model.parent == tiny_model and model.snapshot == snapshot
    assert len(model.checksum) == 64 and model.config["reward_offset"]["answers"] > 0
    assert model.config["training"]["learning_rate"] == FAST_REWARD["learning_rate"]
    evaluation = ModelEvaluation.objects.get(model=model)
    assert evaluation.accuracy == run.metrics["validation/accuracy"]
    assert not (run.run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_a_cancel_ends_the_training_processes(marker, tiny_model, published, two_processes, monkeypatch):
    project, snapshot, admin = marker
    # Long enough (240 steps) that the processes are still training when the cancel is seen.
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config={**FAST_REWARD, "epochs": 30})
    original = runs._RunHooks.checkpoint

    def cancel_at_the_first_checkpoint(self, step, path):
        runs.training_run_cancel(user=admin, run=TrainingRun.objects.get(pk=self.run.pk))
        original(self, step, path)  # its heartbeat sees the cancel: JobCancelled

    monkeypatch.setattr(runs._RunHooks, "checkpoint", cancel_at_the_first_checkpoint)
    started = time.monotonic()
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.CANCELLED and run.model is None
    events = events_of(run)
    pids = [e["pid"] for e in events if e["event"] == "process"]
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)  # ended, not left training
    assert not any(e["event"] == "done" for e in events)
    assert TrainingMetric.objects.filter(run=run, split="train").count() < 240
    assert time.monotonic() - started < 120


def test_a_failure_the_processes_report_is_the_one_training_explains(tmp_path):
    """What a process reports in its "error" event becomes the exception the in-process run
    raises, so the run fails with the same words (training.runs._failure_message)."""
    from training.launcher import LaunchFailed, _failure

    output = tmp_path / "processes.log"
    output.write_text("line 1\nTraceback: boom\n")
    data = _failure({"type": "TrainingDataError", "message": "The snapshot's training split has no x."}, 1, output)
    assert runs._failure_message(data) == "The snapshot's training split has no x."
    assert "ran out of memory" in runs._failure_message(_failure({"type": "OutOfMemoryError", "message": ""}, 1, output))
    assert "disk is full" in runs._failure_message(_failure({"type": "OSError", "errno": 28, "message": ""}, 1, output))
    other = _failure({"type": "ValueError", "message": "bad", "rank": 1}, 1, output)
    assert isinstance(other, LaunchFailed) and runs._failure_message(other) is None
    assert "ValueError in training process 1: bad" in str(other)
    silent = _failure(None, -9, output)
    assert "exited with code -9" in str(silent) and "Traceback: boom" in str(silent)


def test_events_are_read_as_whole_lines(tmp_path):
    from training.launcher import EventFollower

    path = tmp_path / "events.jsonl"
    follower = EventFollower(path)
    assert follower.read() == []  # not written yet
    path.write_text('{"event": "log", "record": {"step": 1}}\n{"event": "pro')
    assert follower.read() == [{"event": "log", "record": {"step": 1}}]  # the half-written line waits
    with open(path, "a") as f:
        f.write('gress", "step": 1, "total": 2}\n')
    assert follower.read() == [{"event": "progress", "step": 1, "total": 2}]
