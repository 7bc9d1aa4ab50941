"""The training API as a client uses it: admins start, follow and cancel runs; reviewers read a
reward model's evaluations and score answers; annotators get 403 everywhere."""
from __future__ import annotations

import pytest

from training import runs
from training.models import ModelEvaluation, TrainingRun
from tests.training.helpers import build_marker_project

pytestmark = pytest.mark.django_db

FAST = {"learning_rate": 3e-3, "epochs": 2, "prompts_per_step": 4}


@pytest.fixture
def marker(make_user):
    return build_marker_project(make_user, prompts=30)


@pytest.fixture
def published(monkeypatch):
    from training.tasks import model_evaluation_task, training_run_task

    sent = []
    for task in (training_run_task, model_evaluation_task):
        monkeypatch.setattr(task, "apply_async", lambda args=None, _name=task.name, **kw: sent.append((_name, args)))
    return sent


@pytest.fixture
def reward_model(marker, tiny_model, published):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot, config=FAST)
    return runs.training_run_execute(run_id=run.pk, worker="test:1").model


def test_admin_starts_a_run_and_follows_it(client_as, marker, tiny_model, published):
    project, snapshot, admin = marker
    api = client_as(admin)
    response = api.post("/api/v1/training-runs/", {"kind": "reward", "base_model": tiny_model.pk,
                                                   "snapshot": snapshot.sha256, "config": FAST}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["kind"] == "reward" and body["snapshot"] == snapshot.sha256
    assert body["config"]["prompts_per_step"] == 4 and body["config"]["max_length"] == 512
    assert published == [("training.tasks.training_run_task", [body["id"]])]

    runs.training_run_execute(run_id=body["id"], worker="test:1")  # what the worker does
    done = api.get(f"/api/v1/training-runs/{body['id']}/").json()
    assert done["status"] == "succeeded" and done["progress"] == 100 and done["step"] == done["total_steps"]
    assert done["metrics"]["validation/accuracy"] >= 0.8 and done["model"]
    model = api.get(f"/api/v1/models/{done['model']}/").json()
    assert model["kind"] == "reward" and model["snapshot"] == snapshot.sha256 and model["parent"] == tiny_model.pk
    assert model["training_run"] == body["id"] and model["project"] == project.slug and len(model["checksum"]) == 64
    series = api.get(f"/api/v1/training-runs/{body['id']}/metrics/").json()
    train_steps = [m["step"] for m in series if m["split"] == "train"]
    assert train_steps == list(range(1, done["total_steps"] + 1))
    assert [m["step"] for m in api.get(f"/api/v1/training-runs/{body['id']}/metrics/?after=5").json()][0] == 6
    assert api.get(f"/api/v1/training-runs/{body['id']}/metrics/?after=x").status_code == 400
    assert [r["id"] for r in api.get("/api/v1/training-runs/").json()["results"]] == [body["id"]]


def test_bad_requests_get_400_with_the_reason(client_as, marker, tiny_model, published):
    project, snapshot, admin = marker
    api = client_as(admin)
    bad = api.post("/api/v1/training-runs/", {"kind": "reward", "base_model": tiny_model.pk,
                                              "snapshot": snapshot.sha256, "config": {"epochs": -1}}, format="json")
    assert bad.status_code == 400 and "epochs" in bad.json()["detail"]
    missing = api.post("/api/v1/training-runs/", {"kind": "sft"}, format="json")
    assert missing.status_code == 400 and "base_model" in missing.json()
    assert not TrainingRun.objects.exists() and published == []


def test_cancel(client_as, marker, tiny_model, published):
    project, snapshot, admin = marker
    api = client_as(admin)
    run = api.post("/api/v1/training-runs/", {"kind": "sft", "base_model": tiny_model.pk,
                                              "snapshot": snapshot.sha256}, format="json").json()
    assert api.post(f"/api/v1/training-runs/{run['id']}/cancel/").json()["status"] == "cancelled"
    assert api.post(f"/api/v1/training-runs/{run['id']}/cancel/").status_code == 409
    assert runs.training_run_execute(run_id=run["id"], worker="test:1").status == "cancelled"  # never runs


def test_the_broker_down_is_a_503_and_the_run_is_marked_failed(client_as, marker, tiny_model, monkeypatch):
    from kombu.exceptions import OperationalError

    from training.tasks import training_run_task

    def down(*args, **kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(training_run_task, "apply_async", down)
    project, snapshot, admin = marker
    response = client_as(admin).post("/api/v1/training-runs/", {"kind": "sft", "base_model": tiny_model.pk,
                                                                "snapshot": snapshot.sha256}, format="json")
    assert response.status_code == 503 and "broker is unreachable" in response.json()["detail"]
    assert TrainingRun.objects.get().status == "failed"


def test_training_runs_are_admin_only(client_as, marker, tiny_model, make_user, published):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot)
    for role in ("annotator", "reviewer"):
        api = client_as(make_user(role))
        assert api.get("/api/v1/training-runs/").status_code == 403
        assert api.get(f"/api/v1/training-runs/{run.pk}/").status_code == 403
        assert api.get(f"/api/v1/training-runs/{run.pk}/metrics/").status_code == 403
        assert api.post(f"/api/v1/training-runs/{run.pk}/cancel/").status_code == 403
        assert api.post("/api/v1/training-runs/", {"kind": "sft", "base_model": tiny_model.pk,
                                                   "snapshot": snapshot.sha256}, format="json").status_code == 403
    assert client_as(admin).get("/api/v1/training-runs/999999/").status_code == 404


def test_evaluate_a_reward_model_on_a_snapshot(client_as, marker, reward_model, published, reviewer):
    project, snapshot, admin = marker
    api = client_as(admin)
    url = f"/api/v1/models/{reward_model.pk}/evaluations/"
    response = api.post(url, {"snapshot": snapshot.sha256, "split": "all"}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    evaluation_id = response.json()["id"]
    from training.evaluations import model_evaluation_execute

    model_evaluation_execute(evaluation_id=evaluation_id, worker="test:1")
    body = client_as(reviewer).get(f"{url}{evaluation_id}/").json()
    assert body["status"] == "succeeded" and body["split"] == "all"
    assert 0.8 <= body["accuracy"] <= 1 and body["pairs"] == 60  # 30 prompts x 2 untied pairs
    low, high = body["accuracy_ci"]
    assert low <= body["accuracy"] <= high
    assert body["identical_pairs"] == 0 and body["by_source"]["written"]["pairs"] == 60
    assert body["results"]["overlaps_training"] is True  # "all" includes what it was trained on
    listed = client_as(reviewer).get(url).json()["results"]
    assert {e["id"] for e in listed} == {evaluation_id, ModelEvaluation.objects.get(split="validation").pk}
    api = client_as(admin)  # one client: signing in as someone else replaces the reviewer
    assert api.post(url, {"snapshot": "f" * 64}, format="json").status_code == 400
    assert api.post(url, {"snapshot": snapshot.sha256, "split": "test"}, format="json").status_code == 400
    assert client_as(reviewer).post(url, {"snapshot": snapshot.sha256}, format="json").status_code == 403


def test_only_reward_models_are_evaluated_or_score(client_as, marker, tiny_model, published):
    project, snapshot, admin = marker
    api = client_as(admin)
    response = api.post(f"/api/v1/models/{tiny_model.pk}/evaluations/", {"snapshot": snapshot.sha256}, format="json")
    assert response.status_code == 400 and "not a reward model" in response.json()["detail"]
    response = api.post(f"/api/v1/models/{tiny_model.pk}/score/", {
        "messages": [{"role": "user", "content": "Hi"}], "candidates": ["a"]}, format="json")
    assert response.status_code == 400


def test_score_answers_with_a_reward_model(client_as, reward_model, reviewer, annotator):
    from tests.training.helpers import MARKER

    url = f"/api/v1/models/{reward_model.pk}/score/"
    body = {"messages": [{"role": "user", "content": "the capital of France"}],
            "candidates": [f"Paris is the capital {MARKER}", "Rome is the capital", "<script>alert(1)</script>"]}
    response = client_as(reviewer).post(url, body, format="json")
    assert response.status_code == 200, response.content
    scores = response.json()["scores"]
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert scores[0] > scores[1]  # the rule it learnt
    # The same answer scores the same alone or beside others (each is scored on its own sequence).
    alone = client_as(reviewer).post(url, {**body, "candidates": body["candidates"][1:2]}, format="json").json()
    assert alone["scores"][0] == pytest.approx(scores[1], abs=1e-3)
    assert client_as(annotator).post(url, body, format="json").status_code == 403
    for bad in ({**body, "candidates": []}, {**body, "candidates": ["x"] * 17},
                {**body, "messages": [{"role": "assistant", "content": "no question"}]},
                {**body, "messages": "hello"}):
        assert client_as(reviewer).post(url, bad, format="json").status_code == 400, bad


def test_policy_runs_take_their_reward_model_through_the_api(client_as, marker, tiny_model, reward_model, published):
    project, snapshot, admin = marker
    api = client_as(admin)
    published.clear()
    body = {"base_model": tiny_model.pk, "snapshot": snapshot.sha256, "config": {"max_steps": 2}}
    for kind in ("ppo", "best_of_n"):
        missing = api.post("/api/v1/training-runs/", {**body, "kind": kind}, format="json")
        assert missing.status_code == 400 and "reward_model" in missing.json()["errors"]
        queued = api.post("/api/v1/training-runs/", {**body, "kind": kind, "reward_model": reward_model.pk},
                          format="json")
        assert queued.status_code == 202, queued.content
        assert queued.json()["reward_model"] == reward_model.pk and queued.json()["kind"] == kind
    wrong = api.post("/api/v1/training-runs/", {**body, "kind": "dpo", "reward_model": tiny_model.pk}, format="json")
    assert wrong.status_code == 400 and "not a reward model" in wrong.json()["detail"]
    assert len(published) == 2


def test_a_soft_prompt_is_registered_as_an_adapter_and_only_soft_prompt_runs_go_on_from_it(
        client_as, marker, tiny_model, published):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot,
                                   config={"soft_prompt": True, "soft_prompt_tokens": 4, "max_steps": 2})
    soft = runs.training_run_execute(run_id=run.pk, worker="test:1").model
    api = client_as(admin)
    model = api.get(f"/api/v1/models/{soft.pk}/").json()
    assert model["format"] == "peft" and model["parent"] == tiny_model.pk
    assert model["config"]["training"]["soft_prompt"] is True
    published.clear()
    body = {"kind": "sft", "base_model": soft.pk, "snapshot": snapshot.sha256}
    for config, kind in (({"max_steps": 2}, "sft"), ({"lora": True}, "dpo"), ({"soft_prompt": True}, "reward")):
        refused = api.post("/api/v1/training-runs/", {**body, "kind": kind, "config": config}, format="json")
        assert refused.status_code == 400, refused.content
        assert "soft prompt, which cannot be merged" in refused.json()["detail"]
        assert "base_model" in refused.json()["errors"]
    further = api.post("/api/v1/training-runs/", {**body, "config": {"soft_prompt": True, "max_steps": 2}},
                       format="json")
    assert further.status_code == 202, further.content
    both = api.post("/api/v1/training-runs/", {**body, "base_model": tiny_model.pk,
                                               "config": {"soft_prompt": True, "lora": True}}, format="json")
    assert both.status_code == 400 and "soft_prompt" in both.json()["detail"]
    assert len(published) == 1
