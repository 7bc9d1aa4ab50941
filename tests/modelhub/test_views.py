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


# --- The model page: evaluations, promotion, lineage ------------------------------------------------

@pytest.fixture
def evaluations_published(monkeypatch, settings, tmp_path):
    """Evaluation tasks recorded instead of sent to a broker; snapshots written to this test's
    own data directory."""
    from training.tasks import model_evaluation_task

    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    sent = []
    monkeypatch.setattr(model_evaluation_task, "apply_async", lambda args=None, **kw: sent.append(args))
    return sent


@pytest.fixture
def marker(make_user, evaluations_published):
    from tests.training.helpers import build_marker_project

    return build_marker_project(make_user, prompts=6)


def _artifact(name, **fields):
    from modelhub.models import ModelArtifact

    return ModelArtifact.objects.create(name=name, path="/nowhere", **fields)


def test_reward_model_page_lists_its_evaluations_for_reviewers(as_user, reviewer, annotator, marker):
    from training.models import ModelEvaluation

    project, snapshot, _ = marker
    rm = _artifact("rm-<b>1</b>", kind="reward", project=project, snapshot=snapshot)
    ModelEvaluation.objects.create(
        model=rm, snapshot=snapshot, split="all", status="succeeded", accuracy=0.8125,
        results={"accuracy": 0.8125, "accuracy_ci": [0.6, 0.93], "pairs": 16, "identical_pairs": 2,
                 "overlaps_training": True, "by_source": {"<i>fgrlhf</i>": {"accuracy": 0.75, "accuracy_ci": [0.4, 0.9],
                                                                            "pairs": 8}}})
    ModelEvaluation.objects.create(model=rm, snapshot=snapshot, split="validation", status="failed",
                                   error="Reward model rm could not be loaded: <missing>")
    url = reverse("modelhub:model_detail", args=[rm.pk])
    html = as_user(reviewer).get(url).content.decode()
    assert "Evaluations" in html and "0.813" in html and "[0.600, 0.930]" in html
    assert ">16<" in html and "2 identical" in html  # pairs, identical pairs
    assert "&lt;i&gt;fgrlhf&lt;/i&gt;" in html and "0.750" in html and "8 pairs" in html
    assert "trained on these labels" in html  # overlaps_training warns
    assert "could not be loaded: &lt;missing&gt;" in html and "<missing>" not in html
    assert "rm-&lt;b&gt;1&lt;/b&gt;" in html and "<b>1</b>" not in html
    assert "Evaluate" not in html.split("Evaluations", 1)[1].split("Lineage")[0].replace("Evaluations", "")  # no form
    assert 'hx-trigger' not in html  # nothing running: no polling
    assert as_user(annotator).get(url).status_code == 403


def test_admin_evaluates_a_reward_model_from_its_page(as_user, admin_user, reviewer, marker, evaluations_published):
    from training.models import ModelEvaluation

    project, snapshot, _ = marker
    rm = _artifact("rm", kind="reward", project=project)
    url = reverse("modelhub:model_detail", args=[rm.pk])
    html = as_user(admin_user).get(url).content.decode()
    assert reverse("modelhub:model_evaluate", args=[rm.pk]) in html and snapshot.short_hash in html
    response = as_user(admin_user).post(reverse("modelhub:model_evaluate", args=[rm.pk]),
                                        {"snapshot": snapshot.sha256, "split": "train"})
    evaluation = ModelEvaluation.objects.get()
    assert response.status_code == 302 and response["Location"] == url + "#evaluations"
    assert evaluations_published == [[evaluation.pk]] and evaluation.split == "train"
    page = as_user(admin_user).get(url).content.decode()
    fragment_url = reverse("modelhub:model_evaluations", args=[rm.pk])
    assert f'hx-get="{fragment_url}" hx-trigger="every 2s"' in page and "Queued" in page
    ModelEvaluation.objects.filter(pk=evaluation.pk).update(status="succeeded", accuracy=0.9,
                                                            results={"accuracy": 0.9, "pairs": 10})
    fragment = as_user(reviewer).get(fragment_url).content.decode()
    assert "0.900" in fragment and "hx-trigger" not in fragment  # finished: the panel stops polling
    assert as_user(reviewer).post(reverse("modelhub:model_evaluate", args=[rm.pk]),
                                  {"snapshot": snapshot.sha256, "split": "train"}).status_code == 403
    bad = as_user(admin_user).post(reverse("modelhub:model_evaluate", args=[rm.pk]),
                                   {"snapshot": "f" * 64, "split": "train"})
    assert bad.status_code == 400 and ModelEvaluation.objects.count() == 1


