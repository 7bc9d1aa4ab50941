"""The training pages: a project's training page (runs and the start form) and a run's page with
its polled progress fragment and cancel button. Admins only; reviewers and annotators get 403."""
from __future__ import annotations

import html as html_module
import json
from html import escape

import pytest
from django.urls import reverse

from modelhub.models import ModelArtifact
from tests.factories import ProjectFactory
from tests.training.helpers import build_marker_project
from training import runs
from training.ml.config import config_defaults
from training.models import TrainingMetric, TrainingRun

pytestmark = pytest.mark.django_db

FAST_REWARD = {"learning_rate": 3e-3, "epochs": 2, "prompts_per_step": 4}


@pytest.fixture
def marker(make_user):
    """(project, snapshot, admin): a small project whose snapshot file exists."""
    return build_marker_project(make_user, prompts=12)


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def _model(name="base-<i>model</i>", **fields) -> ModelArtifact:
    return ModelArtifact.objects.create(name=name, path="/nowhere", **fields)


def _run(project, snapshot, base, **fields) -> TrainingRun:
    values = {"kind": "reward", "config": config_defaults("reward"), "status": TrainingRun.Status.RUNNING,
              "step": 3, "total_steps": 10, "epoch": 0.6, "eta_seconds": 95.0, **fields}
    return TrainingRun.objects.create(project=project, base_model=base, snapshot=snapshot, **values)


def _page_url(project) -> str:
    return reverse("training:training_page", args=[project.slug])


# --- The project's training page -----------------------------------------------------------------

def test_only_admins_see_the_training_page(marker, as_user, make_user):
    project, _, admin = marker
    for role in ("annotator", "reviewer"):
        response = as_user(make_user(role)).get(_page_url(project))
        assert response.status_code == 403 and b"Only admins" in response.content
        assert as_user(make_user(role)).post(_page_url(project), {"kind": "sft"}).status_code == 403
    assert as_user(admin).get(_page_url(project)).status_code == 200
    assert as_user(admin).get("/projects/no-such-project/training/").status_code == 404


def test_the_form_offers_the_right_models_and_snapshots_and_prefills_the_defaults(marker, as_user, tiny_model_dir):
    project, snapshot, admin = marker
    own = _model("sft-own", kind="sft", project=project)
    imported = _model("imported-base", kind="base")
    _model("rm-own", kind="reward", project=project)
    _model("sft-elsewhere", kind="sft", project=ProjectFactory())
    html = as_user(admin).get(_page_url(project) + f"?snapshot={snapshot.sha256}").content.decode()
    select = html[html.index('name="base_model"'):]
    select = select[:select.index("</select>")]
    assert f'value="{own.pk}"' in select and f'value="{imported.pk}"' in select
    assert "rm-own" not in select and "sft-elsewhere" not in select  # not offered as a base
    assert select.index("sft-own") < select.index("imported-base")  # the project's own models first
    assert f'<option value="{snapshot.sha256}" selected>' in html  # ?snapshot= preselects it
    defaults = config_defaults("reward")
    textarea = html[html.index('name="config"'):]
    textarea = textarea[textarea.index(">") + 1:textarea.index("</textarea>")]
    assert json.loads(html_module.unescape(textarea)) == defaults  # as the browser reads it
    # Every field with its default and its comment, for both kinds (one table shown per kind).
    assert "<code>prompts_per_step</code>" in html and "Prompts (each with its K ranked candidates)" in html
    assert 'data-config-help="sft"' in html and 'data-config-help="reward"' in html
    assert "data-defaults=" in html and "&quot;batch_size&quot;: 8" in html  # sft's defaults for the kind switch


def test_the_form_starts_a_run_and_redirects_to_its_page(marker, as_user, tiny_model, published):
    project, snapshot, admin = marker
    response = as_user(admin).post(_page_url(project), {
        "kind": "reward", "base_model": tiny_model.pk, "snapshot": snapshot.sha256,
        "config": json.dumps({"epochs": 2, "learning_rate": 0.003})})
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:run_detail", args=[run.pk])
    assert published == [[run.pk]] and run.created_by == admin
    assert run.config["epochs"] == 2 and run.config["learning_rate"] == 0.003 and run.config["max_length"] == 512
    listing = as_user(admin).get(_page_url(project)).content.decode()
    assert f"Run {run.pk}" in listing and snapshot.short_hash in listing and "Queued" in listing


