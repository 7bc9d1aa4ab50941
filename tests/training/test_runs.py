"""Training runs as services: create validates and queues; a worker's execute trains, records
metrics over steps, registers the model with its lineage and, for a reward model, its
validation evaluation; failures say what to do."""
from __future__ import annotations

import pytest

from modelhub.models import ModelArtifact
from modelhub.selectors import project_generator_model
from studio.errors import PermissionDeniedError, ValidationFailed
from training import runs
from training.models import ModelEvaluation, TrainingMetric, TrainingRun
from tests.training.helpers import build_marker_project

pytestmark = pytest.mark.django_db

FAST_REWARD = {"learning_rate": 3e-3, "epochs": 3, "prompts_per_step": 4, "checkpoint_every": 5}


def test_create_validates_fills_the_defaults_and_queues(marker, tiny_model, published):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model.pk, snapshot=snapshot.sha256,
                                   config={"epochs": 2})
    assert published == [[run.pk]] and run.status == TrainingRun.Status.QUEUED
    assert run.project == project and run.config["epochs"] == 2
    assert run.config["max_length"] == 512 and run.config["labels"] == "consensus"  # every default stored


@pytest.mark.parametrize("body,message", [
    ({"kind": "best_of_n"}, "best_of_n runs learn from a reward model"),
    ({"kind": "ppo"}, "ppo runs learn from a reward model"),
    ({"kind": "magic"}, "Unknown kind"),
    ({"config": {"epochs": 0}}, "config.epochs: from 1 to 100"),
    ({"config": {"learnig_rate": 1e-5}}, "config.learnig_rate: unknown field"),
    ({"config": {"epochs": "3"}}, "expected int"),
    ({"config": [1]}, "JSON object"),
    ({"snapshot": "f" * 64}, "No snapshot"),
    ({"base_model": 99999}, "No model"),
])
def test_create_refuses_bad_input_with_a_clear_message(marker, tiny_model, published, body, message):
    project, snapshot, admin = marker
    args = {"kind": "reward", "base_model": tiny_model.pk, "snapshot": snapshot.sha256, "config": {}, **body}
    with pytest.raises(ValidationFailed, match=message):
        runs.training_run_create(user=admin, **args)
    assert published == [] and not TrainingRun.objects.exists()


def test_only_admins_start_runs(marker, tiny_model, make_user, published):
    project, snapshot, admin = marker
    for role in ("annotator", "reviewer"):
        with pytest.raises(PermissionDeniedError):
            runs.training_run_create(user=make_user(role), kind="sft", base_model=tiny_model, snapshot=snapshot)


def test_a_reward_model_cannot_be_a_base(marker, tiny_model, tiny_model_dir, published):
    from modelhub.registry import model_register

    project, snapshot, admin = marker
    rm = model_register(name="rm", path=tiny_model_dir, kind="reward", parent=tiny_model, project=project)
    with pytest.raises(ValidationFailed, match="is a reward model"):
        runs.training_run_create(user=admin, kind="sft", base_model=rm, snapshot=snapshot)


def test_a_reward_run_trains_registers_and_evaluates(marker, tiny_model, published, settings):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config=FAST_REWARD)
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.step == run.total_steps > 0 and run.progress_percent == 100 and run.eta_seconds == 0
    train_rows = TrainingMetric.objects.filter(run=run, split="train")
    assert train_rows.count() == run.total_steps  # one row a step, for the plots
    assert TrainingMetric.objects.filter(run=run, split="validation").count() == 3  # one per epoch
    assert run.metrics["validation/accuracy"] >= 0.9 and "train/loss" in run.metrics
    assert run.data_stats["train"]["examples"] + run.data_stats["validation"]["examples"] == 40
    assert "registered model" in run.log_tail and "validation at step" in run.log_tail

    model = run.model
    assert model.kind == ModelArtifact.Kind.REWARD and model.parent == tiny_model
    assert model.project == project and model.snapshot == snapshot  # lineage
    assert len(model.checksum) == 64 and model.library_versions["torch"]
    assert model.config["training"]["learning_rate"] == FAST_REWARD["learning_rate"]
    assert model.config["reward_offset"]["answers"] > 0
    assert project_generator_model(project=project) == tiny_model  # trained, not promoted
    evaluation = ModelEvaluation.objects.get(model=model)
    assert evaluation.split == "validation" and evaluation.accuracy == run.metrics["validation/accuracy"]
    assert evaluation.results["pairs"] > 0 and "identical_pairs" in evaluation.results
    assert not (run.run_dir / "checkpoints").exists()  # a finished run needs none


