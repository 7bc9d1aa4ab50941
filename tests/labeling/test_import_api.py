"""The imports API: POST answers 202 with the queued import and where to poll it; GET gives its
progress, then what it created and every bad row; cancel; admins only."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from kombu.exceptions import OperationalError

from labeling.models import ImportRun, Prompt
from tests.job_fixtures import run_published

pytestmark = pytest.mark.django_db

ROWS = b'{"prompt": "One"}\n{"prompt": "Two"}\nnot json\n'


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def upload(client, project, data=ROWS, fmt="jsonl"):
    return client.post(f"/api/v1/projects/{project.slug}/imports/",
                       {"file": SimpleUploadedFile("rows.jsonl", data), "format": fmt}, format="multipart")


def test_post_answers_202_then_the_import_is_polled_to_its_report(client_as, admin_user, project, published_jobs):
    client = client_as(admin_user)
    response = upload(client, project)

    assert response.status_code == 202, response.content
    body = response.json()
    run = ImportRun.objects.get()
    assert body["id"] == run.pk and body["status"] == "queued" and body["result"] is None
    assert body["url"] == f"/api/v1/imports/{run.pk}/" and response["Location"] == body["url"]
    assert body["size_bytes"] == len(ROWS) and body["progress"] == 0 and body["filename"] == "rows.jsonl"
    assert not Prompt.objects.exists()

    polled = client.get(body["url"])
    assert polled.status_code == 200 and polled.json()["status"] == "queued"

    run_published(published_jobs[0])  # a worker runs it

    done = client.get(body["url"]).json()
    assert done["status"] == "succeeded" and done["result"] == "partial" and done["partial"] is True
    assert done["bad_rows"] == 1 and done["rows_done"] == 3 and done["progress"] == 100
    assert done["counts"] == {"rows": 3, "prompts": 2, "demonstrations": 0, "candidates": 0, "rankings": 0,
                              "unchanged": 0}
    assert done["errors"] == [{"line": 3, "message": "invalid JSON: Expecting value (column 1)."}]
    assert done["bytes_done"] == len(ROWS) and done["error"] == "" and done["finished_at"]
    listed = client.get(f"/api/v1/projects/{project.slug}/imports/").json()["results"]
    assert [r["id"] for r in listed] == [run.pk]


def test_importing_the_same_file_again_creates_nothing(client_as, admin_user, project, jobs_inline):
    client = client_as(admin_user)
    first = client.get(upload(client, project).json()["url"]).json()
    second = client.get(upload(client, project).json()["url"]).json()
    assert first["counts"]["prompts"] == 2 and second["counts"]["prompts"] == 0
    assert second["counts"]["unchanged"] == 2 and Prompt.objects.count() == 2


def test_nothing_importable_is_reported_as_failed_with_the_first_problem(client_as, admin_user, project,
                                                                         jobs_inline):
    client = client_as(admin_user)
    done = client.get(upload(client, project, data=b'{"prompt": "x"}\n', fmt="fgrlhf").json()["url"]).json()
    assert done["status"] == "failed" and done["result"] == "failed"
    assert done["error"].startswith("Nothing could be imported from rows.jsonl as fgrlhf; the first problem:")


def test_cancel(client_as, admin_user, project, published_jobs):
    client = client_as(admin_user)
    body = upload(client, project).json()
    cancelled = client.post(f"/api/v1/imports/{body['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/imports/{body['id']}/cancel/").status_code == 409
    run_published(published_jobs[0])
    assert not Prompt.objects.exists()


def test_bad_input_and_a_broker_that_is_down(client_as, admin_user, project, monkeypatch):
    client = client_as(admin_user)
    assert upload(client, project, fmt="csv").status_code == 400
    assert client.get("/api/v1/imports/999/").status_code == 404

    from labeling.tasks import import_run_task

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(import_run_task, "apply_async", down)
    response = upload(client, project)
    assert response.status_code == 503 and "broker" in response.json()["detail"]
    assert ImportRun.objects.get().status == "failed" and not Prompt.objects.exists()


@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_only_admins(client_as, make_user, admin_user, project, role, published_jobs):
    run_id = upload(client_as(admin_user), project).json()["id"]
    client = client_as(make_user(role))
    assert upload(client, project).status_code == 403
    assert client.get(f"/api/v1/imports/{run_id}/").status_code == 403
    assert client.post(f"/api/v1/imports/{run_id}/cancel/").status_code == 403
    assert ImportRun.objects.count() == 1 and ImportRun.objects.get().status == "queued"


def test_the_openapi_schema_describes_the_import_endpoints():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert "202" in schema["paths"]["/api/v1/projects/{slug}/imports/"]["post"]["responses"]
    assert "get" in schema["paths"]["/api/v1/imports/{run_id}/"]
    assert "post" in schema["paths"]["/api/v1/imports/{run_id}/cancel/"]
