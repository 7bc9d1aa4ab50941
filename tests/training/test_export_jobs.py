"""The `hf` export as a job: GET (or POST) starts or reuses the job and answers 202; a worker
(here: the execute function called directly, as the task does) writes the tar under
DATA_DIR/exports/; then GET serves that file for the same export. Other formats still stream."""
from __future__ import annotations

import io
import tarfile

import pytest
from django.http import FileResponse, StreamingHttpResponse

from studio import jobs
from tests.factories import PASSWORD
from tests.job_fixtures import run_published
from training import export_jobs
from training.exports import ExportOptions
from training.models import ExportJob
from training.snapshots import snapshot_create

pytestmark = pytest.mark.django_db

Status = ExportJob.Status


@pytest.fixture
def snapshot(labelled):
    snap, _ = snapshot_create(user=labelled.admin, project=labelled.project)
    return snap


def body(response) -> bytes:
    if isinstance(response, (FileResponse, StreamingHttpResponse)):
        return b"".join(response.streaming_content)
    return response.content


def tar_names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def test_get_answers_202_then_serves_the_finished_file(labelled, snapshot, client_as, published_jobs, data_dir):
    client = client_as(labelled.admin)
    url = f"/api/v1/snapshots/{snapshot.sha256}/export/hf/?rows=sft"
    response = client.get(url)

    assert response.status_code == 202, response.content
    job = ExportJob.objects.get()
    first = response.json()
    assert first["id"] == job.pk and first["status"] == "queued" and first["download_url"] is None
    assert first["url"] == f"/api/v1/export-jobs/{job.pk}/" and response["Location"] == first["url"]
    assert first["options"]["rows"] == "sft" and job.filename == f"snapshot-{snapshot.sha256[:12]}-hf-sft.tar"
    # Asked again before it is built: the same job, not a second one.
    assert client.get(url).json()["id"] == job.pk and len(published_jobs) == 1

    run_published(published_jobs[0])  # a worker

    done = client.get(first["url"]).json()
    assert done["status"] == "succeeded" and done["phase"] == "done" and done["progress"] == 100
    assert done["rows_done"] == done["rows_total"] == 1 and done["size_bytes"] > 0
    assert done["download_url"] == f"/api/v1/snapshots/{snapshot.sha256}/export/hf/?rows=sft"
    job.refresh_from_db()
    assert job.file_path == data_dir / "exports" / "hf" / snapshot.sha256 / f"{job.pk}.tar"

    served = client.get(done["download_url"])
    assert served.status_code == 200 and isinstance(served, FileResponse)
    assert served["Content-Type"] == "application/x-tar" and job.filename in served["Content-Disposition"]
    assert served["X-Snapshot-SHA256"] == snapshot.sha256
    names = tar_names(body(served))
    root = f"rlhf-studio-{snapshot.sha256[:12]}-sft"
    assert f"{root}/README.md" in names and any(n.startswith(f"{root}/dataset/") for n in names)
    assert not any((data_dir / "exports-tmp").iterdir())  # the build directory is gone
    assert len(published_jobs) == 1  # served from the file: nothing built again


def test_the_default_rows_and_their_name_are_the_same_export(labelled, snapshot, client_as, jobs_inline):
    client = client_as(labelled.admin)
    assert client.get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/").status_code == 202  # built at once here
    served = client.get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/?rows=preference")
    assert served.status_code == 200 and isinstance(served, FileResponse) and ExportJob.objects.count() == 1
    other = client.get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/?rows=preference&redact=1")
    assert other.status_code == 202 and ExportJob.objects.count() == 2  # other options: another export


def test_post_starts_the_job_or_reports_it_done(labelled, snapshot, client_as, published_jobs):
    client = client_as(labelled.admin)
    url = f"/api/v1/snapshots/{snapshot.sha256}/export/hf/"
    started = client.post(url, {"rows": "prompts", "split": "train"}, format="json")
    assert started.status_code == 202 and started.json()["options"]["split"] == "train"
    run_published(published_jobs[0])
    again = client.post(url, {"rows": "prompts", "split": "train"}, format="json")
    assert again.status_code == 200 and again.json()["status"] == "succeeded"
    assert again.json()["download_url"] == f"{url}?rows=prompts&split=train"
    assert client.post(f"/api/v1/snapshots/{snapshot.sha256}/export/preference/").status_code == 400
    assert client.post(url, {"rows": "nonsense"}, format="json").status_code == 400


def test_a_file_gone_missing_is_built_again(labelled, snapshot, client_as, jobs_inline):
    client = client_as(labelled.admin)
    client.get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/")
    ExportJob.objects.get().file_path.unlink()
    assert client.get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/").status_code == 202
    assert ExportJob.objects.count() == 2


def test_other_formats_still_stream(labelled, snapshot, client_as):
    response = client_as(labelled.admin).get(f"/api/v1/snapshots/{snapshot.sha256}/export/preference/")
    assert response.status_code == 200 and isinstance(response, StreamingHttpResponse)
    assert not ExportJob.objects.exists()