def test_an_sft_run_lowers_validation_loss_and_registers_an_sft_model(marker, tiny_model, published):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot,
                                   config={"learning_rate": 3e-3, "batch_size": 4, "epochs": 2, "eval_every": 2})
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    losses = [m.values["validation/loss"] for m in TrainingMetric.objects.filter(run=run, split="validation")]
    assert losses[-1] < losses[0]
    assert run.model.kind == ModelArtifact.Kind.SFT and run.model.snapshot == snapshot


def test_a_dpo_run_learns_the_rankings_and_registers_a_dpo_policy(marker, tiny_model, published):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="dpo", base_model=tiny_model, snapshot=snapshot,
                                   config={"learning_rate": 1e-3, "beta": 0.5, "epochs": 3, "prompts_per_step": 4})
    assert run.config["beta"] == 0.5 and run.config["loss"] == "sigmoid"  # every default stored
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.metrics["validation/accuracy"] >= 0.9 and run.metrics["validation/reward_margin"] > 0
    train_rows = list(TrainingMetric.objects.filter(run=run, split="train"))
    assert len(train_rows) == run.total_steps and "reward_margin" in train_rows[-1].values
    model = run.model
    assert model.kind == ModelArtifact.Kind.DPO and model.is_generative and model.parent == tiny_model
    assert model.snapshot == snapshot and model.project == project
    assert model.config["training"]["beta"] == 0.5
    assert project_generator_model(project=project) == tiny_model  # trained, not promoted
    assert not ModelEvaluation.objects.filter(model=model).exists()  # a policy is not a reward model
    assert not (run.run_dir / "checkpoints").exists()  # nor its cached reference


def test_a_dpo_run_judged_by_a_reward_model_reports_its_win_rate_on_its_page(marker, tiny_model, published, client):
    project, snapshot, admin = marker
    rm_run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                      config=FAST_REWARD)
    judge = runs.training_run_execute(run_id=rm_run.pk, worker="test:1").model
    run = runs.training_run_create(user=admin, kind="dpo", base_model=tiny_model, snapshot=snapshot,
                                   reward_model=judge.pk, config={"learning_rate": 3e-3, "beta": 0.5, "epochs": 3,
                                                                  "prompts_per_step": 4, "max_prompts": 24,
                                                                  "win_rate_max_new_tokens": 16})
    assert run.reward_model == judge
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    # 24 of the training split's 34 ranked prompts (a seeded sample), 3 epochs of 6 steps of 4
    train = run.data_stats["train"]
    assert (train["examples_available"], train["examples"], run.total_steps) == (34, 24, 3 * 6)
    result = run.metrics["win_rate"]
    assert result["prompts"] == run.data_stats["validation"]["prompts"] > 0  # every held-out prompt
    assert run.metrics["win_rate/win_rate"] == result["win_rate"] and len(result["win_rate_ci"]) == 2
    assert run.model.metrics["win_rate/kl"] == result["kl"]  # registered with the model
    assert "win rate over the starting model, judged by" in run.log_tail
    # the phases without optimizer steps say what they do, in order
    log = run.log_tail
    assert 0 < log.index("the reference's log-probabilities of the answers of 24 training") < log.index("step 1/18")
    assert log.index("step 18/18") < log.index("win rate: the policy and the model it started from answer")
    client.force_login(admin)
    html = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert f"Win rate over {tiny_model.name}" in html and "bootstrap over prompts" in html
    assert "Where the policy gained and lost most" in html and "Examples before max_prompts" in html


