"""A real Celery worker of the `default` queue makes the snapshots the API asks for: the API
waits for the job and answers with the snapshot (201, then 200 for the same labels), as the
acceptance scenario expects; with no wait it answers 202 and the job is polled to its end."""
from __future__ import annotations

import pytest

from tests.celery_workers import wait_for
from tests.training.helpers import build_labelled_project
from training.models import DatasetSnapshot, SnapshotJob

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def test_a_real_worker_makes_the_snapshots_the_api_asks_for(workers, broker_data_dir, settings, make_user,
                                                            client_as):
    settings.DATA_DIR = broker_data_dir  # the worker's STUDIO_DATA_DIR: the snapshot file is written there
    labelled = build_labelled_project(make_user)
    worker = workers("snapshots@%h", queues="default")
    client = client_as(labelled.admin)
    url = f"/api/v1/projects/{labelled.project.slug}/snapshots/"

    settings.STUDIO_SNAPSHOT_WAIT_SECONDS = 60  # the worker may still be starting
    first = client.post(url, {}, format="json")
    settings.STUDIO_SNAPSHOT_WAIT_SECONDS = 20
    second = client.post(url, {}, format="json")
    assert (first.status_code, second.status_code) == (201, 200), (first.content, worker.log())
    sha = first.json()["sha256"]
    assert second.json()["sha256"] == sha and (broker_data_dir / "snapshots" / f"{sha}.jsonl").exists()

    settings.STUDIO_SNAPSHOT_WAIT_SECONDS = 0
    queued = client.post(url, {"exclude_imported": True}, format="json")
    assert queued.status_code == 202
    done = wait_for(lambda: (j := client.get(queued.json()["url"]).json())["status"] == "succeeded" and j,
                    timeout=60, what="the snapshot job", worker=worker)
    assert done["snapshot"] != sha and done["created"] is True
    assert SnapshotJob.objects.filter(status="succeeded").count() == 3 and DatasetSnapshot.objects.count() == 2
    assert SnapshotJob.objects.get(pk=done["id"]).worker.startswith("snapshots@")
