"""A real Celery worker of the `default` queue imports an uploaded file, and a worker killed
(SIGKILL) in the middle of an import is restarted and finishes it: after its last committed
row, with exact counts, and with nothing imported twice."""
from __future__ import annotations

import io
import json
import signal

import pytest

from labeling.importers.run import import_run_create
from labeling.models import Candidate, ImportRun, Prompt, Ranking
from tests.celery_workers import wait_for

pytestmark = [pytest.mark.celery, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROWS = 2500  # a few seconds of work on a worker: time to kill it in the middle


def rows_file(n: int) -> bytes:
    return "".join(json.dumps({"id": f"r{i}", "prompt": f"Question {i}?", "candidates": [f"a{i}", f"b{i}"],
                               "ranking": [[0], [1]]}) + "\n" for i in range(n)).encode()


def state(run_id: int) -> ImportRun:
    return ImportRun.objects.get(pk=run_id)


def test_a_killed_import_worker_resumes_after_the_last_committed_row(workers, broker_data_dir, settings,
                                                                      admin_user, project):
    settings.DATA_DIR = broker_data_dir  # the worker's STUDIO_DATA_DIR: it reads the upload from there
    run = import_run_create(project=project, user=admin_user, stream=io.BytesIO(rows_file(ROWS)),
                            filename="big.jsonl", format="jsonl")
    upload = broker_data_dir / run.path
    first = workers("import-kill@%h", queues="default")
    started = wait_for(lambda: (r := state(run.pk)).rows_read >= 200 and r, timeout=120,
                       what="the first rows", worker=first, interval=0.02)
    first.kill(signal.SIGKILL)
    killed = state(run.pk)
    assert killed.status == "running", f"the import ended before the kill: {killed.status} {killed.error}"
    assert started.rows_read <= killed.rows_read < ROWS and upload.exists()
    assert Prompt.objects.filter(project=project).count() == killed.counts["prompts"] == killed.rows_read

    second = workers("import-kill@%h", queues="default")  # same node name: it re-queues what its predecessor held
    # A finished run's upload is deleted just after its status is saved: wait for both.
    done = wait_for(lambda: (s := state(run.pk)).is_finished and not s.path and s, timeout=300,
                    what="the resumed import to finish and drop its upload", worker=second)
    assert done.status == "succeeded", done.error
    assert done.resumes == 1 and done.worker != killed.worker
    assert done.counts == {"rows": ROWS, "prompts": ROWS, "demonstrations": 0, "candidates": 2 * ROWS,
                           "rankings": ROWS, "unchanged": 0}  # exact: nothing counted twice
    assert Prompt.objects.filter(project=project).count() == ROWS
    assert Candidate.objects.filter(prompt__project=project).count() == 2 * ROWS
    assert Ranking.objects.filter(prompt__project=project).count() == ROWS
    assert f"Re-queued imports [{run.pk}]" in second.log()
    assert not upload.exists() and done.path == ""