@pytest.mark.parametrize("change,status,messages", [
    ({"config": '{"epochs": 2,}'}, 400, ["Not valid JSON"]),
    ({"config": "[1, 2]"}, 400, ["must be a JSON object"]),
    ({"config": '{"learnig_rate": 0.001}'}, 400, ["config.learnig_rate: unknown field; reward accepts"]),
    ({"config": '{"epochs": 0}'}, 400, ["config.epochs: from 1 to 100.", '<tr class="is-error">']),
    ({"base_model": "reward"}, 400, ["is a reward model; start from a language model"]),
    ({"base_model": "elsewhere"}, 400, ["trained on another project"]),
    ({"snapshot": "f" * 64}, 400, ["Select a valid choice"]),
    ({"kind": "magic"}, 400, ["Select a valid choice"]),
])
def test_the_form_shows_why_a_run_cannot_start(marker, as_user, tiny_model, published, change, status, messages):
    project, snapshot, admin = marker
    reward = _model("rm", kind="reward", project=project)
    elsewhere = _model("sft-other", kind="sft", project=ProjectFactory())
    data = {"kind": "reward", "base_model": tiny_model.pk, "snapshot": snapshot.sha256, "config": "{}", **change}
    data["base_model"] = {"reward": reward.pk, "elsewhere": elsewhere.pk}.get(data["base_model"], data["base_model"])
    response = as_user(admin).post(_page_url(project), data)
    html = response.content.decode()
    assert response.status_code == status
    for message in messages:
        assert message in html
    assert 'role="alert"' in html and not TrainingRun.objects.exists() and published == []
    # What the admin typed is kept.
    if "config" in change:
        assert escape(change["config"]) in html


def test_every_wrong_setting_is_listed_and_marked_in_the_settings_table(marker, as_user, tiny_model, monkeypatch):
    from studio.errors import ValidationFailed

    def refuse(**kwargs):
        raise ValidationFailed("2 settings are wrong.", {"config": {"epochs": ["from 1 to 100"],
                                                                    "seed": ["an <integer>"]}})

    monkeypatch.setattr(runs, "training_run_create", refuse)
    project, snapshot, admin = marker
    response = as_user(admin).post(_page_url(project), {
        "kind": "reward", "base_model": tiny_model.pk, "snapshot": snapshot.sha256, "config": "{}"})
    html = response.content.decode()
    assert response.status_code == 400 and "2 settings are wrong." in html
    assert "<code>config.epochs</code>: from 1 to 100" in html
    assert "<code>config.seed</code>: an &lt;integer&gt;" in html
    assert html.count('<tr class="is-error">') == 2


def test_a_broker_that_is_down_gives_503_with_the_reason(marker, as_user, tiny_model, monkeypatch):
    from kombu.exceptions import OperationalError

    from training.tasks import training_run_task

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(training_run_task, "apply_async", down)
    project, snapshot, admin = marker
    response = as_user(admin).post(_page_url(project), {
        "kind": "sft", "base_model": tiny_model.pk, "snapshot": snapshot.sha256, "config": "{}"})
    assert response.status_code == 503 and b"broker is unreachable" in response.content
    assert TrainingRun.objects.get().status == TrainingRun.Status.FAILED


def test_links_to_the_training_page(marker, as_user, make_user):
    project, snapshot, admin = marker
    url = _page_url(project)
    assert url in as_user(admin).get(reverse("project_detail", args=[project.slug])).content.decode()
    snapshot_page = as_user(admin).get(reverse("training:snapshot_detail", args=[snapshot.sha256])).content.decode()
    assert f"{url}?snapshot={snapshot.sha256}" in snapshot_page and "Train on this snapshot" in snapshot_page
    reviewer = make_user("reviewer")
    assert url not in as_user(reviewer).get(reverse("project_detail", args=[project.slug])).content.decode()
    snapshot_url = reverse("training:snapshot_detail", args=[snapshot.sha256])
    assert url not in as_user(reviewer).get(snapshot_url).content.decode()


# --- A run's page ----------------------------------------------------------------------------------