def test_a_ppo_run_learns_from_the_reward_model_and_registers_a_policy(marker, tiny_model, published, client):
    project, snapshot, admin = marker
    rm_run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                      config=FAST_REWARD)
    judge = runs.training_run_execute(run_id=rm_run.pk, worker="test:1").model
    run = runs.training_run_create(user=admin, kind="ppo", base_model=tiny_model, snapshot=snapshot,
                                   reward_model=judge.pk,
                                   config={"learning_rate": 3e-4, "rollout_prompts": 8, "minibatch_prompts": 4,
                                           "max_prompts": 24, "max_new_tokens": 12, "win_rate_max_new_tokens": 12,
                                           "kl_bound": 100.0})
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    # 24 of the training split's 34 prompts: 3 rollouts of 8, each trained on twice in mini-batches of 4
    assert run.data_stats["train"]["prompts"] == 24 and run.total_steps == 3 * 2 * 2
    train_rows = list(TrainingMetric.objects.filter(run=run, split="train").order_by("step"))
    assert len(train_rows) == run.total_steps > 0
    first = train_rows[0].values
    assert {"reward", "kl", "kl_coef", "entropy", "response_length", "samples"} <= first.keys()
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout is the starting model's own
    assert "validation/reward" in run.metrics and "win_rate/win_rate" in run.metrics
    model = run.model
    assert model.kind == ModelArtifact.Kind.POLICY and model.is_generative and model.parent == tiny_model
    assert model.config["training"]["kl_coef"] == 0.05
    from safetensors.torch import load_file

    from modelhub.registry import model_resolve_path

    saved = load_file(next(model_resolve_path(model=model).glob("*.safetensors")))
    assert not any(k.startswith("value_head") for k in saved)  # saved as a plain causal LM
    client.force_login(admin)
    html = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert 'data-plot="kl"' in html and 'data-plot="reward"' in html and "Answers of the latest rollout" in html
    assert "Ranked pairs" not in html  # the data table shows only what a PPO run has
    assert f"Win rate over {tiny_model.name}" in html


def test_a_best_of_n_run_fine_tunes_on_the_kept_answers_and_lists_them(marker, tiny_model, published, client):
    project, snapshot, admin = marker
    rm_run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                      config=FAST_REWARD)
    judge = runs.training_run_execute(run_id=rm_run.pk, worker="test:1").model
    run = runs.training_run_create(user=admin, kind="best_of_n", base_model=tiny_model, snapshot=snapshot,
                                   reward_model=judge.pk, config={"n": 3, "max_new_tokens": 8, "max_prompts": 10,
                                                                  "win_rate_max_new_tokens": 8})
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    kept = run.data_stats["best_of_n"]
    assert kept["prompts"] == 10 and len(kept["kept"]) == 10 and run.data_stats["train"]["examples"] == 10
    assert "sampling 3 answers to each of 10 training prompts" in run.log_tail
    assert run.model.kind == ModelArtifact.Kind.BEST_OF_N and run.model.parent == tiny_model
    assert "win_rate/win_rate" in run.metrics
    client.force_login(admin)
    html = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert "Kept answers" in html and "answered 10 training prompts 3 times each" in html


def test_a_validation_with_nothing_to_validate_on_says_so_in_the_log(marker, tiny_model):
    """A best-of-n run on a snapshot without held-out demonstrations validates on nothing: its
    log said "validation at step 32: " and stopped there."""
    from collections import deque

    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot, config={})
    hooks = runs._RunHooks(run, deque())
    hooks.evaluate({"step": 32})
    hooks.evaluate({"step": 33, "validation/loss": 1.25})
    first, second = hooks.lines
    assert first.endswith("validation at step 32: nothing to validate on (the snapshot's validation split holds "
                          "no examples of this kind)")
    assert second.endswith("validation at step 33: loss 1.25")


def test_a_dpo_run_refuses_a_wrong_judge_and_bad_settings(marker, tiny_model, published):
    from modelhub.registry import model_register
    from tests.factories import ProjectFactory

    project, snapshot, admin = marker
    with pytest.raises(ValidationFailed, match="label_smoothing: only with the sigmoid loss"):
        runs.training_run_create(user=admin, kind="dpo", base_model=tiny_model, snapshot=snapshot,
                                 config={"loss": "ipo", "label_smoothing": 0.1})
    with pytest.raises(ValidationFailed, match="is not a reward model"):
        runs.training_run_create(user=admin, kind="dpo", base_model=tiny_model, snapshot=snapshot,
                                 reward_model=tiny_model.pk)
    elsewhere = model_register(name="rm-elsewhere", path=tiny_model.path, kind="reward", project=ProjectFactory())
    with pytest.raises(ValidationFailed, match="another project's labels"):
        runs.training_run_create(user=admin, kind="dpo", base_model=tiny_model, snapshot=snapshot,
                                 reward_model=elsewhere.pk)
    with pytest.raises(ValidationFailed, match="sft runs take no reward_model"):
        runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot,
                                 reward_model=elsewhere.pk)
    assert not TrainingRun.objects.exists()


