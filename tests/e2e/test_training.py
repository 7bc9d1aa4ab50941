"""In a real browser: an admin watches training runs (a finished real tiny run's plots, a running
run's plot gaining a point as its worker logs a step), opens the start form with its defaults,
reads a reward model's evaluations, and sees its scores on the review page (Debian's Chromium
through Playwright, as tests/e2e)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

PLOTS = ("loss", "lr", "grad_norm", "validation_accuracy")


@pytest.fixture
def trained(make_user, tiny_model, settings, tmp_path, monkeypatch):
    """(project, snapshot, admin, run): a real tiny reward run trained here, in-process."""
    from tests.training.helpers import build_marker_project
    from training import runs
    from training.tasks import training_run_task

    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    settings.MODEL_DIR = tmp_path / "models"  # not the development model store
    monkeypatch.setattr(training_run_task, "apply_async", lambda *args, **kwargs: None)
    project, snapshot, admin = build_marker_project(make_user, prompts=12)
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config={"learning_rate": 3e-3, "epochs": 2, "prompts_per_step": 4})
    runs.training_run_execute(run_id=run.pk, worker="test:1")
    run.refresh_from_db()
    assert run.status == "succeeded"
    return project, snapshot, admin, run


def _points(page, name: str) -> int:
    return int(page.locator(f'figure[data-plot="{name}"]').get_attribute("data-points") or 0)


def test_admin_watches_runs_starts_one_and_reads_evaluations(page, sign_in, trained, screenshot_dir):
    from django.utils import timezone

    from training.ml.config import config_defaults
    from training.models import TrainingMetric, TrainingRun

    project, snapshot, admin, run = trained
    sign_in(admin)

    # A finished run: every plot drawn from the metrics API, the registered model linked.
    page.goto(f"/training/runs/{run.pk}/")
    for name in PLOTS:
        page.wait_for_function(f"""() => +document.querySelector('figure[data-plot="{name}"]').dataset.points > 0""")
        assert page.locator(f'figure[data-plot="{name}"] canvas').count() >= 1
    assert _points(page, "loss") == run.total_steps and _points(page, "validation_accuracy") == 2
    assert page.get_by_role("link", name=run.model.name).first.is_visible()
    page.get_by_text("steps logged").wait_for()
    page.screenshot(path=str(screenshot_dir / "training-run.png"), full_page=True)

    # A running run: its plot gains a point when the worker logs a step.
    live = TrainingRun.objects.create(kind="sft", project=project, base_model=run.base_model, snapshot=snapshot,
                                      config=config_defaults("sft"), status="running", step=3, total_steps=10,
                                      epoch=0.3, eta_seconds=42, device="cpu (fp32)", log_tail="step 3/10  loss 2.1",
                                      created_by=admin, started_at=timezone.now(), checkpoint_step=2,
                                      metrics={"train/loss": 2.1, "train/lr": 3e-5, "train/grad_norm": 1.0})
    for step, loss in ((1, 2.9), (2, 2.5), (3, 2.1)):
        TrainingMetric.objects.create(run=live, split="train", step=step,
                                      values={"step": step, "loss": loss, "lr": 1e-5 * step, "grad_norm": 3.0 / step})
    page.goto(f"/training/runs/{live.pk}/")
    page.wait_for_function("""() => +document.querySelector('figure[data-plot="loss"]').dataset.points === 3""")
    assert page.locator('figure[data-plot="validation_loss"]').get_attribute("data-points") == "0"
    TrainingMetric.objects.create(run=live, split="train", step=4, values={"step": 4, "loss": 1.8, "lr": 4e-5,
                                                                         "grad_norm": 0.7})
    TrainingRun.objects.filter(pk=live.pk).update(step=4, log_tail="step 3/10  loss 2.1\nstep 4/10  loss 1.8")
    page.wait_for_function("""() => +document.querySelector('figure[data-plot="loss"]').dataset.points === 4""",
                           timeout=10_000)
    # The validation of step 4 lands after the page has read step 4's training row: still drawn.
    TrainingMetric.objects.create(run=live, split="validation", step=4, values={"step": 4, "validation/loss": 1.9})
    page.wait_for_function("""() => +document.querySelector('figure[data-plot="validation_loss"]').dataset.points
                               === 1""", timeout=10_000)
    page.locator("#run-progress").get_by_text("4 / 10").wait_for(timeout=10_000)  # the polled fragment
    page.locator("#run-log").get_by_text("step 4/10").wait_for(timeout=10_000)  # swapped out of band
    page.screenshot(path=str(screenshot_dir / "training-run-live.png"), full_page=True)

    # The start form: defaults of the chosen kind, the snapshot preselected, the settings explained.
    page.goto(f"/projects/{project.slug}/training/?snapshot={snapshot.sha256}")
    config = page.get_by_label("Config (JSON)")
    assert '"prompts_per_step": 8' in config.input_value()
    assert page.get_by_label("Snapshot").input_value() == snapshot.sha256
    page.get_by_label("Kind").select_option("sft")
    assert '"batch_size": 8' in config.input_value() and "prompts_per_step" not in config.input_value()
    assert page.locator('[data-config-help="sft"]').is_visible()
    assert not page.locator('[data-config-help="reward"]').is_visible()
    page.get_by_label("Kind").select_option("reward")
    page.locator("#start").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "training-start.png"), full_page=True)

    # The reward model's page: the evaluation its run recorded, and the form for another.
    page.goto(f"/models/{run.model.pk}/")
    panel = page.locator("#evaluations")
    panel.get_by_text("Validation split of").wait_for()
    assert panel.locator(".eval-accuracy").count() == 1 and panel.locator(".ci").first.is_visible()
    assert panel.get_by_role("button", name="Evaluate").is_visible()
    page.screenshot(path=str(screenshot_dir / "model-evaluations.png"), full_page=True)

    # The review page: the reward model's score beside each answer, loaded after the page.
    prompt = project.prompts.order_by("id").first()
    page.goto(f"/projects/{project.slug}/review/prompts/{prompt.pk}/")
    page.locator(".review-matrix .reward-score").first.wait_for(timeout=20_000)
    assert page.locator(".review-matrix .reward-score").count() == 3
    assert page.locator(".review-matrix .reward-best").count() == 1
    page.locator("#reward-status").get_by_text("scores by").wait_for()
    page.screenshot(path=str(screenshot_dir / "review-scores.png"), full_page=True)


def test_admin_reads_a_ppo_runs_rollouts_and_its_win_rate(page, sign_in, trained, screenshot_dir):
    """A real tiny PPO run against the trained reward model: its page draws the reward and KL of
    every rollout, lists the latest rollout's answers and shows the win rate with its interval."""
    from training import runs

    project, snapshot, admin, reward_run = trained  # noqa: F841
    run = runs.training_run_create(user=admin, kind="ppo", base_model=reward_run.base_model, snapshot=snapshot,
                                   reward_model=reward_run.model.pk,
                                   config={"learning_rate": 3e-4, "rollout_prompts": 4, "minibatch_prompts": 2,
                                           "max_new_tokens": 12, "win_rate_max_new_tokens": 12, "kl_bound": 100.0})
    run = runs.training_run_execute(run_id=run.pk, worker="test:1")
    assert run.status == "succeeded", run.error
    sign_in(admin)
    page.goto(f"/training/runs/{run.pk}/")
    from training.models import TrainingMetric

    rollouts = sum("reward" in m.values for m in TrainingMetric.objects.filter(run=run, split="train"))
    assert rollouts >= 2
    for name in ("reward", "kl", "entropy", "response_length", "loss"):
        page.wait_for_function(f"""() => +document.querySelector('figure[data-plot="{name}"]').dataset.points > 0""")
    assert _points(page, "reward") == rollouts and _points(page, "loss") == run.total_steps
    assert page.get_by_role("heading", name="Answers of the latest rollout").is_visible()
    shown = page.locator("table.rollout-samples tbody tr td:first-child").all_inner_texts()
    assert 1 <= len(shown) <= 3 and len(set(shown)) == len(shown)  # the best two and the worst, each once
    card = page.locator("section", has=page.get_by_role("heading", name=f"Win rate over {run.base_model.name}"))
    assert card.is_visible() and "held-out prompts" in card.inner_text()
    page.screenshot(path=str(screenshot_dir / "training-ppo-run.png"), full_page=True)
