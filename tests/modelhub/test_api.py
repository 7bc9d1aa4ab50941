"""The model hub API: roles, status codes and shapes."""
from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError

from modelhub import services
from modelhub.models import GenerationJob
from modelhub.registry import model_register
from tests.factories import CandidateFactory, DatasetSnapshotFactory, PromptFactory

pytestmark = pytest.mark.django_db

SNAPSHOT = "ab" * 32


@pytest.fixture
def lineage(tiny_model, tiny_model_dir):
    first = DatasetSnapshotFactory(sha256=SNAPSHOT)
    sft = model_register(name="sft-1", path=tiny_model_dir, kind="sft", parent=tiny_model, snapshot=first)
    policy = model_register(name="ppo-1", path=tiny_model_dir, kind="policy", parent=sft, metrics={"reward": 1.5},
                            snapshot=DatasetSnapshotFactory(sha256="cd" * 32, project=first.project))
    return tiny_model, sft, policy


@pytest.fixture
def prompts(gen_project):
    return [PromptFactory(project=gen_project) for _ in range(2)]


def results(payload):
    return payload["results"] if isinstance(payload, dict) and "results" in payload else payload


# --- Models ------------------------------------------------------------------------------------

def test_models_list_and_detail_give_parent_snapshot_and_lineage(client_as, admin_user, lineage):
    base, sft, policy = lineage
    api = client_as(admin_user)
    listed = results(api.get("/api/v1/models/").json())
    assert [m["name"] for m in listed] == ["tiny-llama", "sft-1", "ppo-1"]
    body = api.get(f"/api/v1/models/{policy.pk}/").json()
    assert body["parent"] == sft.pk and body["snapshot"] == "cd" * 32 and body["kind"] == "policy"
    assert body["metrics"] == {"reward": 1.5}
    assert [(m["id"], m["snapshot"]) for m in body["lineage"]] == [
        (policy.pk, "cd" * 32), (sft.pk, SNAPSHOT), (base.pk, "")]
    assert api.get(f"/api/v1/models/{base.pk}/").json()["parent"] is None
    assert api.get("/api/v1/models/99999/").status_code == 404


def test_models_are_for_reviewers_and_admins(client_as, reviewer, annotator, lineage):
    assert client_as(reviewer).get("/api/v1/models/").status_code == 200
    assert client_as(annotator).get("/api/v1/models/").status_code == 403
    assert client_as(annotator).get(f"/api/v1/models/{lineage[0].pk}/").status_code == 403


def test_project_generator_changes_only_when_an_admin_promotes_a_model(client_as, admin_user, reviewer,
                                                                       gen_project, lineage):
    base, sft, policy = lineage  # trained on another project's labels
    url = f"/api/v1/projects/{gen_project.slug}/generator/"
    # A newer, more trained model exists, but nobody promoted it: the project keeps the base.
    assert client_as(reviewer).get(url).json()["id"] == base.pk
    refused = client_as(admin_user).put(url, {"model": policy.pk}, format="json")
    assert refused.status_code == 400 and "another project" in refused.json()["detail"]
    assert client_as(reviewer).put(url, {"model": base.pk}, format="json").status_code == 403
    own = model_register(name="ppo-own", path=base.path, kind="policy", parent=base, project=gen_project)
    assert client_as(reviewer).get(url).json()["id"] == base.pk
    assert client_as(admin_user).put(url, {"model": own.pk}, format="json").json()["id"] == own.pk
    assert client_as(admin_user).get(url).json()["id"] == own.pk
    assert client_as(admin_user).get(f"/api/v1/projects/{policy.project.slug}/generator/").json()["id"] == base.pk


# --- Generation jobs ---------------------------------------------------------------------------

