"""Celery tasks of training: thin. They take ids, call one service, and are safe to run twice
(the service returns early for a finished job; a run resumes from its checkpoint).

Training runs go to the `training` queue (CELERY_TASK_ROUTES), which a GPU worker on another
machine can serve alone; evaluations go to `default`, so a long training run never holds them up.
"""
from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready

from studio.jobs import worker_consumes, worker_id

TRAINING_QUEUE = "training"
EVALUATION_QUEUE = "default"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def training_run_task(self, run_id: int) -> str:
    from training.runs import training_run_execute

    run = training_run_execute(run_id=run_id, worker=worker_id(self.request.hostname))
    return run.status if run is not None else "missing"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def model_evaluation_task(self, evaluation_id: int) -> str:
    from training.evaluations import model_evaluation_execute

    evaluation = model_evaluation_execute(evaluation_id=evaluation_id, worker=worker_id(self.request.hostname))
    return evaluation.status if evaluation is not None else "missing"


@worker_ready.connect
def _recover_training_jobs(sender=None, **_kwargs) -> None:
    """A worker that starts re-queues the runs and evaluations a killed worker left behind."""
    hostname = getattr(sender, "hostname", "") or ""
    if worker_consumes(sender, TRAINING_QUEUE):
        from training.runs import training_runs_recover

        training_runs_recover(worker_prefix=hostname)
    if worker_consumes(sender, EVALUATION_QUEUE):
        from training.evaluations import model_evaluations_recover

        model_evaluations_recover(worker_prefix=hostname)


# --- Snapshots and exports: jobs of the `default` queue ("training.tasks.*" in CELERY_TASK_ROUTES) --

SNAPSHOT_QUEUE = EXPORT_QUEUE = "default"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def snapshot_job_task(self, job_id: int) -> str:
    from training.snapshot_jobs import snapshot_job_execute

    job = snapshot_job_execute(job_id=job_id, worker=worker_id(self.request.hostname))
    return job.status if job is not None else "missing"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def export_job_task(self, job_id: int) -> str:
    from training.export_jobs import export_job_execute

    job = export_job_execute(job_id=job_id, worker=worker_id(self.request.hostname))
    return job.status if job is not None else "missing"


@worker_ready.connect
def _recover_snapshot_and_export_jobs(sender=None, **_kwargs) -> None:
    """A worker of the `default` queue that starts re-queues the snapshot and export jobs a
    killed worker left behind (they start over: neither keeps a partial result)."""
    if not worker_consumes(sender, SNAPSHOT_QUEUE):
        return
    from training.export_jobs import export_jobs_recover
    from training.snapshot_jobs import snapshot_jobs_recover

    hostname = getattr(sender, "hostname", "") or ""
    snapshot_jobs_recover(worker_prefix=hostname)
    export_jobs_recover(worker_prefix=hostname)
