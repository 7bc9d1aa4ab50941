"""Celery tasks of the model hub: thin. They take ids, call one service, and are safe to run
twice (the service returns early for a finished job and never writes a candidate twice).
Routed to the `generation` queue by CELERY_TASK_ROUTES ("modelhub.tasks.*").
"""
from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready

from studio.jobs import worker_consumes, worker_id

GENERATION_QUEUE = "generation"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def generation_job_task(self, job_id: int) -> str:
    from modelhub.services import generation_job_run

    job = generation_job_run(job_id=job_id, worker=worker_id(self.request.hostname))
    return job.status if job is not None else "missing"


@worker_ready.connect
def _recover_generation_jobs(sender=None, **_kwargs) -> None:
    """A generation worker that starts re-queues the jobs a killed worker left behind."""
    if not worker_consumes(sender, GENERATION_QUEUE):
        return
    from modelhub.services import generation_jobs_recover

    generation_jobs_recover(worker_prefix=getattr(sender, "hostname", "") or "")