def test_admin_starts_a_job_202(client_as, admin_user, gen_project, prompts, tiny_model, published):
    api = client_as(admin_user)
    response = api.post(f"/api/v1/projects/{gen_project.slug}/generation-jobs/",
                        {"prompt_ids": [p.pk for p in prompts], "k": 2, "model": tiny_model.pk}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["k"] == 2 and body["model"]["id"] == tiny_model.pk
    assert (body["prompts_total"], body["candidates_total"], body["prompts_done"]) == (2, 4, 0)
    assert published[0]["args"] == [body["id"]]

    detail = api.get(f"/api/v1/generation-jobs/{body['id']}/").json()
    for key in ("id", "status", "prompts_done", "prompts_total", "candidates_done", "tokens_per_second",
                "eta_seconds", "error"):
        assert key in detail


def test_empty_body_uses_the_project_defaults(client_as, admin_user, gen_project, prompts, tiny_model, published):
    response = client_as(admin_user).post(f"/api/v1/projects/{gen_project.slug}/generation-jobs/", format="json")
    assert response.status_code == 202, response.content
    assert response.json()["k"] == gen_project.k_candidates
    assert response.json()["prompt_ids"] == [p.pk for p in prompts]


@pytest.mark.parametrize("body, field", [
    ({"k": 0}, "k"), ({"k": 10}, "k"), ({"k": "x"}, "k"),
    ({"prompt_ids": [999999]}, "prompt_ids"), ({"prompt_ids": "1,2"}, "prompt_ids"), ({"prompt_ids": []}, "prompt_ids"),
    ({"model": 999999}, "model"),
])
def test_bad_job_input_is_400(client_as, admin_user, gen_project, prompts, tiny_model, published, body, field):
    response = client_as(admin_user).post(f"/api/v1/projects/{gen_project.slug}/generation-jobs/", body,
                                          format="json")
    assert response.status_code == 400, response.content
    assert field in str(response.json())
    assert not GenerationJob.objects.exists() and not published


def test_only_admins_start_jobs_and_unknown_projects_are_404(client_as, admin_user, reviewer, annotator,
                                                             gen_project, prompts, tiny_model, published):
    url = f"/api/v1/projects/{gen_project.slug}/generation-jobs/"
    assert client_as(annotator).post(url, {}, format="json").status_code == 403
    assert client_as(reviewer).post(url, {}, format="json").status_code == 403
    assert client_as(admin_user).post("/api/v1/projects/nope/generation-jobs/", {}, format="json").status_code == 404
    assert not published


def test_broker_down_is_503_and_the_job_is_failed(client_as, admin_user, gen_project, prompts, tiny_model,
                                                  monkeypatch):
    from modelhub.tasks import generation_job_task

    def down(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(generation_job_task, "apply_async", down)
    response = client_as(admin_user).post(f"/api/v1/projects/{gen_project.slug}/generation-jobs/", {}, format="json")
    assert response.status_code == 503
    assert "broker is unreachable" in response.json()["detail"]
    assert GenerationJob.objects.get().status == "failed"


def test_job_reads_cancel_and_list(client_as, admin_user, reviewer, annotator, gen_project, prompts, tiny_model,
                                   published):
    job = services.generation_job_create(user=admin_user, project=gen_project)
    assert client_as(reviewer).get(f"/api/v1/generation-jobs/{job.pk}/").status_code == 200
    assert client_as(annotator).get(f"/api/v1/generation-jobs/{job.pk}/").status_code == 403
    assert client_as(admin_user).get("/api/v1/generation-jobs/99999/").status_code == 404
    listed = results(client_as(reviewer).get(f"/api/v1/projects/{gen_project.slug}/generation-jobs/").json())
    assert [j["id"] for j in listed] == [job.pk]
    assert client_as(reviewer).post(f"/api/v1/generation-jobs/{job.pk}/cancel/").status_code == 403
    response = client_as(admin_user).post(f"/api/v1/generation-jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client_as(admin_user).post(f"/api/v1/generation-jobs/{job.pk}/cancel/").status_code == 409


def test_a_run_job_reports_progress_and_candidates_with_parameters(client_as, admin_user, reviewer, annotator,
                                                                   gen_project, prompts, tiny_model, published):
    api = client_as(admin_user)
    job_id = api.post(f"/api/v1/projects/{gen_project.slug}/generation-jobs/", {"k": 3}, format="json").json()["id"]
    services.generation_job_run(job_id=job_id)
    job = api.get(f"/api/v1/generation-jobs/{job_id}/").json()
    assert job["status"] == "succeeded" and job["error"] == ""
    assert (job["prompts_done"], job["prompts_total"], job["candidates_done"]) == (2, 2, 6)
    assert job["progress"] == 100 and job["tokens_per_second"] > 0

    cands = results(client_as(reviewer).get(f"/api/v1/prompts/{prompts[0].pk}/candidates/").json())
    assert len(cands) == 3
    first = cands[0]
    assert first["model"]["id"] == tiny_model.pk and isinstance(first["text"], str)
    assert first["temperature"] == first["generation"]["temperature"] == 0.7
    assert first["seed"] == first["generation"]["seed"]
    for key in ("top_p", "max_new_tokens", "template", "tokens_generated", "seconds"):
        assert key in first["generation"]
    assert first["safety_flags"] == [] or first["flagged"]
    assert client_as(annotator).get(f"/api/v1/prompts/{prompts[0].pk}/candidates/").status_code == 403
    assert client_as(reviewer).get("/api/v1/prompts/999999/candidates/").status_code == 404


def test_candidates_of_imported_answers_list_too(client_as, reviewer, gen_project):
    prompt = PromptFactory(project=gen_project)
    CandidateFactory(prompt=prompt, text="imported", safety_flags=[{"check": "pii.email", "label": "pii",
                                                                    "detail": "email address: j***@x.org"}])
    cands = results(client_as(reviewer).get(f"/api/v1/prompts/{prompt.pk}/candidates/").json())
    assert cands[0]["text"] == "imported" and cands[0]["flagged"] and cands[0]["temperature"] is None
