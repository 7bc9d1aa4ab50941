"""`manage.py training_run` and `manage.py model_evaluate` do from a shell what the API does."""
from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from training.models import ModelEvaluation, TrainingRun
from tests.training.helpers import build_marker_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def marker(make_user):
    return build_marker_project(make_user, prompts=30)


def test_training_run_in_the_foreground_then_evaluate(marker, tiny_model, capsys):
    project, snapshot, admin = marker
    call_command("training_run", "--kind", "reward", "--base", tiny_model.name, "--snapshot", snapshot.sha256[:12],
                 "--config", json.dumps({"learning_rate": 3e-3, "epochs": 2, "prompts_per_step": 4}), "--foreground")
    out, err = capsys.readouterr()
    run = TrainingRun.objects.get()
    assert out.strip() == str(run.pk) and run.status == "succeeded"
    assert f"model {run.model.name}" in err and "validation/accuracy" in err

    call_command("model_evaluate", str(run.model.pk), "--snapshot", snapshot.sha256, "--split", "all")
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["pairs"] == 60 and 0 <= printed["accuracy"] <= 1 and len(printed["accuracy_ci"]) == 2
    assert "identical_pairs" in printed and "written" in printed["by_source"]
    assert "95% CI" in err and "pairs identical after truncation" in err
    assert ModelEvaluation.objects.filter(split="all", status="succeeded").count() == 1


def test_training_run_queues_for_a_worker(marker, tiny_model, capsys, monkeypatch):
    from training.tasks import training_run_task

    sent = []
    monkeypatch.setattr(training_run_task, "apply_async", lambda args=None, **kw: sent.append(args))
    project, snapshot, admin = marker
    call_command("training_run", "--kind", "sft", "--base", str(tiny_model.pk), "--snapshot", snapshot.sha256)
    run = TrainingRun.objects.get()
    assert capsys.readouterr().out.strip() == str(run.pk) and sent == [[run.pk]] and run.status == "queued"


@pytest.mark.parametrize("args,message", [
    (["--base", "nope"], "No model 'nope'"),
    (["--config", "{bad json"], "not JSON"),
    (["--config", '{"epochs": 0}'], "config.epochs"),
    (["--snapshot", "0000000000"], "No snapshot"),
])
def test_training_run_refuses_bad_arguments(marker, tiny_model, args, message):
    project, snapshot, admin = marker
    base = {"--base": tiny_model.name, "--snapshot": snapshot.sha256, "--config": "{}"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["training_run", "--kind", "sft", "--foreground"] + [x for kv in base.items() for x in kv]
    with pytest.raises(CommandError, match=message):
        call_command(*argv)


def test_model_evaluate_refuses_a_language_model(marker, tiny_model):
    project, snapshot, admin = marker
    with pytest.raises(CommandError, match="not a reward model"):
        call_command("model_evaluate", tiny_model.name, "--snapshot", snapshot.sha256)
