"""One lifecycle for every background job: generation jobs, training runs, evaluations.

A job is a database row (a subclass of the abstract `Job` below) and a Celery task that takes
the row's id. Its life, the same for every kind:

    created        -> "queued"; `job_enqueue` publishes the task (broker down: the row is marked
                      failed and BrokerUnavailable raised; a job never runs inline in the web process)
    job_run        -> on a worker: returns at once when the job is finished or held by another
                      live worker; otherwise claims it ("running", worker, heartbeat) and calls the
                      kind's body, which reports progress with `job_heartbeat`
    job_cancel     -> "cancelled"; the body sees it at its next heartbeat (JobCancelled) and stops
    job_finish     -> the one place a job reaches a final status (never overwriting a cancel)
    jobs_recover   -> a worker that starts re-queues the jobs its killed predecessor held, and the
                      queued ones a broker may have lost

The claim is what makes a job run once even when its message is delivered twice (a Redis
visibility timeout shorter than a training run, a re-queue after a restart): the second delivery
finds the job held by a live worker, or finished, and returns.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from importlib import import_module
from typing import Callable, ClassVar, TypeVar

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from studio.errors import Conflict, StudioError

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0  # how often a running job reports (and looks for a cancel)


class BrokerUnavailable(StudioError):
    """The task could not be published; the job was marked failed. The API answers 503."""


class JobFailure(Exception):
    """An expected reason for a job to fail (missing model, empty snapshot): its message is shown
    to the user as it is, so it says what to do."""


class JobCancelled(Exception):
    """The job was cancelled while it ran: the body stops, the row already says "cancelled"."""


class Job(models.Model):
    """What every background job row has. Subclasses add their inputs and progress counters and
    set `task_name` (the Celery task that takes the row's id) and `label` (for messages)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    # The Celery task ("app.tasks.name") that runs a job of this kind; it takes the row's id.
    task_name: ClassVar[str] = ""
    # How the job is named in messages ("Generation job 3").
    label: ClassVar[str] = "Job"
    # A running job silent this long has lost its worker (killed): another worker may take it.
    stale_after: ClassVar[timedelta] = timedelta(seconds=120)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=40, blank=True)  # where it ran, e.g. "cpu" or "cuda:0 (bfloat16)"
    # The worker process running the job ("celery@host:pid") and when it last said so: a job whose
    # worker was killed is claimed again by a restarted worker (see jobs_recover).
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def title(self) -> str:
        return f"{self.label} {self.pk}"


J = TypeVar("J", bound=Job)


def _manager(job: Job):
    return type(job)._default_manager


def _task(job: Job):
    module, _, name = job.task_name.rpartition(".")
    return getattr(import_module(module), name)


# --- Publish, cancel, finish -----------------------------------------------------------------

def job_enqueue(*, job: Job) -> None:
    """Publish the job's task. A broker that cannot be reached fails the job (with the reason)
    and raises BrokerUnavailable: the caller reports it, nothing runs inline. Must not run
    inside a transaction: the worker has to see the committed row."""
    from kombu.exceptions import OperationalError

    try:
        _task(job).apply_async(
            args=[job.pk], task_id=job.celery_task_id or None,
            retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        )
    except (OperationalError, OSError, ConnectionError) as exc:
        message = (f"The job could not be queued: the task broker is unreachable ({exc}). "
                   "Start the broker (Redis, or check the broker folder) and start the job again.")
        job_finish(job, status=Job.Status.FAILED, error=message)
        raise BrokerUnavailable(message) from exc


def job_cancel(*, job: J) -> J:
    """Stop a queued or running job (permission is the caller's check). What it already wrote
    stays; a running job stops at its next heartbeat."""
    now = timezone.now()
    updated = _manager(job).filter(pk=job.pk, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).update(
        status=Job.Status.CANCELLED, finished_at=now, eta_seconds=None, updated_at=now)
    job.refresh_from_db()
    if not updated:
        raise Conflict(f"{job.title} is already {job.status}.")
    return job


def job_finish(job: Job, *, status: str, error: str = "", **fields) -> None:
    """The one place a job reaches a final status (never overwriting a cancel). `fields` are
    written in the same update (e.g. a training run's registered model)."""
    now = timezone.now()
    values = {"status": status, "finished_at": now, "updated_at": now, "heartbeat_at": now, **fields}
    if error:
        values["error"] = error[:5000]
    if status == Job.Status.SUCCEEDED:
        values["eta_seconds"] = 0.0
    elif status == Job.Status.FAILED:
        values["eta_seconds"] = None
    _manager(job).filter(pk=job.pk).exclude(status=Job.Status.CANCELLED).update(**values)
    job.refresh_from_db()


def job_is_cancelled(job: Job) -> bool:
    return _manager(job).filter(pk=job.pk, status=Job.Status.CANCELLED).exists()


# --- Run (on a worker) -----------------------------------------------------------------------