def test_only_reward_models_are_evaluated(as_user, admin_user, marker):
    project, snapshot, _ = marker
    sft = _artifact("sft", kind="sft", project=project)
    html = as_user(admin_user).get(reverse("modelhub:model_detail", args=[sft.pk])).content.decode()
    assert "Evaluations" not in html
    response = as_user(admin_user).post(reverse("modelhub:model_evaluate", args=[sft.pk]),
                                        {"snapshot": snapshot.sha256, "split": "validation"})
    assert response.status_code == 400 and "not a reward model" in response.content.decode()


def test_admin_promotes_a_model_to_be_its_projects_generator(as_user, admin_user, reviewer, tiny_model, project):
    from modelhub.models import ProjectGenerator
    from modelhub.selectors import project_generator_model

    sft = _artifact("sft-<em>2</em>", kind="sft", project=project, parent=tiny_model)
    url = reverse("modelhub:model_detail", args=[sft.pk])
    html = as_user(admin_user).get(url).content.decode()
    assert f"Promote to generator of {project.name}" in html and "tiny-llama" in html  # the current generator
    assert as_user(reviewer).post(reverse("modelhub:model_promote", args=[sft.pk]),
                                  {"project": project.slug}).status_code == 403
    assert "Promote to generator" not in as_user(reviewer).get(url).content.decode()
    response = as_user(admin_user).post(reverse("modelhub:model_promote", args=[sft.pk]), {"project": project.slug})
    assert response.status_code == 302 and project_generator_model(project=project) == sft
    html = as_user(admin_user).get(url).content.decode()
    assert "Current generator" in html and "Promote to generator" not in html
    assert ProjectGenerator.objects.get(project=project).set_by == admin_user
    # An imported model may serve any project: one button per project.
    html = as_user(admin_user).get(reverse("modelhub:model_detail", args=[tiny_model.pk])).content.decode()
    assert f"Promote to generator of {project.name}" in html and "sft-&lt;em&gt;2&lt;/em&gt;" in html
    # A reward model writes nothing: no button, and the service refuses it.
    rm = _artifact("rm", kind="reward", project=project)
    assert "Promote to generator" not in as_user(admin_user).get(
        reverse("modelhub:model_detail", args=[rm.pk])).content.decode()
    refused = as_user(admin_user).post(reverse("modelhub:model_promote", args=[rm.pk]), {"project": project.slug})
    assert refused.status_code == 400 and "cannot write them" in refused.content.decode()
    assert project_generator_model(project=project) == sft
    assert as_user(admin_user).post(reverse("modelhub:model_promote", args=[sft.pk]),
                                    {"project": "nope"}).status_code == 404


def test_model_page_shows_lineage_fields_and_the_run_that_made_it(as_user, admin_user, reviewer, marker, tiny_model):
    from training.models import TrainingRun

    project, snapshot, _ = marker
    sft = _artifact("sft-ref", kind="sft", project=project)
    rm = _artifact("rm-ref", kind="reward", project=project)
    policy = _artifact("policy", kind="policy", project=project, snapshot=snapshot, parent=tiny_model,
                       reference_model=sft, reward_model=rm, checksum="ab" * 32,
                       library_versions={"torch": "2.13.0", "transformers": "<4.99>"})
    run = TrainingRun.objects.create(kind="sft", project=project, base_model=tiny_model, snapshot=snapshot,
                                     status="succeeded", model=policy)
    url = reverse("modelhub:model_detail", args=[policy.pk])
    html = as_user(admin_user).get(url).content.decode()
    for expected in (project.name, snapshot.sha256, "sft-ref", "rm-ref", "ab" * 32, "torch 2.13.0",
                     "transformers &lt;4.99&gt;", reverse("training:run_detail", args=[run.pk])):
        assert expected in html
    page = as_user(reviewer).get(url).content.decode()
    assert f"training run {run.pk}" in page and reverse("training:run_detail", args=[run.pk]) not in page
