"""Training run pages (admins): HTTP only. A project's training page (its runs and the "Start a
training run" form), a run's page (progress, live plots, metrics, data, log, cancel) and the
htmx fragment that page polls while the run is queued or running.

    /projects/<slug>/training/             runs + form; POST starts a run (training_run_create)
    /training/runs/<id>/                   the run
    /training/runs/<id>/progress/          the polled fragment (progress card, latest metrics, log)
    /training/runs/<id>/cancel/            POST: training_run_cancel

The plots read the JSON API (/api/v1/training-runs/<id>/metrics/?after=<step>) from
static/training/run_plots.js; nothing here computes them.
"""
from __future__ import annotations

import json

from django.contrib import messages
from django.db.models import Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from labeling.selectors import access_project
from modelhub.models import ModelArtifact
from studio.errors import Conflict, PermissionDeniedError, ValidationFailed
from studio.jobs import BrokerUnavailable
from studio.pages import studio_page
from studio.roles import ADMIN, has_role
from training import runs, selectors
from training.forms import TrainingRunForm
from training.ml.config import config_defaults, config_help
from training.models import TrainingRun

PROGRESS_POLL_SECONDS = 2
RUNS_SHOWN = 100
KINDS = tuple(str(k) for k in runs.AVAILABLE_KINDS)

# The one number that says how a run is doing, per kind: (metric, label, higher is better).
KEY_METRICS = {
    "reward": [("validation/accuracy", "validation accuracy"), ("train/accuracy", "train accuracy")],
    "sft": [("validation/loss", "validation loss"), ("train/loss", "train loss")],
    "ppo": [("win_rate/win_rate", "win rate over its start"), ("validation/reward", "validation reward"),
            ("train/reward", "train reward")],
    "best_of_n": [("win_rate/win_rate", "win rate over its start"), ("validation/loss", "validation loss")],
    "dpo": [("win_rate/win_rate", "win rate over its start"), ("validation/accuracy", "validation preference accuracy"),
            ("train/accuracy", "train preference accuracy")],
}
# The latest-metrics table's groups, in order, by the metric's prefix ("validation/accuracy").
GROUPS = {"train": "Train", "validation": "Validation", "win_rate": "Win rate (held-out prompts)"}
# What the data table shows of data_stats[split], in order.
DATA_ROWS = [("prompts", "Prompts"), ("examples_available", "Examples before max_prompts"), ("examples", "Examples"),
             ("pairs", "Ranked pairs"),
             ("truncated_prompts", "Truncated prompts"), ("truncated_responses", "Truncated answers"),
             ("identical_pairs", "Identical pairs"), ("skipped_prompts", "Skipped prompts")]


def _check_admin(user) -> None:
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can see and start training runs.")


def duration_text(seconds) -> str:
    """12 s, 4 min 05 s, 2 h 10 min; "" for None."""
    if seconds is None:
        return ""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def key_metric(run: TrainingRun) -> dict | None:
    """{"label", "value"} of the run's headline metric, or None before it has one."""
    for name, label in KEY_METRICS.get(run.kind, []):
        value = (run.metrics or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"label": label, "value": value}
    return None


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def latest_metrics(run: TrainingRun) -> list[dict]:
    """The run's latest metrics as table rows {"group", "name", "value"}: scalars as numbers,
    intervals as [lo, hi]; nested breakdowns (by_source) and bookkeeping (step, epoch) left out
    (the page shows them elsewhere)."""
    rows = []
    for key, value in sorted((run.metrics or {}).items()):
        group, _, name = key.partition("/") if "/" in key else ("", "", key)
        if key in ("step", "epoch", "steps") or key.endswith("/samples") or isinstance(value, dict) and \
                key != "reward_offset":
            continue
        if key == "reward_offset":
            text = (f"mean {_number(value.get('mean'))}, std {_number(value.get('std'))} "
                    f"over {value.get('answers')} answers")
        elif isinstance(value, list):
            text = "[" + ", ".join(_number(v) for v in value) + "]"
        else:
            text = _number(value)
        rows.append({"group": GROUPS.get(group, "Model"), "name": name, "value": text})
    order = {label: i for i, label in enumerate([*GROUPS.values(), "Model"])}
    return sorted(rows, key=lambda r: order[r["group"]])


def data_table(run: TrainingRun) -> list[dict]:
    stats = run.data_stats or {}
    if not stats:
        return []
    splits = [s for s in ("train", "validation") if s in stats]
    rows = []
    for key, label in DATA_ROWS:
        values = [stats[s].get(key) for s in splits]
        if key == "pairs" and run.kind == TrainingRun.Kind.SFT and not any(values):
            continue
        if all(v is None for v in values):  # a figure this kind does not have (PPO has no pairs)
            continue
        rows.append({"label": label, "values": values, "warn": key.startswith(("truncated", "identical", "skipped"))
                     and any(values)})
    return [{"splits": splits}, *rows]


def resume_text(run: TrainingRun) -> str:
    if not run.resumes:
        return ""
    times = "" if run.resumes == 1 else f" ({run.resumes} resumes in all)"
    return f"resumed from step {run.resumed_from_step} after the worker stopped{times}"


# --- The project's training page ---------------------------------------------------------------

def _base_models(project):
    """Language models a run of `project` may start from: its own, then imported ones."""
    models = ModelArtifact.objects.exclude(kind=ModelArtifact.Kind.REWARD).filter(
        Q(project=project) | Q(project__isnull=True))
    return sorted(models, key=lambda m: (m.project_id is None, -m.pk))


def _reward_models(project):
    """Reward models that may judge a run of `project`: its own, then imported ones."""
    models = ModelArtifact.objects.filter(kind=ModelArtifact.Kind.REWARD).filter(
        Q(project=project) | Q(project__isnull=True))
    return sorted(models, key=lambda m: (m.project_id is None, -m.pk))


