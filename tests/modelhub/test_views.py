"""Model hub pages: model list, lineage page, the Generate candidates form, the job page and
its htmx progress fragment."""
from __future__ import annotations

import pytest
from django.urls import reverse

from modelhub import services
from modelhub.models import GenerationJob
from modelhub.registry import model_register
from tests.factories import DatasetSnapshotFactory, PromptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def prompts(gen_project):
    return [PromptFactory(project=gen_project) for _ in range(2)]


def test_model_list_and_lineage_page(as_user, reviewer, annotator, tiny_model, tiny_model_dir):
    sft = model_register(name="sft-<b>1</b>", path=tiny_model_dir, kind="sft", parent=tiny_model,
                         snapshot=DatasetSnapshotFactory(sha256="ef" * 32))
    page = as_user(reviewer).get(reverse("modelhub:model_list")).content.decode()
    assert "tiny-llama" in page and "sft-&lt;b&gt;1&lt;/b&gt;" in page and "<b>1</b>" not in page
    page = as_user(reviewer).get(reverse("modelhub:model_detail", args=[sft.pk])).content.decode()
    assert "Lineage" in page and "ef" * 32 in page
    assert page.index("sft-&lt;b&gt;1&lt;/b&gt;") < page.index("tiny-llama")  # chain runs back to the base
    assert as_user(annotator).get(reverse("modelhub:model_list")).status_code == 403
    assert as_user(reviewer).get(reverse("modelhub:model_detail", args=[9999])).status_code == 404


def test_generate_form_starts_a_job_and_redirects_to_its_page(as_user, admin_user, gen_project, prompts, tiny_model,
                                                              published):
    url = reverse("modelhub:generation_create", args=[gen_project.slug])
    page = as_user(admin_user).get(url)
    assert page.status_code == 200 and "Start generation" in page.content.decode()
    response = as_user(admin_user).post(url, {"model": tiny_model.pk, "k": 2, "prompts": "chosen",
                                              "prompt_ids": f"{prompts[0].pk}, {prompts[1].pk}"})
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("modelhub:generation_job_detail",
                                                                           args=[job.pk])
    assert job.k == 2 and job.prompt_ids == [prompts[0].pk, prompts[1].pk] and published


def test_generate_form_shows_service_errors(as_user, admin_user, gen_project, prompts, tiny_model, published):
    url = reverse("modelhub:generation_create", args=[gen_project.slug])
    response = as_user(admin_user).post(url, {"model": tiny_model.pk, "k": 2, "prompts": "chosen",
                                              "prompt_ids": "999999"})
    assert response.status_code == 400 and "not prompts of project" in response.content.decode()
    response = as_user(admin_user).post(url, {"model": tiny_model.pk, "k": 12, "prompts": "missing"})
    assert response.status_code == 400
    assert not GenerationJob.objects.exists()


def test_generate_form_is_for_admins(as_user, reviewer, gen_project):
    assert as_user(reviewer).get(reverse("modelhub:generation_create", args=[gen_project.slug])).status_code == 403


def test_job_page_polls_until_finished_then_shows_candidates(as_user, admin_user, reviewer, gen_project, prompts,
                                                             tiny_model, published):
    job = services.generation_job_create(user=admin_user, project=gen_project, k=2)
    page = as_user(reviewer).get(reverse("modelhub:generation_job_detail", args=[job.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in page and "<progress" in page and "Queued" in page
    assert "Cancel job" not in page  # reviewers watch, admins cancel
    services.generation_job_run(job_id=job.pk)
    fragment = as_user(reviewer).get(reverse("modelhub:generation_job_progress", args=[job.pk]) + "?was=live",
                                     HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200 and fragment["HX-Refresh"] == "true"
    body = fragment.content.decode()
    assert "hx-trigger" not in body and "Succeeded" in body and "4 / 4" in body and "Tokens / s" in body
    page = as_user(admin_user).get(reverse("modelhub:generation_job_detail", args=[job.pk])).content.decode()
    assert "Candidates" in page and "seed" in page and "Cancel job" not in page


def test_job_page_shows_the_error_and_cancel_works(as_user, admin_user, gen_project, prompts, tiny_model, published):
    job = services.generation_job_create(user=admin_user, project=gen_project, k=2)
    page = as_user(admin_user).get(reverse("modelhub:generation_job_detail", args=[job.pk])).content.decode()
    assert "Cancel job" in page
    response = as_user(admin_user).post(reverse("modelhub:generation_job_cancel", args=[job.pk]))
    assert response.status_code == 302
    assert GenerationJob.objects.get(pk=job.pk).status == "cancelled"
    GenerationJob.objects.filter(pk=job.pk).update(error="Model x is missing: <script>alert(1)</script>")
    page = as_user(admin_user).get(reverse("modelhub:generation_job_detail", args=[job.pk])).content.decode()
    assert "Model x is missing: &lt;script&gt;" in page and "<script>alert(1)" not in page
