"""The snapshot request contract now that snapshots are jobs: the API and the page answer with
the snapshot when its job is done within the wait (201 new / 200 the same labels; see
test_api.py, where jobs run at once), and with the job when it is not (202, then poll)."""
from __future__ import annotations

import pytest

from studio import jobs
from tests.factories import PASSWORD
from tests.job_fixtures import run_published
from training import snapshot_jobs
from training.models import DatasetSnapshot, SnapshotJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_wait(settings):
    settings.STUDIO_SNAPSHOT_WAIT_SECONDS = 0


def test_202_with_the_job_when_it_is_not_done_in_time_then_poll(labelled, client_as, published_jobs, no_wait):
    client = client_as(labelled.admin)
    url = f"/api/v1/projects/{labelled.project.slug}/snapshots/"
    response = client.post(url, {"exclude_imported": True}, format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    job = SnapshotJob.objects.get()
    assert body["id"] == job.pk and body["status"] == "queued" and body["progress"] == 0
    assert body["url"] == f"/api/v1/snapshot-jobs/{job.pk}/" and response["Location"] == body["url"]
    assert body["snapshot"] is None and body["filters"]["exclude_imported"] is True
    assert not DatasetSnapshot.objects.exists()
    # Asking again while it waits for a worker gives the same job.
    assert client.post(url, {"exclude_imported": True}, format="json").json()["id"] == job.pk

    assert client.get(body["url"]).json()["status"] == "queued"
    run_published(published_jobs[0])  # a worker

    done = client.get(body["url"]).json()
    sha = DatasetSnapshot.objects.get().sha256
    assert done["status"] == "succeeded" and done["snapshot"] == sha and done["created"] is True
    assert done["progress"] == 100 and done["prompts_done"] == done["prompts_total"] == 1
    assert done["snapshot_url"] == f"/api/v1/snapshots/{sha}/"
    assert client.get(done["snapshot_url"]).json()["sha256"] == sha


def test_201_then_200_when_a_worker_is_quick(labelled, client_as):
    """The acceptance scenario's datasets step: jobs run at once here (tests/job_fixtures.py)."""
    client = client_as(labelled.admin)
    url = f"/api/v1/projects/{labelled.project.slug}/snapshots/"
    first, second = client.post(url, {}, format="json"), client.post(url, {}, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["sha256"] == second.json()["sha256"] and "exports" in first.json()
    assert SnapshotJob.objects.count() == 2 and DatasetSnapshot.objects.count() == 1


def test_a_failed_job_is_answered_with_its_error(labelled, client_as, jobs_inline, monkeypatch):
    def broken(**kwargs):
        raise jobs.JobFailure("The disk is full.")

    monkeypatch.setattr(snapshot_jobs, "snapshot_create", broken)
    response = client_as(labelled.admin).post(f"/api/v1/projects/{labelled.project.slug}/snapshots/", {},
                                              format="json")
    assert response.status_code == 500
    assert response.json()["detail"] == "The snapshot could not be made: The disk is full."
    assert response.json()["job"]["status"] == "failed"


def test_a_broker_that_is_down_is_a_503(labelled, client_as, monkeypatch):
    from kombu.exceptions import OperationalError

    from training.tasks import snapshot_job_task

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(snapshot_job_task, "apply_async", down)
    response = client_as(labelled.admin).post(f"/api/v1/projects/{labelled.project.slug}/snapshots/", {},
                                              format="json")
    assert response.status_code == 503 and "broker" in response.json()["detail"]
    assert SnapshotJob.objects.get().status == "failed"


def test_cancel(labelled, client_as, published_jobs, no_wait):
    client = client_as(labelled.admin)
    job_id = client.post(f"/api/v1/projects/{labelled.project.slug}/snapshots/", {}, format="json").json()["id"]
    response = client.post(f"/api/v1/snapshot-jobs/{job_id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/snapshot-jobs/{job_id}/cancel/").status_code == 409
    run_published(published_jobs[0])
    assert not DatasetSnapshot.objects.exists()
    assert client.get("/api/v1/snapshot-jobs/999/").status_code == 404


def test_roles(labelled, client_as, make_user, published_jobs, no_wait):
    job_id = client_as(labelled.admin).post(f"/api/v1/projects/{labelled.project.slug}/snapshots/", {},
                                            format="json").json()["id"]
    for user in (labelled.annotator, make_user("reviewer")):
        client = client_as(user)
        assert client.post(f"/api/v1/projects/{labelled.project.slug}/snapshots/", {}, format="json").status_code == 403
        assert client.get(f"/api/v1/snapshot-jobs/{job_id}/").status_code == 403
        assert client.post(f"/api/v1/snapshot-jobs/{job_id}/cancel/").status_code == 403
    assert SnapshotJob.objects.count() == 1 and SnapshotJob.objects.get().status == "queued"


# --- The page ---------------------------------------------------------------------------------

def test_the_page_shows_the_jobs_progress_then_goes_to_the_snapshot(labelled, client, published_jobs, no_wait):
    assert client.login(username=labelled.admin.username, password=PASSWORD)
    made = client.post(f"/projects/{labelled.project.slug}/snapshots/",
                       {"validation_fraction": "0.1", "split_seed": "0"})
    job = SnapshotJob.objects.get()
    assert made.status_code == 302 and made["Location"] == f"/snapshot-jobs/{job.pk}/"
    page = client.get(made["Location"]).content.decode()
    assert "Queued" in page and f"/snapshot-jobs/{job.pk}/progress/" in page and "Cancel" in page
    listing = client.get(f"/projects/{labelled.project.slug}/snapshots/").content.decode()
    assert f"/snapshot-jobs/{job.pk}/" in listing  # the datasets page lists the job while it runs

    live = client.get(f"/snapshot-jobs/{job.pk}/progress/?was=live", HTTP_HX_REQUEST="true")
    assert live.status_code == 200 and "HX-Redirect" not in live
    run_published(published_jobs[0])
    sha = DatasetSnapshot.objects.get().sha256
    done = client.get(f"/snapshot-jobs/{job.pk}/progress/?was=live", HTTP_HX_REQUEST="true")
    assert done["HX-Redirect"] == f"/snapshots/{sha}/"
    assert b"Snapshot " in client.get(f"/snapshots/{sha}/").content
    again = client.get(f"/snapshot-jobs/{job.pk}/")
    assert again.status_code == 302 and again["Location"] == f"/snapshots/{sha}/"


def test_the_page_shows_a_failed_job_and_cancels_a_running_one(labelled, client, published_jobs, no_wait):
    assert client.login(username=labelled.admin.username, password=PASSWORD)
    client.post(f"/projects/{labelled.project.slug}/snapshots/", {"validation_fraction": "0.1", "split_seed": "0"})
    job = SnapshotJob.objects.get()
    cancelled = client.post(f"/snapshot-jobs/{job.pk}/cancel/", follow=True)
    assert b"cancelled" in cancelled.content and SnapshotJob.objects.get().status == "cancelled"
    SnapshotJob.objects.filter(pk=job.pk).update(status="failed", error="Boom <b>")
    page = client.get(f"/snapshot-jobs/{job.pk}/").content.decode()
    assert "Boom &lt;b&gt;" in page and "Cancel</button>" not in page


def test_job_pages_are_for_admins(labelled, client, make_user, published_jobs, no_wait, client_as):
    job_id = client_as(labelled.admin).post(f"/api/v1/projects/{labelled.project.slug}/snapshots/", {},
                                            format="json").json()["id"]
    reviewer = make_user("reviewer")
    assert client.login(username=reviewer.username, password=PASSWORD)
    assert client.get(f"/snapshot-jobs/{job_id}/").status_code == 403
    assert client.post(f"/snapshot-jobs/{job_id}/cancel/").status_code == 403


def test_the_openapi_schema_describes_the_job_answers():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert {"200", "201", "202"} <= set(schema["paths"]["/api/v1/projects/{slug}/snapshots/"]["post"]["responses"])
    assert "get" in schema["paths"]["/api/v1/snapshot-jobs/{job_id}/"]
    assert "post" in schema["paths"]["/api/v1/snapshot-jobs/{job_id}/cancel/"]