def job_claim(job: Job, worker: str) -> bool:
    """Take the job for this worker process: a queued job, or a running one that this process
    already holds, or whose worker went silent (killed). Another live worker's job is left alone."""
    now = timezone.now()
    running_orphan = Q(status=Job.Status.RUNNING) & (Q(worker=worker) | Q(heartbeat_at__isnull=True)
                                                     | Q(heartbeat_at__lt=now - job.stale_after))
    updated = _manager(job).filter(pk=job.pk).filter(Q(status=Job.Status.QUEUED) | running_orphan).update(
        status=Job.Status.RUNNING, worker=worker[:200], heartbeat_at=now, updated_at=now, error="")
    if updated:
        _manager(job).filter(pk=job.pk, started_at__isnull=True).update(started_at=now)
        job.refresh_from_db()
    return bool(updated)


class Heartbeat:
    """Called by a running job's body as it makes progress: at most every HEARTBEAT_SECONDS (or
    at once with force=True) it writes the given progress fields with the heartbeat, and raises
    JobCancelled when the job was cancelled meanwhile."""

    def __init__(self, job: Job, *, every: float = HEARTBEAT_SECONDS):
        self.job = job
        self.every = every
        self.last = float("-inf")

    def __call__(self, *, force: bool = False, **fields) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        job_heartbeat(self.job, **fields)


def job_heartbeat(job: Job, **fields) -> None:
    """Record that the job's worker is alive (with any progress fields), or raise JobCancelled."""
    updated = _manager(job).filter(pk=job.pk, status=Job.Status.RUNNING).update(
        heartbeat_at=timezone.now(), updated_at=timezone.now(), **fields)
    for name, value in fields.items():
        setattr(job, name, value)
    if not updated and job_is_cancelled(job):
        raise JobCancelled()


def job_run(*, model: type[J], job_id: int, worker: str, body: Callable[[J], None],
            select_related: tuple[str, ...] = ()) -> J | None:
    """Run (or resume) a job on this worker: what every job task calls. Expected failures
    (JobFailure) fail the job with their message; unexpected ones too, and are re-raised for the
    worker's log. Returns the job as it ended (None when the row is gone)."""
    job = model._default_manager.select_related(*select_related).filter(pk=job_id).first()
    if job is None:
        log.warning("%s %s does not exist (deleted?); nothing to do.", model.label, job_id)
        return None
    if job.is_finished:
        return job
    if not job_claim(job, worker):
        log.info("%s is held by %s; not running it twice.", job.title, job.worker)
        return job
    try:
        body(job)
    except JobCancelled:
        log.info("%s was cancelled.", job.title)
    except JobFailure as exc:
        job_finish(job, status=Job.Status.FAILED, error=str(exc))
    except Exception as exc:
        job_finish(job, status=Job.Status.FAILED, error=f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    job.refresh_from_db()
    return job


# --- Recovery --------------------------------------------------------------------------------

def jobs_recover(*, model: type[Job], worker_prefix: str = "") -> list[int]:
    """Re-queue jobs of `model` whose worker is gone, so they resume: run by every worker that
    serves the kind's queue as it starts, and by the `*_recover` commands.

    A running job is orphaned when its worker is this restarted worker's previous life (same
    node name: `worker_prefix`), or when it has been silent for `stale_after`. Queued jobs are
    re-published too: a broker that lost the message (kombu's filesystem transport removes a
    message when a worker takes it, before the ack) would otherwise leave them queued forever;
    a duplicate message is harmless, the second delivery finds the job finished or held.
    """
    now = timezone.now()
    manager = model._default_manager
    orphaned = Q(status=Job.Status.RUNNING) & (Q(heartbeat_at__isnull=True)
                                               | Q(heartbeat_at__lt=now - model.stale_after))
    if worker_prefix:
        orphaned |= Q(status=Job.Status.RUNNING, worker__startswith=f"{worker_prefix}:")
    with transaction.atomic():
        orphan_ids = list(manager.filter(orphaned).values_list("id", flat=True))
        manager.filter(pk__in=orphan_ids).update(worker="", heartbeat_at=None, updated_at=now)
    queued_ids = list(manager.filter(status=Job.Status.QUEUED).values_list("id", flat=True))
    ids = sorted(set(orphan_ids) | set(queued_ids))
    for job in manager.filter(pk__in=ids).order_by("id"):
        try:
            job_enqueue(job=job)
        except BrokerUnavailable:
            log.error("Could not re-queue %s: broker unreachable; it was marked failed.", job.title)
    if ids:
        log.info("Re-queued %s %s (orphaned: %s).", model.label.lower() + "s", ids, orphan_ids)
    return ids


# --- Worker side -----------------------------------------------------------------------------

def worker_id(hostname: str | None) -> str:
    """This worker process: node name + pid (a prefork pool's children share the node name)."""
    import os

    return f"{hostname or 'worker'}:{os.getpid()}"


def worker_consumes(sender, queue: str) -> bool:
    """Whether the worker that sent `worker_ready` serves `queue` (so it recovers that queue's
    jobs as it starts, and a worker of other queues leaves them alone)."""
    try:
        queues = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    except AttributeError:
        return False
    return queue in queues