def _config_fields(kind: str, errors: dict | None = None) -> list[dict]:
    defaults, help_text = config_defaults(kind), config_help(kind)
    return [{"name": name, "default": json.dumps(value), "help": help_text.get(name, ""),
             "errors": (errors or {}).get(name, [])} for name, value in defaults.items()]


@studio_page
@require_http_methods(["GET", "POST"])
def training_page(request, slug: str):
    _check_admin(request.user)
    project = access_project(user=request.user, slug=slug)
    snapshots = selectors.snapshot_list(user=request.user, project=project)
    base_models, reward_models = _base_models(project), _reward_models(project)
    status, error, config_errors, config_lines = 200, "", {}, []
    if request.method == "POST":
        form = TrainingRunForm(request.POST, base_models=base_models, snapshots=snapshots, reward_models=reward_models)
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = runs.training_run_create(user=request.user, kind=data["kind"], base_model=data["base_model"],
                                               snapshot=data["snapshot"], config=data["config"],
                                               reward_model=data["reward_model"])
            except ValidationFailed as exc:
                error, status = exc.message, 400
                config_errors = exc.errors.get("config") if isinstance(exc.errors.get("config"), dict) else {}
                # Each wrong setting under the message, unless the message already says just that.
                config_lines = [(name, m) for name, msgs in config_errors.items() for m in msgs
                                if f"config.{name}: {m}" not in error]
                for field in ("kind", "base_model", "snapshot", "reward_model"):
                    for message in exc.errors.get(field, []):
                        form.add_error(field, message)
            except BrokerUnavailable as exc:
                error, status = str(exc), 503
            else:
                messages.success(request, f"Training run {run.pk} queued: a worker on the training queue will "
                                          "start it.")
                return redirect("training:run_detail", run_id=run.pk)
        else:
            status = 400
        kind = request.POST.get("kind") if request.POST.get("kind") in KINDS else "reward"
    else:
        kind = request.GET.get("kind") if request.GET.get("kind") in KINDS else "reward"
        wanted = (request.GET.get("snapshot") or "").lower()
        chosen = next((s for s in snapshots if s.sha256 == wanted), None) if wanted else None
        form = TrainingRunForm(base_models=base_models, snapshots=snapshots, reward_models=reward_models, initial={
            "kind": kind, "snapshot": chosen.sha256 if chosen else None,
            "base_model": base_models[0].pk if base_models else None,
            "config": json.dumps(config_defaults(kind), indent=2)})
    run_rows = list(selectors.training_run_list(user=request.user, project=project)[:RUNS_SHOWN])
    return render(request, "training/training_page.html", {
        "project": project,
        "form": form,
        "error": error,
        "config_lines": config_lines,
        "config_invalid": bool(config_errors),
        "kind": kind,
        "runs": [{"run": r, "metric": key_metric(r)} for r in run_rows],
        "has_snapshots": snapshots.exists(),
        "has_models": bool(base_models),
        "defaults_json": json.dumps({k: config_defaults(k) for k in KINDS}),
        "fields_by_kind": [{"kind": k, "fields": _config_fields(k, config_errors if k == kind else None)}
                           for k in KINDS],
        "poll_seconds": PROGRESS_POLL_SECONDS,
        "any_live": any(not r.is_finished for r in run_rows),
    }, status=status)


# --- A run's page -------------------------------------------------------------------------------

def _run_context(request, run: TrainingRun) -> dict:
    return {
        "run": run,
        "project": run.project,
        "poll_seconds": PROGRESS_POLL_SECONDS,
        "progress_url": reverse("training:run_progress", args=[run.pk]),
        "metrics_url": reverse("api-training-run-metrics", args=[run.pk]),
        # PPO: answers of the latest rollout with their rewards (the best two and the worst).
        "samples": (run.metrics or {}).get("train/samples") or [],
        "can_cancel": not run.is_finished,
        "eta": duration_text(run.eta_seconds),
        "elapsed": duration_text((run.finished_at - run.started_at).total_seconds())
        if run.started_at and run.finished_at else "",
        "latest": latest_metrics(run),
        "resume": resume_text(run),
    }


@studio_page
@require_http_methods(["GET"])
def run_detail(request, run_id: int):
    run = selectors.access_training_run(user=request.user, run_id=run_id)
    context = _run_context(request, run)
    context.update({
        "data": data_table(run),
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "key": key_metric(run),
    })
    return render(request, "training/run_detail.html", context)


@studio_page
@require_http_methods(["GET"])
def run_progress(request, run_id: int):
    """The fragment htmx polls every PROGRESS_POLL_SECONDS: the progress card, with the latest
    metrics and the log tail swapped out of band. Once the run is finished the fragment stops
    polling and the page reloads once (HX-Refresh) to show the final data, model and error."""
    run = selectors.access_training_run(user=request.user, run_id=run_id)
    response = render(request, "training/_run_live.html", {**_run_context(request, run), "oob": True})
    if run.is_finished and request.headers.get("HX-Request") and request.GET.get("was") == "live":
        response["HX-Refresh"] = "true"
    return response


@studio_page
@require_POST
def run_cancel(request, run_id: int):
    run = selectors.access_training_run(user=request.user, run_id=run_id)
    try:
        runs.training_run_cancel(user=request.user, run=run)
    except Conflict as exc:
        messages.warning(request, str(exc))
    else:
        messages.success(request, f"Training run {run.pk} cancelled: it stops at its next step. Its checkpoints "
                                  "stay on disk.")
    return redirect("training:run_detail", run_id=run.pk)
