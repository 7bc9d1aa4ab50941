"""Snapshots as jobs: queued by the pages and the API, made by a worker (here: the execute
function called directly, as the task does) with progress, cancellable, recovered; and the API
and page contract: the snapshot itself when the job is done within the wait (201/200), else 202
with the job to poll."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from kombu.exceptions import OperationalError

from studio import jobs
from studio.errors import Conflict, PermissionDeniedError
from tests.job_fixtures import run_published
from training import snapshot_jobs
from training.models import DatasetSnapshot, SnapshotJob
from training.snapshots import snapshot_create, snapshot_dir, snapshot_spec_clean

pytestmark = pytest.mark.django_db

Status = SnapshotJob.Status


def create(labelled, **spec) -> SnapshotJob:
    filters, split = snapshot_spec_clean(spec)
    return snapshot_jobs.snapshot_job_create(user=labelled.admin, project=labelled.project, filters=filters,
                                             split=split)


# --- Services ---------------------------------------------------------------------------------

def test_a_job_is_queued_then_made_by_a_worker_with_its_progress(labelled, published_jobs):
    job = create(labelled, exclude_imported=True, validation_fraction=0.2, split_seed=3)
    assert job.status == Status.QUEUED and not DatasetSnapshot.objects.exists()
    assert [(m["task"], m["args"]) for m in published_jobs] == [("training.tasks.snapshot_job_task", [job.pk])]
    assert job.filters["exclude_imported"] is True and job.split == {"validation_fraction": 0.2, "seed": 3}

    run_published(published_jobs[0])

    job.refresh_from_db()
    snapshot = DatasetSnapshot.objects.get()
    assert job.status == Status.SUCCEEDED and job.snapshot == snapshot and job.created is True
    assert job.prompts_total == 1 and job.prompts_done == 1 and job.progress_percent == 100
    assert snapshot.filters["exclude_imported"] is True and snapshot.split["seed"] == 3
    assert snapshot.created_by == labelled.admin
    # The same spec, by the command line, gives the same bytes: the job made what snapshot_create makes.
    filters, split = snapshot_jobs.snapshot_job_spec(job)
    assert snapshot_create(user=None, project=labelled.project, filters=filters, split=split) == (snapshot, False)


def test_the_same_labels_again_find_the_snapshot(labelled, jobs_inline):
    first, second = create(labelled), create(labelled)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.created is True and second.created is False
    assert first.snapshot_id == second.snapshot_id and DatasetSnapshot.objects.count() == 1


def test_a_queued_job_of_the_same_spec_is_reused(labelled, published_jobs):
    first = create(labelled, min_agreement=0.5)
    assert create(labelled, min_agreement=0.5) == first and len(published_jobs) == 1
    other = create(labelled, min_agreement=0.6)
    assert other != first and len(published_jobs) == 2
    run_published(published_jobs[0])
    assert create(labelled, min_agreement=0.5) != first  # finished: a new request reads the labels anew


def test_the_spec_round_trips(labelled):
    filters, split = snapshot_spec_clean({"created_from": "2024-01-02", "created_to": "2024-02-03",
                                          "min_agreement": 0.25, "exclude_flagged_labels": True,
                                          "validation_fraction": 0.3, "split_seed": 9})
    job = SnapshotJob(project=labelled.project, filters=filters.as_dict(),
                      split={"validation_fraction": split.validation_fraction, "seed": split.seed})
    assert snapshot_jobs.snapshot_job_spec(job) == (filters, split)


def test_wait_returns_as_soon_as_the_job_is_done_or_the_time_is_up(labelled, published_jobs):
    job = create(labelled)
    waited = snapshot_jobs.snapshot_job_wait(job=job, seconds=0.2)
    assert waited.status == Status.QUEUED
    run_published(published_jobs[0])
    assert snapshot_jobs.snapshot_job_wait(job=job, seconds=30).status == Status.SUCCEEDED


def test_wait_seconds_setting(settings, monkeypatch):
    settings.STUDIO_SNAPSHOT_WAIT_SECONDS = 0
    assert snapshot_jobs.snapshot_wait_seconds() == 0
    del settings.STUDIO_SNAPSHOT_WAIT_SECONDS
    monkeypatch.setenv("STUDIO_SNAPSHOT_WAIT_SECONDS", "3.5")
    assert snapshot_jobs.snapshot_wait_seconds() == 3.5
    monkeypatch.delenv("STUDIO_SNAPSHOT_WAIT_SECONDS")
    assert snapshot_jobs.snapshot_wait_seconds() == snapshot_jobs.DEFAULT_WAIT_SECONDS


def test_cancel_a_queued_job(labelled, published_jobs):
    job = create(labelled)
    cancelled = snapshot_jobs.snapshot_job_cancel(user=labelled.admin, job=job)
    assert cancelled.status == Status.CANCELLED
    run_published(published_jobs[0])
    assert not DatasetSnapshot.objects.exists()
    with pytest.raises(Conflict):
        snapshot_jobs.snapshot_job_cancel(user=labelled.admin, job=cancelled)
    with pytest.raises(PermissionDeniedError):
        snapshot_jobs.snapshot_job_cancel(user=labelled.annotator, job=cancelled)


def test_a_running_job_cancelled_stops_and_leaves_no_file(labelled, published_jobs, monkeypatch):
    """Inside a transaction the caller holds, the heartbeat (and so the cancel) is seen by the
    reading thread itself. On PostgreSQL the open stream holds the connection, so nothing is
    written there mid-stream; workers (outside a transaction) are covered on both databases by
    test_a_cancel_seen_by_the_helper_thread_stops_the_snapshot."""
    if connection.vendor == "postgresql":
        pytest.skip("inside a test transaction on PostgreSQL the stream holds the only connection")
    job = create(labelled)
    real = snapshot_jobs._Progress.__call__

    def cancel_then_report(self, done):
        jobs.job_cancel(job=SnapshotJob.objects.get(pk=self.job.pk))
        return real(self, done)

    monkeypatch.setattr(snapshot_jobs._Progress, "__call__", cancel_then_report)
    monkeypatch.setattr(jobs, "HEARTBEAT_SECONDS", 0)
    done = snapshot_jobs.snapshot_job_execute(job_id=job.pk, worker="w@h:1")
    assert done.status == Status.CANCELLED and done.snapshot is None
    assert not DatasetSnapshot.objects.exists() and not list(snapshot_dir().iterdir())


def test_failures_say_what_happened(labelled, published_jobs):
    job = create(labelled)
    labelled.admin.groups.clear()  # no admin any more by the time a worker takes the job
    done = snapshot_jobs.snapshot_job_execute(job_id=job.pk, worker="w@h:1")
    assert done.status == Status.FAILED and done.error == "Only admins can create dataset snapshots."


def test_only_admins_create(labelled, published_jobs, make_user):
    for user in (labelled.annotator, make_user("reviewer")):
        with pytest.raises(PermissionDeniedError):
            snapshot_jobs.snapshot_job_create(user=user, project=labelled.project)
    assert not SnapshotJob.objects.exists() and published_jobs == []


def test_a_broker_that_cannot_be_reached_fails_the_job(labelled, monkeypatch):
    from training.tasks import snapshot_job_task

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(snapshot_job_task, "apply_async", down)
    with pytest.raises(jobs.BrokerUnavailable):
        create(labelled)
    assert SnapshotJob.objects.get().status == Status.FAILED and not DatasetSnapshot.objects.exists()


def test_recovery_requeues_orphaned_and_queued_jobs(labelled, published_jobs):
    from types import SimpleNamespace

    from training.tasks import _recover_snapshot_and_export_jobs

    queued = create(labelled)
    orphan = create(labelled, split_seed=1)
    SnapshotJob.objects.filter(pk=orphan.pk).update(status=Status.RUNNING, worker="w@h:1")
    published_jobs.clear()
    sender = SimpleNamespace(hostname="w@h", app=SimpleNamespace(
        amqp=SimpleNamespace(queues=SimpleNamespace(consume_from={"default": None}))))
    _recover_snapshot_and_export_jobs(sender=sender)
    assert sorted(m["args"][0] for m in published_jobs) == sorted([queued.pk, orphan.pk])
    for message in published_jobs:
        run_published(message)
    assert set(SnapshotJob.objects.values_list("status", flat=True)) == {Status.SUCCEEDED}


def test_snapshot_and_export_tasks_go_to_the_default_queue():
    from studio.celery import app

    for name in ("training.tasks.snapshot_job_task", "training.tasks.export_job_task"):
        assert app.amqp.router.route({}, name)["queue"].name == "default"


@pytest.mark.django_db(transaction=True)
def test_progress_is_reported_from_its_own_connection_while_the_snapshot_is_read(make_user, published_jobs,
                                                                                  monkeypatch):
    """Outside a transaction (a worker) a helper thread writes the heartbeat: the reading
    connection keeps its read statements open, and must not write (see _Progress)."""
    from tests.training.helpers import build_labelled_project, make_prompt

    labelled = build_labelled_project(make_user)
    for i in range(30):
        make_prompt(labelled.project, f"Extra {i}")
    job = create(labelled)
    seen = []
    real = snapshot_jobs._Progress.__init__

    def fast(self, job, *, total, threaded=None, every=0.0):
        real(self, job, total=total, threaded=threaded, every=0.01)
        seen.append(self)

    slow_rows = snapshot_jobs._Progress.__call__

    def slowly(self, done):
        time.sleep(0.02)  # time for the helper to report
        return slow_rows(self, done)

    beats = []
    real_heartbeat = jobs.job_heartbeat

    def recorded(job, **fields):
        real_heartbeat(job, **fields)
        beats.append((threading.current_thread().name, fields.get("prompts_done"),
                      SnapshotJob.objects.get(pk=job.pk).prompts_done))

    monkeypatch.setattr(snapshot_jobs._Progress, "__init__", fast)
    monkeypatch.setattr(snapshot_jobs._Progress, "__call__", slowly)
    monkeypatch.setattr(jobs, "job_heartbeat", recorded)
    assert not connection.in_atomic_block
    done = snapshot_jobs.snapshot_job_execute(job_id=job.pk, worker="w@h:1")
    assert done.status == Status.SUCCEEDED, done.error
    [progress] = seen
    assert progress.threaded and not progress._thread.is_alive()
    assert done.prompts_total == 31 and done.prompts_done == 31
    # The helper thread wrote the progress, from its own connection, while the snapshot was being read.
    mid_way = [b for b in beats if b[0] == f"snapshot-job-{job.pk}-heartbeat" and 0 < b[1] < 31]
    assert mid_way and all(written == reported for _, reported, written in mid_way)


@pytest.mark.django_db(transaction=True)
def test_a_cancel_seen_by_the_helper_thread_stops_the_snapshot(make_user, published_jobs, monkeypatch):
    from tests.training.helpers import build_labelled_project, make_prompt

    labelled = build_labelled_project(make_user)
    for i in range(30):
        make_prompt(labelled.project, f"Extra {i}")
    job = create(labelled)
    real = snapshot_jobs._Progress.__init__

    def fast(self, job, *, total, threaded=None, every=0.0):
        real(self, job, total=total, threaded=threaded, every=0.01)

    calls = []
    report = snapshot_jobs._Progress.__call__

    def cancel_at_the_fifth(self, done):
        calls.append(done)
        if done == 5:  # an admin, elsewhere (another connection: on PostgreSQL the stream holds this one)
            admin = threading.Thread(target=lambda: (
                SnapshotJob.objects.filter(pk=self.job.pk).update(status=Status.CANCELLED), connection.close()))
            admin.start()
            admin.join()
        time.sleep(0.02)
        return report(self, done)

    monkeypatch.setattr(snapshot_jobs._Progress, "__init__", fast)
    monkeypatch.setattr(snapshot_jobs._Progress, "__call__", cancel_at_the_fifth)
    done = snapshot_jobs.snapshot_job_execute(job_id=job.pk, worker="w@h:1")
    assert done.status == Status.CANCELLED and 5 <= max(calls) < 31
    assert not DatasetSnapshot.objects.exists() and not list(snapshot_dir().iterdir())


@pytest.mark.django_db(transaction=True)
def test_a_label_written_while_a_worker_reads_the_snapshot_breaks_nothing(make_user, published_jobs, monkeypatch):
    """The reading connection keeps its statements open (one read snapshot): had it written the
    heartbeat itself after an annotator's write, SQLite would refuse ("database is locked") and
    the job would fail. The helper thread's own connection writes it instead."""
    from labeling.models import Prompt
    from tests.training.helpers import build_labelled_project, make_prompt
    from training import snapshots as snapshots_module

    monkeypatch.setattr(snapshots_module, "CHUNK_SIZE", 10)  # the prompts' statement stays open
    labelled = build_labelled_project(make_user)
    for i in range(60):
        make_prompt(labelled.project, f"Extra {i}")
    job = create(labelled)
    real_init = snapshot_jobs._Progress.__init__

    def fast(self, job, *, total, threaded=None, every=0.0):
        real_init(self, job, total=total, threaded=threaded, every=0.01)

    writes = []
    report = snapshot_jobs._Progress.__call__

    def meanwhile(self, done):
        if done == 20:
            def annotate():
                from django.db import connection as own

                try:
                    Prompt.objects.filter(pk=labelled.prompt.pk).update(external_id="edited meanwhile")
                    writes.append("ok")
                finally:
                    own.close()

            thread = threading.Thread(target=annotate)
            thread.start()
            thread.join()
        time.sleep(0.02)  # time for a heartbeat after the write
        return report(self, done)

    monkeypatch.setattr(snapshot_jobs._Progress, "__init__", fast)
    monkeypatch.setattr(snapshot_jobs._Progress, "__call__", meanwhile)
    done = snapshot_jobs.snapshot_job_execute(job_id=job.pk, worker="w@h:1")
    assert writes == ["ok"]
    assert done.status == Status.SUCCEEDED, done.error
