"""Snapshots as jobs (studio.jobs): a snapshot of a big project takes seconds to minutes, so the
pages and the API hand it to a worker of the `default` queue and wait a little for it.

    snapshot_job_create    admins: the validated filters and split -> a queued SnapshotJob,
                           published (a job of the same spec still queued is reused instead)
    snapshot_job_wait      the web process: re-read the job until it has finished or the wait
                           (STUDIO_SNAPSHOT_WAIT_SECONDS) is over
    snapshot_job_execute   on a worker: training.snapshots.snapshot_create with progress
    snapshot_job_cancel    admins: stops it at its next prompt; nothing is left behind
    snapshot_jobs_recover  a worker that starts re-queues the jobs a killed worker left behind;
                           they start over (a snapshot is the labels at the time it is made)

The command line (manage.py dataset_snapshot) calls snapshot_create in its own process.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from labeling.models import Project
from studio import jobs
from studio.errors import NotFound, PermissionDeniedError, StudioError
from studio.roles import ADMIN, has_role
from training.models import SnapshotJob
from training.snapshots import (
    SnapshotFilters,
    SplitSettings,
    snapshot_create,
    snapshot_prompt_total,
    snapshot_spec_clean,
    snapshot_spec_dict,
)

log = logging.getLogger(__name__)

Status = SnapshotJob.Status
DEFAULT_WAIT_SECONDS = 20.0  # well under gunicorn's 300 s timeout


def snapshot_wait_seconds() -> float:
    """How long a page or API request waits for its snapshot job before answering with the
    job (STUDIO_SNAPSHOT_WAIT_SECONDS; 0 answers at once)."""
    value = getattr(settings, "STUDIO_SNAPSHOT_WAIT_SECONDS", None)
    if value is None:
        value = os.environ.get("STUDIO_SNAPSHOT_WAIT_SECONDS", "")
    try:
        return max(0.0, float(value)) if value != "" else DEFAULT_WAIT_SECONDS
    except (TypeError, ValueError):
        return DEFAULT_WAIT_SECONDS


def _check_admin(user) -> None:
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can create dataset snapshots.")


def snapshot_spec_key(*, project: Project, filters: SnapshotFilters, split: SplitSettings) -> str:
    spec = {"project": project.pk, **snapshot_spec_dict(filters=filters, split=split)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def snapshot_job_spec(job: SnapshotJob) -> tuple[SnapshotFilters, SplitSettings]:
    """The filters and split a job was created with."""
    return snapshot_spec_clean({**job.filters, "validation_fraction": job.split.get("validation_fraction"),
                                "split_seed": job.split.get("seed")})


# --- Create, wait, cancel, recover ------------------------------------------------------------

def snapshot_job_create(*, user, project: Project, filters: SnapshotFilters | None = None,
                        split: SplitSettings | None = None) -> SnapshotJob:
    """An admin asks for a snapshot: the job is saved and published to the `default` queue, or,
    when a job of the same project, filters and split is still queued, that one is returned (it
    will read the labels as they are when it runs). Must not run inside a transaction: the worker
    has to see the committed row. Raises BrokerUnavailable (the job is then failed)."""
    _check_admin(user)
    filters = filters or SnapshotFilters()
    split = split or SplitSettings()
    key = snapshot_spec_key(project=project, filters=filters, split=split)
    waiting = SnapshotJob.objects.filter(project=project, spec_key=key, status=Status.QUEUED).order_by("-id").first()
    if waiting is not None:
        return waiting
    job = SnapshotJob.objects.create(
        project=project, filters=filters.as_dict(), split={"validation_fraction": split.validation_fraction,
                                                           "seed": split.seed},
        spec_key=key, created_by=user, celery_task_id=str(uuid.uuid4()))
    jobs.job_enqueue(job=job)
    return job


def snapshot_job_wait(*, job: SnapshotJob, seconds: float | None = None) -> SnapshotJob:
    """Re-read the job until it has finished or `seconds` (default: snapshot_wait_seconds())
    have passed; returns it as it is then."""
    seconds = snapshot_wait_seconds() if seconds is None else seconds
    deadline = time.monotonic() + seconds
    pause = 0.05
    while True:
        job.refresh_from_db()
        if job.is_finished or time.monotonic() >= deadline:
            return job
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.5)


def access_snapshot_job(*, user, job_id: int) -> SnapshotJob:
    """A snapshot job by its id, for admins (who alone make snapshots)."""
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can see snapshot jobs.")
    job = SnapshotJob.objects.select_related("project", "snapshot", "created_by").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No snapshot job with id {job_id}.")
    return job


def snapshot_job_list_unfinished(*, project: Project):
    """The project's snapshot jobs still queued or running, and those that failed or were
    cancelled in the last day (the datasets page lists them for admins)."""
    recent = timezone.now() - timedelta(days=1)
    return (project.snapshot_jobs.filter(Q(status__in=[Status.QUEUED, Status.RUNNING])
                                         | Q(status__in=[Status.FAILED, Status.CANCELLED], finished_at__gte=recent))
            .select_related("created_by").order_by("-id"))


def snapshot_job_cancel(*, user, job: SnapshotJob) -> SnapshotJob:
    """Stop a queued or running snapshot job (admins): a running one stops at its next prompt
    and removes its unfinished file."""
    _check_admin(user)
    return jobs.job_cancel(job=job)


def snapshot_jobs_recover(*, worker_prefix: str = "") -> list[int]:
    return jobs.jobs_recover(model=SnapshotJob, worker_prefix=worker_prefix)


# --- Run (on a worker) ------------------------------------------------------------------------

def snapshot_job_execute(*, job_id: int, worker: str = "") -> SnapshotJob | None:
    return jobs.job_run(model=SnapshotJob, job_id=job_id, worker=worker, body=_snapshot,
                        select_related=("project", "created_by"))


class _Progress:
    """snapshot_create's progress callback: reports the prompts read (and an ETA) with the job's
    heartbeat, and raises JobCancelled once the job was cancelled.

    The reading connection must not write: on PostgreSQL the snapshot is read inside one
    REPEATABLE READ READ ONLY transaction (training.snapshots._consistent_rows), and on SQLite a
    write while the four reading statements are open would join their implicit transaction,
    holding the database's write lock (annotators' submits wait) and staying invisible until the
    snapshot ends. So a helper thread, with its own connection, reports every few seconds, and
    the reading thread stops when the helper finds the job cancelled. Inside a transaction the
    caller already holds (tests) the heartbeat is written in it, from the reading thread; except
    on PostgreSQL, where the open stream holds the connection (psycopg's lock: a second query
    from the same thread would wait for itself forever), so there nothing is written until the
    snapshot ends."""

    def __init__(self, job: SnapshotJob, *, total: int, threaded: bool | None = None,
                 every: float | None = None):
        self.job = job
        self.total = total
        self.every = jobs.HEARTBEAT_SECONDS if every is None else every
        self.done = 0
        self.started = time.monotonic()
        self.cancelled = False
        if threaded is None:
            threaded = not connection.in_atomic_block
        self.threaded = threaded
        self._stop = threading.Event()
        self._beat = jobs.Heartbeat(job, every=self.every)
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._report, name=f"snapshot-job-{job.pk}-heartbeat",
                                            daemon=True)
            self._thread.start()

    def _fields(self) -> dict:
        fields = {"prompts_done": self.done}
        elapsed = time.monotonic() - self.started
        if self.done and elapsed >= 1:
            fields["eta_seconds"] = round((self.total - self.done) * elapsed / self.done, 1)
        return fields

    def __call__(self, done: int) -> None:
        self.done = min(done, self.total) if self.total else done
        if self.threaded:
            if self.cancelled:
                raise jobs.JobCancelled()
        elif connection.vendor != "postgresql":
            self._beat(**self._fields())

    def _report(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    jobs.job_heartbeat(self.job, **self._fields())
                except jobs.JobCancelled:
                    self.cancelled = True
                    return
                except Exception:  # the heartbeat's own connection failed: the snapshot goes on
                    log.exception("Could not record the progress of %s.", self.job.title)
        finally:
            connection.close()  # this thread's connection

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _snapshot(job: SnapshotJob) -> None:
    try:
        filters, split = snapshot_job_spec(job)
        total = snapshot_prompt_total(project=job.project, filters=filters)
        jobs.job_heartbeat(job, prompts_total=total, prompts_done=0)
        progress = _Progress(job, total=total)
        try:
            snapshot, created = snapshot_create(user=job.created_by, project=job.project, filters=filters,
                                                split=split, progress=progress)
        finally:
            progress.close()
    except StudioError as exc:  # e.g. the admin who asked is no admin any more
        raise jobs.JobFailure(getattr(exc, "message", str(exc))) from exc
    jobs.job_finish(job, status=Status.SUCCEEDED, snapshot=snapshot, created=created, prompts_done=total)