def test_a_finished_real_run_shows_its_model_data_metrics_and_log(marker, as_user, tiny_model, published, make_user):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config=FAST_REWARD)
    runs.training_run_execute(run_id=run.pk, worker="test:1")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED
    url = reverse("training:run_detail", args=[run.pk])
    html = as_user(admin).get(url).content.decode()
    assert f'href="/models/{run.model.pk}/"' in html and "Registered model" in html
    assert "validation accuracy" in html and "Succeeded" in html
    assert 'data-plot="validation_accuracy"' in html and 'data-live="false"' in html
    assert reverse("api-training-run-metrics", args=[run.pk]) in html
    assert "Ranked pairs" in html and "Identical pairs" in html  # data_stats
    assert "registered model" in html and "checkpoint saved at step" in html  # the log tail
    assert "hx-trigger" not in html.split('id="run-progress"')[1].split(">")[0]  # a finished run does not poll
    assert "Cancel run" not in html
    # The page reaches every piece of data the plots need through the API it names.
    rows = as_user(admin).get(reverse("api-training-run-metrics", args=[run.pk])).json()
    assert {r["split"] for r in rows} == {"train", "validation"}
    for role in ("annotator", "reviewer"):
        assert as_user(make_user(role)).get(url).status_code == 403
        assert as_user(make_user(role)).get(reverse("training:run_progress", args=[run.pk])).status_code == 403
    assert as_user(admin).get(reverse("training:run_detail", args=[99999])).status_code == 404
    assert as_user(admin).get(reverse("training:run_progress", args=[99999])).status_code == 404
    listing = as_user(admin).get(_page_url(project)).content.decode()
    assert run.model.name in listing and "validation accuracy" in listing


def test_a_running_run_polls_and_escapes_what_it_shows(marker, as_user):
    project, snapshot, admin = marker
    base = _model()
    run = _run(project, snapshot, base, log_tail="step 1/10 <script>alert('log')</script>", device="cpu (fp32)",
               checkpoint_step=2, resumes=1, resumed_from_step=2, metrics={"train/loss": 0.5})
    TrainingMetric.objects.create(run=run, split="train", step=1, values={"loss": 0.7, "lr": 0.0, "grad_norm": 1})
    html = as_user(admin).get(reverse("training:run_detail", args=[run.pk])).content.decode()
    assert "<script>alert('log')</script>" not in html and "&lt;script&gt;alert(&#x27;log&#x27;)&lt;/script&gt;" in html
    assert "<i>model</i>" not in html and "base-&lt;i&gt;model&lt;/i&gt;" in html
    progress_url = reverse("training:run_progress", args=[run.pk])
    assert f'hx-get="{progress_url}?was=live" hx-trigger="every 2s"' in html
    assert 'data-live="true"' in html and "Cancel run" in html
    assert "3 / 10" in html and "1 min 35 s" in html  # step/total and the ETA
    assert "Resumed from step 2 after the worker stopped" in html
    fragment = as_user(admin).get(progress_url, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert fragment.status_code == 200 and "HX-Refresh" not in fragment
    assert 'id="run-metrics" class="card" aria-labelledby="latest-heading" hx-swap-oob="true"' in body
    assert 'id="run-log"' in body and "&lt;script&gt;" in body and "<script>" not in body
    # Once it has finished, the fragment stops polling and the page reloads once.
    run.status = TrainingRun.Status.SUCCEEDED
    run.save(update_fields=["status"])
    done = as_user(admin).get(progress_url + "?was=live", HTTP_HX_REQUEST="true")
    assert done["HX-Refresh"] == "true" and "hx-trigger" not in done.content.decode()


def test_a_failed_run_shows_its_error_prominently(marker, as_user):
    project, snapshot, admin = marker
    run = _run(project, snapshot, _model(), status=TrainingRun.Status.FAILED, checkpoint_step=4,
               error="The run ran out of memory. Lower <tokens_per_microbatch>.")
    html = as_user(admin).get(reverse("training:run_detail", args=[run.pk])).content.decode()
    box = html[html.index('class="run-outcome run-failed"'):]
    assert "The run failed" in box and "Lower &lt;tokens_per_microbatch&gt;." in box[:600]
    assert "newest checkpoint is at step 4" in box[:800]
    assert html.index("run-failed") < html.index('id="run-progress"')  # above everything else


def test_cancel(marker, as_user, make_user):
    project, snapshot, admin = marker
    run = _run(project, snapshot, _model())
    url = reverse("training:run_cancel", args=[run.pk])
    assert as_user(make_user("reviewer")).post(url).status_code == 403
    assert as_user(admin).get(url).status_code == 405
    response = as_user(admin).post(url, follow=True)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert response.redirect_chain[-1][0] == reverse("training:run_detail", args=[run.pk])
    assert f"Training run {run.pk} cancelled" in response.content.decode()
    again = as_user(admin).post(url, follow=True).content.decode()
    assert f"Training run {run.pk} is already cancelled." in again
    assert as_user(admin).post(reverse("training:run_cancel", args=[99999])).status_code == 404
