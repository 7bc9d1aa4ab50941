"""Imports as jobs: the upload is saved and queued, a worker (here: the execute function called
directly, as the task does) imports it, a run stopped in the middle resumes after its last
committed row with exact counts and nothing twice, cancel keeps what was written, failures say
what happened."""
from __future__ import annotations

import hashlib
import io
import json

import pytest
from kombu.exceptions import OperationalError

from labeling.importers import fgrlhf as fgrlhf_module
from labeling.importers import jsonl as jsonl_module
from labeling.importers import run as run_module
from labeling.importers.run import (
    import_run_cancel,
    import_run_create,
    import_run_execute,
    import_run_in_process,
    import_runs_recover,
)
from labeling.models import Candidate, ImportRun, Prompt, Ranking
from studio import jobs
from studio.errors import Conflict, PermissionDeniedError
from tests.job_fixtures import run_published

pytestmark = pytest.mark.django_db

Status = ImportRun.Status


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def rows_file(n: int, *, tag: str = "r") -> bytes:
    """n JSONL rows, each a prompt with two ranked candidates (prompt, candidates, ranking)."""
    return "".join(json.dumps({"id": f"{tag}{i}", "prompt": f"Question {i}?", "candidates": [f"a{i}", f"b{i}"],
                               "ranking": [[0], [1]]}) + "\n" for i in range(n)).encode()