def test_cancel_a_queued_and_a_running_job(labelled, snapshot, client_as, published_jobs, monkeypatch, data_dir):
    client = client_as(labelled.admin)
    job_id = client.get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/").json()["id"]
    assert client.post(f"/api/v1/export-jobs/{job_id}/cancel/").json()["status"] == "cancelled"
    assert client.post(f"/api/v1/export-jobs/{job_id}/cancel/").status_code == 409

    running = export_jobs.export_job_for(user=labelled.admin, snapshot=snapshot, format_name="hf",
                                         options=ExportOptions())
    assert running.pk != job_id  # a cancelled export is not reused
    real = jobs.Heartbeat.__call__

    def cancel_when_archiving(self, *, force=False, **fields):
        if fields.get("phase") == "archive":
            jobs.job_cancel(job=ExportJob.objects.get(pk=self.job.pk))
        return real(self, force=force, **fields)

    monkeypatch.setattr(jobs.Heartbeat, "__call__", cancel_when_archiving)
    done = export_jobs.export_job_execute(job_id=running.pk, worker="w@h:1")
    assert done.status == Status.CANCELLED and done.path == ""
    folder = data_dir / "exports" / "hf" / snapshot.sha256
    assert not list(folder.iterdir()) and not any((data_dir / "exports-tmp").iterdir())


def test_failures_say_what_happened(labelled, snapshot, published_jobs):
    job = export_jobs.export_job_for(user=labelled.admin, snapshot=snapshot, format_name="hf",
                                     options=ExportOptions())
    snapshot.file_path.chmod(0o644)
    snapshot.file_path.unlink()
    done = export_jobs.export_job_execute(job_id=job.pk, worker="w@h:1")
    assert done.status == Status.FAILED and "missing from the data directory" in done.error


def test_roles(labelled, snapshot, client_as, make_user, published_jobs):
    job_id = client_as(labelled.admin).get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/").json()["id"]
    for user in (labelled.annotator, make_user("reviewer")):
        client = client_as(user)
        assert client.get(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/").status_code == 403
        assert client.post(f"/api/v1/snapshots/{snapshot.sha256}/export/hf/").status_code == 403
        assert client.get(f"/api/v1/export-jobs/{job_id}/").status_code == 403
        assert client.post(f"/api/v1/export-jobs/{job_id}/cancel/").status_code == 403
    assert ExportJob.objects.count() == 1


def test_recovery_requeues_orphaned_export_jobs(labelled, snapshot, published_jobs):
    job = export_jobs.export_job_for(user=labelled.admin, snapshot=snapshot, format_name="hf",
                                     options=ExportOptions())
    ExportJob.objects.filter(pk=job.pk).update(status=Status.RUNNING, worker="w@h:1")
    published_jobs.clear()
    assert export_jobs.export_jobs_recover(worker_prefix="w@h") == [job.pk]
    run_published(published_jobs[0])
    assert ExportJob.objects.get().status == Status.SUCCEEDED


# --- The snapshot page ----------------------------------------------------------------------------

def test_the_snapshot_pages_hf_link_shows_progress_then_downloads(labelled, snapshot, client, published_jobs):
    assert client.login(username=labelled.admin.username, password=PASSWORD)
    page = client.get(f"/snapshots/{snapshot.sha256}/").content.decode()
    start = f"/snapshots/{snapshot.sha256}/export/hf/"
    assert f'formaction="{start}"' in page and "data-job" in page
    assert f'data-api-url="/api/v1/snapshots/{snapshot.sha256}/export/hf/"' in page

    response = client.get(start + "?rows=sft")  # without JavaScript
    job = ExportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/export-jobs/{job.pk}/"
    progress = client.get(response["Location"]).content.decode()
    assert "Queued" in progress and f"/export-jobs/{job.pk}/progress/" in progress and "Download" not in progress
    run_published(published_jobs[0])
    done = client.get(f"/export-jobs/{job.pk}/progress/?was=live", HTTP_HX_REQUEST="true")
    assert done["HX-Refresh"] == "true"
    download = f"/api/v1/snapshots/{snapshot.sha256}/export/hf/?rows=sft"
    assert f'href="{download}"' in client.get(f"/export-jobs/{job.pk}/").content.decode()
    again = client.get(start + "?rows=sft")
    assert again.status_code == 302 and again["Location"] == download
    assert client.get(start + "?rows=bad", follow=True).status_code == 200  # the message, on the snapshot page


def test_export_job_pages_are_for_admins(labelled, snapshot, client, make_user, published_jobs):
    job = export_jobs.export_job_for(user=labelled.admin, snapshot=snapshot, format_name="hf",
                                     options=ExportOptions())
    reviewer = make_user("reviewer")
    assert client.login(username=reviewer.username, password=PASSWORD)
    assert client.get(f"/export-jobs/{job.pk}/").status_code == 403
    assert client.get(f"/snapshots/{snapshot.sha256}/export/hf/").status_code == 403
