"""Celery tasks of labeling: thin. They take ids, call one service, and are safe to run twice
(the service returns early for a finished run, and a resumed import starts after its checkpoint).

Imports go to the `default` queue: no route names labeling.tasks, so CELERY_TASK_DEFAULT_QUEUE
applies.
"""
from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready

from studio.jobs import worker_consumes, worker_id

IMPORT_QUEUE = "default"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def import_run_task(self, run_id: int) -> str:
    from labeling.importers.run import import_run_execute

    run = import_run_execute(run_id=run_id, worker=worker_id(self.request.hostname))
    return run.status if run is not None else "missing"


@worker_ready.connect
def _recover_import_runs(sender=None, **_kwargs) -> None:
    """A worker of the `default` queue that starts re-queues the imports a killed worker left
    behind; they resume after their last committed row."""
    if not worker_consumes(sender, IMPORT_QUEUE):
        return
    from labeling.importers.run import import_runs_recover

    import_runs_recover(worker_prefix=getattr(sender, "hostname", "") or "")