def queue(project, user, data: bytes, fmt="jsonl", filename="rows.jsonl") -> ImportRun:
    return import_run_create(project=project, user=user, stream=io.BytesIO(data), filename=filename, format=fmt)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the job machinery catches it."""


def test_create_saves_the_upload_and_queues_the_run(project, admin_user, published_jobs, data_dir):
    data = rows_file(3)
    run = queue(project, admin_user, data)

    assert run.status == Status.QUEUED and run.created_by == admin_user and run.format == "jsonl"
    assert [(m["task"], m["args"], m["task_id"]) for m in published_jobs] == [
        ("labeling.tasks.import_run_task", [run.pk], run.celery_task_id)]
    upload = data_dir / run.path
    assert run.path.startswith("imports/") and upload.read_bytes() == data
    assert run.size_bytes == len(data) and run.file_sha256 == hashlib.sha256(data).hexdigest()
    assert not Prompt.objects.exists()  # nothing is imported in the request

    run_published(published_jobs[0])  # the worker

    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED and run.result == "succeeded" and not run.partial
    assert run.counts == {"rows": 3, "prompts": 3, "demonstrations": 0, "candidates": 6, "rankings": 3,
                          "unchanged": 0}
    assert run.bytes_done == run.size_bytes and run.progress_percent == 100 and run.rows_read == 3
    assert run.started_at and run.finished_at and run.worker.startswith("worker:")
    assert not upload.exists() and run.path == ""  # a finished import keeps no copy of the file


def test_importing_the_same_file_again_creates_nothing(project, admin_user, published_jobs):
    data = rows_file(4)
    first, second = queue(project, admin_user, data), queue(project, admin_user, data)
    for message in published_jobs:
        run_published(message)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.counts["prompts"] == 4 and second.counts["prompts"] == 0 and second.counts["unchanged"] == 4
    assert second.status == Status.SUCCEEDED
    assert Prompt.objects.count() == 4 and Candidate.objects.count() == 8 and Ranking.objects.count() == 4


def test_a_run_that_is_done_or_held_is_not_run_twice(project, admin_user, published_jobs):
    run = queue(project, admin_user, rows_file(2))
    done = import_run_execute(run_id=run.pk, worker="w1:1")
    assert done.status == Status.SUCCEEDED
    again = import_run_execute(run_id=run.pk, worker="w2:2")  # the message delivered twice
    assert again.worker == "w1:1" and Prompt.objects.count() == 2


def test_a_run_stopped_mid_file_resumes_after_its_last_row_with_exact_counts(project, admin_user, published_jobs,
                                                                             monkeypatch, data_dir):
    run = queue(project, admin_user, rows_file(10))
    real = jsonl_module.IMPORTER
    calls = {"n": 0}

    def write_then_die(*, context, row):
        calls["n"] += 1
        if calls["n"] == 5:  # killed in the middle of row 5: its transaction never commits
            raise Killed()
        return real.write_row(context=context, row=row)

    monkeypatch.setitem(run_module.IMPORT_FORMATS, "jsonl",
                        real.__class__(name=real.name, unit=real.unit, read_rows=real.read_rows,
                                       write_row=write_then_die))
    with pytest.raises(Killed):
        import_run_execute(run_id=run.pk, worker="studio-worker@host:111")
    killed = ImportRun.objects.get(pk=run.pk)
    assert killed.status == Status.RUNNING and killed.rows_read == 4 and killed.counts["prompts"] == 4
    assert Prompt.objects.count() == 4 and (data_dir / killed.path).exists()

    monkeypatch.setitem(run_module.IMPORT_FORMATS, "jsonl", real)
    # The restarted worker (same node name) re-queues what its predecessor held.
    assert import_runs_recover(worker_prefix="studio-worker@host") == [run.pk]
    assert published_jobs[-1]["args"] == [run.pk]
    done = import_run_execute(run_id=run.pk, worker="studio-worker@host:222")

    assert done.status == Status.SUCCEEDED and done.resumes == 1 and done.rows_read == 10
    # Exact: the first worker's rows are not counted again as unchanged, none is missing or doubled.
    assert done.counts == {"rows": 10, "prompts": 10, "demonstrations": 0, "candidates": 20, "rankings": 10,
                           "unchanged": 0}
    assert Prompt.objects.count() == 10 and Candidate.objects.count() == 20 and Ranking.objects.count() == 10


def test_bad_rows_before_a_stop_are_reported_once(project, admin_user, published_jobs, monkeypatch):
    data = b'{"prompt": ""}\n' + rows_file(3) + b'not json\n'
    run = queue(project, admin_user, data)
    real = jsonl_module.IMPORTER
    calls = {"n": 0}

    def write_then_die(*, context, row):
        calls["n"] += 1
        if calls["n"] == 4:  # row 3 (the second good one)
            raise Killed()
        return real.write_row(context=context, row=row)

    monkeypatch.setitem(run_module.IMPORT_FORMATS, "jsonl",
                        real.__class__(name=real.name, unit=real.unit, read_rows=real.read_rows,
                                       write_row=write_then_die))
    with pytest.raises(Killed):
        import_run_execute(run_id=run.pk, worker="w@h:1")
    monkeypatch.setitem(run_module.IMPORT_FORMATS, "jsonl", real)
    ImportRun.objects.filter(pk=run.pk).update(heartbeat_at=None)  # silent: another worker may take it
    done = import_run_execute(run_id=run.pk, worker="w@h:2")
    assert done.result == "partial" and done.bad_rows == 2
    assert [e["line"] for e in done.errors] == [1, 5]
    assert done.counts["rows"] == 5 and done.counts["prompts"] == 3


def test_cancel_a_queued_run(project, admin_user, published_jobs, data_dir):
    run = queue(project, admin_user, rows_file(2))
    upload = data_dir / run.path
    cancelled = import_run_cancel(user=admin_user, run=run)
    assert cancelled.status == Status.CANCELLED and cancelled.result == "cancelled"
    assert not upload.exists()
    run_published(published_jobs[0])  # the message still arrives: nothing happens
    assert not Prompt.objects.exists()
    with pytest.raises(Conflict):
        import_run_cancel(user=admin_user, run=cancelled)


def test_cancel_stops_a_running_import_and_keeps_what_was_written(project, admin_user, published_jobs,
                                                                  monkeypatch):
    run = queue(project, admin_user, rows_file(6))
    real = jsonl_module.IMPORTER
    calls = {"n": 0}

    def write_and_cancel(*, context, row):
        calls["n"] += 1
        if calls["n"] == 3:  # an admin cancels while row 3 is written
            jobs.job_cancel(job=ImportRun.objects.get(pk=run.pk))
        return real.write_row(context=context, row=row)

    monkeypatch.setitem(run_module.IMPORT_FORMATS, "jsonl",
                        real.__class__(name=real.name, unit=real.unit, read_rows=real.read_rows,
                                       write_row=write_and_cancel))
    done = import_run_execute(run_id=run.pk, worker="w@h:1")
    assert done.status == Status.CANCELLED and calls["n"] == 3
    assert Prompt.objects.count() == 3 and done.counts["prompts"] == 3  # the rows written stay, counted
    assert done.path == ""


def test_only_admins_create_or_cancel(project, make_user, admin_user, published_jobs):
    with pytest.raises(PermissionDeniedError):
        queue(project, make_user("reviewer"), rows_file(1))
    run = queue(project, admin_user, rows_file(1))
    with pytest.raises(PermissionDeniedError):
        import_run_cancel(user=make_user("annotator"), run=run)
    assert ImportRun.objects.count() == 1


def test_a_broker_that_cannot_be_reached_fails_the_run(project, admin_user, monkeypatch, data_dir):
    from labeling.tasks import import_run_task

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(import_run_task, "apply_async", down)
    with pytest.raises(jobs.BrokerUnavailable, match="broker is unreachable"):
        queue(project, admin_user, rows_file(1))
    run = ImportRun.objects.get()
    assert run.status == Status.FAILED and "broker" in run.error and run.path == ""
    assert not any((data_dir / "imports").iterdir()) and not Prompt.objects.exists()  # never run inline


def test_failures_say_what_happened(project, admin_user, published_jobs, data_dir):
    nothing = queue(project, admin_user, b"[1, 2]\n", fmt="fgrlhf", filename="wrong.jsonl")
    gone = queue(project, admin_user, rows_file(1))
    (data_dir / gone.path).unlink()
    for message in published_jobs:
        run_published(message)
    nothing.refresh_from_db()
    gone.refresh_from_db()
    assert nothing.status == Status.FAILED and nothing.result == "failed"
    assert nothing.error.startswith("Nothing could be imported from wrong.jsonl as fgrlhf; the first problem: item 1:")
    assert gone.status == Status.FAILED and "no longer in the data directory" in gone.error


def test_an_unexpected_error_fails_the_run_with_its_reason(project, admin_user, published_jobs, monkeypatch):
    run = queue(project, admin_user, json.dumps([{"question": "q"}]).encode(), fmt="fgrlhf")

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(run_module.IMPORT_FORMATS, "fgrlhf",
                        fgrlhf_module.IMPORTER.__class__(name="fgrlhf", unit="item",
                                                         read_rows=fgrlhf_module.IMPORTER.read_rows,
                                                         write_row=broken))
    with pytest.raises(RuntimeError):
        import_run_execute(run_id=run.pk, worker="w@h:1")
    run.refresh_from_db()
    assert run.status == Status.FAILED and run.error == "Unexpected error: RuntimeError: disk on fire"
    assert run.path == ""


def test_in_process_runs_are_finished_when_they_return(project):
    run = import_run_in_process(project=project, user=None, stream=io.BytesIO(rows_file(2)), filename="f.jsonl",
                                format="jsonl")
    assert run.status == Status.SUCCEEDED and run.created_by is None and run.worker.startswith("in-process:")
    assert Prompt.objects.count() == 2 and run.path == ""


def test_import_tasks_go_to_the_default_queue_and_a_default_worker_recovers_them(project, admin_user,
                                                                                  published_jobs):
    from types import SimpleNamespace

    from labeling.tasks import _recover_import_runs
    from studio.celery import app

    assert app.amqp.router.route({}, "labeling.tasks.import_run_task")["queue"].name == "default"
    run = queue(project, admin_user, rows_file(1))
    published_jobs.clear()

    def worker(queues):
        return SimpleNamespace(hostname="w@h", app=SimpleNamespace(
            amqp=SimpleNamespace(queues=SimpleNamespace(consume_from={q: None for q in queues}))))

    _recover_import_runs(sender=worker(["training"]))
    assert published_jobs == []  # not this worker's queue
    _recover_import_runs(sender=worker(["default", "generation"]))
    assert [m["args"] for m in published_jobs] == [[run.pk]]  # a queued run whose message may be lost
