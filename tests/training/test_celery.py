"""A real Celery worker of the `training` queue runs a training run, and a worker killed
(SIGKILL) in the middle of one is restarted and resumes it from its last checkpoint: the steps
before the checkpoint are not run again, and the run ends with one metric row a step."""
from __future__ import annotations

import signal

import pytest

from modelhub.models import ModelArtifact
from training import runs
from training.models import TrainingMetric, TrainingRun
from tests.celery_workers import wait_for
from tests.training.helpers import build_marker_project

pytestmark = [pytest.mark.celery, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Many short steps, a checkpoint every 10: there is time to kill the worker between two.
LONG_RUN = {"learning_rate": 3e-3, "epochs": 8, "prompts_per_step": 1, "checkpoint_every": 10}


def state(run_id: int) -> TrainingRun:
    return TrainingRun.objects.get(pk=run_id)


def test_a_killed_training_worker_resumes_from_the_last_checkpoint(workers, make_user, tiny_model):
    project, snapshot, admin = build_marker_project(make_user, prompts=30)
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config=LONG_RUN)
    first = workers("train-kill@%h", queues="training")
    wait_for(lambda: (r := state(run.pk)).checkpoint_step and r.checkpoint_step >= 20 and r,
             timeout=180, what="two checkpoints", worker=first, interval=0.02)
    first.kill(signal.SIGKILL)
    killed = state(run.pk)
    assert killed.status == "running", f"the run ended before the kill: {killed.status} {killed.error}"
    assert killed.step < killed.total_steps
    at_kill = killed.checkpoint_step

    second = workers("train-kill@%h", queues="training")  # same node name: it re-queues what its predecessor held
    done = wait_for(lambda: state(run.pk).is_finished and state(run.pk), timeout=300,
                    what="the resumed run to finish", worker=second)
    assert done.status == "succeeded", done.error
    assert done.resumes == 1 and done.resumed_from_step == at_kill  # resumed, not restarted
    assert f"resumed from the checkpoint at step {at_kill}" in done.log_tail
    assert done.worker != killed.worker
    steps = list(TrainingMetric.objects.filter(run=done, split="train").order_by("step").values_list("step",
                                                                                                      flat=True))
    assert steps == list(range(1, done.total_steps + 1))  # every step once: none lost, none twice
    assert ModelArtifact.objects.filter(kind="reward").count() == 1 and done.model is not None
    assert done.metrics["validation/accuracy"] >= 0.9
    assert f"Re-queued training runs [{run.pk}]" in second.log()