def test_a_snapshot_without_demonstrations_fails_sft_with_a_clear_message(make_user, tiny_model, published):
    from labeling.models import Demonstration
    from training.snapshots import snapshot_create

    project, _, admin = build_marker_project(make_user, prompts=8)
    Demonstration.objects.filter(prompt__project=project).delete()
    snapshot, _ = snapshot_create(user=admin, project=project)
    run = runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot)
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.FAILED
    assert "no demonstrations" in run.error and "make a new snapshot" in run.error
    assert run.model is None


def test_a_snapshot_without_rankings_fails_reward_and_dpo_runs_with_a_clear_message(make_user, tiny_model, published):
    from labeling.models import Ranking
    from training.snapshots import snapshot_create

    project, _, admin = build_marker_project(make_user, prompts=8)
    Ranking.objects.filter(prompt__project=project).delete()
    snapshot, _ = snapshot_create(user=admin, project=project)
    for kind in ("reward", "dpo"):
        run = runs.training_run_create(user=admin, kind=kind, base_model=tiny_model, snapshot=snapshot)
        run = runs.training_run_execute(run_id=run.pk, worker="test:1")
        assert run.status == TrainingRun.Status.FAILED and "no rankings" in run.error


def test_a_missing_base_model_fails_with_what_to_do(marker, tiny_model, published, tmp_path):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot)
    ModelArtifact.objects.filter(pk=tiny_model.pk).update(path=str(tmp_path / "gone"))
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.FAILED and "does not exist" in run.error and "Re-import" in run.error


def test_cancel_stops_a_run_at_its_next_step(marker, tiny_model, published, monkeypatch):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config=FAST_REWARD)
    real_log = runs._RunHooks.log

    def cancel_at_step_3(self, record):
        real_log(self, record)
        if record["step"] == 3:
            runs.training_run_cancel(user=admin, run=TrainingRun.objects.get(pk=self.run.pk))

    monkeypatch.setattr(runs._RunHooks, "log", cancel_at_step_3)
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.CANCELLED and run.model is None
    assert TrainingMetric.objects.filter(run=run, split="train").count() <= 4  # stopped within a step
    with pytest.raises(Exception, match="already cancelled"):
        runs.training_run_cancel(user=admin, run=run)


def test_a_finished_run_is_not_run_twice(marker, tiny_model, published):
    project, snapshot, admin = marker
    run = runs.training_run_create(user=admin, kind="sft", base_model=tiny_model, snapshot=snapshot,
                                   config={"max_steps": 2})
    first = runs.training_run_execute(run_id=run.pk, worker="test:1")
    again = runs.training_run_execute(run_id=run.pk, worker="test:2")  # a second delivery of the message
    assert again.status == first.status == TrainingRun.Status.SUCCEEDED
    assert ModelArtifact.objects.filter(kind="sft").count() == 1


def test_rankings_only_in_the_validation_split_train_with_nothing_held_out(make_user, tiny_model, published):
    """One ranked prompt that falls in the validation split (as in a new project): the run trains
    on it, reports no held-out metric, and a later evaluation on that split says it overlaps."""
    from training import evaluations
    from training.snapshots import snapshot_create, snapshot_spec_clean

    project, _, admin = build_marker_project(make_user, prompts=4)
    filters, split = snapshot_spec_clean({"validation_fraction": 0.99})  # every prompt validates
    snapshot, _ = snapshot_create(user=admin, project=project, filters=filters, split=split)
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot)
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.data_stats["held_out"] is False and "held none out" in run.log_tail
    assert not any(k.startswith("validation/") for k in run.metrics)
    assert run.model.config["held_out"] is False and not ModelEvaluation.objects.exists()
    evaluation = ModelEvaluation.objects.create(model=run.model, snapshot=snapshot, split="validation")
    evaluation = evaluations.model_evaluation_execute(evaluation_id=evaluation.pk, worker="test:1")
    assert evaluation.results["overlaps_training"] is True
