"""Model hub pages: HTTP only. Reads through selectors, writes through one service; domain
errors become pages (PermissionDeniedError -> 403, NotFound -> 404, ValidationFailed -> the
form again with the message).

    /models/, /models/<id>/                    the registry and a model's page (lineage; a reward
                                               model's evaluations; admins evaluate and promote)
    /models/<id>/evaluations/                  the evaluations panel, polled while one runs
    /models/<id>/evaluate/, /promote/          POST, admins
    /projects/<slug>/review/prompts/<id>/reward-scores/
                                               the reward scores the review page loads after it renders
    /projects/<slug>/generate/, /generation-jobs/<id>/...   generation jobs
"""
from __future__ import annotations

import json
import logging

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from labeling import selectors as labeling_selectors
from labeling.models import Project
from modelhub import selectors, services
from modelhub.forms import GenerationJobForm, ModelEvaluationForm
from modelhub.loading import ModelLoadError
from modelhub.models import ModelArtifact
from modelhub.registry import project_generator_set
from studio.errors import Conflict, NotFound, PermissionDeniedError, ValidationFailed
from studio.jobs import BrokerUnavailable
from studio.pages import studio_page
from studio.roles import ADMIN, REVIEWER, has_role
from training import evaluations as training_evaluations
from training import selectors as training_selectors
from training.models import DatasetSnapshot, TrainingRun

log = logging.getLogger(__name__)

PROGRESS_POLL_SECONDS = 2

# --- Models ------------------------------------------------------------------------------------

@studio_page
@require_http_methods(["GET"])
def model_list(request):
    models = selectors.model_list(user=request.user)
    return render(request, "modelhub/model_list.html", {"models": models})


def _model_snapshots(model: ModelArtifact):
    """What a model can be evaluated on: its project's snapshots, or every active project's when
    it belongs to none (an imported reward model), newest first."""
    snapshots = DatasetSnapshot.objects.select_related("project").order_by("-id")
    if model.project_id is not None:
        return snapshots.filter(project_id=model.project_id)
    return snapshots.filter(project__is_archived=False)


def _generator_projects(model: ModelArtifact) -> list[dict]:
    """The projects an admin may make `model` the generator of, each with its current generator."""
    if not model.is_generative:
        return []
    if model.project_id is not None:
        projects = [model.project]
    else:
        projects = list(Project.objects.filter(is_archived=False).order_by("name"))
    rows = []
    for project in projects:
        current = selectors.project_generator_model(project=project)
        rows.append({"project": project, "current": current,
                     "is_this": current is not None and current.pk == model.pk})
    return rows


def _model_page(request, model: ModelArtifact, *, status: int = 200, eval_form=None, eval_error: str = "",
                promote_error: str = ""):
    is_admin = has_role(request.user, ADMIN)
    is_reward = model.kind == ModelArtifact.Kind.REWARD
    evaluations = list(training_selectors.model_evaluation_list(user=request.user, model=model)[:50]) \
        if is_reward else []
    if is_reward and is_admin and eval_form is None:
        eval_form = ModelEvaluationForm(snapshots=_model_snapshots(model), initial={
            "snapshot": model.snapshot_id, "split": "validation"})
    return render(request, "modelhub/model_detail.html", {
        "model": model,
        "lineage": selectors.model_lineage(model=model),
        "children": selectors.model_children(model=model),
        "config_json": json.dumps(model.config, indent=2, sort_keys=True) if model.config else "",
        "metrics_json": json.dumps(model.metrics, indent=2, sort_keys=True) if model.metrics else "",
        "library_versions": sorted((model.library_versions or {}).items()),
        # Runs are admin pages: reviewers see that a run made the model, not a link to it.
        "training_run": TrainingRun.objects.filter(model=model).first(),
        "is_reward": is_reward,
        "evaluations": evaluations,
        "evaluations_live": any(not e.is_finished for e in evaluations),
        "evaluations_url": reverse("modelhub:model_evaluations", args=[model.pk]),
        "poll_seconds": PROGRESS_POLL_SECONDS,
        "eval_form": eval_form if is_admin else None,
        "eval_snapshots": bool(eval_form is not None and eval_form.fields["snapshot"].queryset.exists()),
        "eval_error": eval_error,
        "generators": _generator_projects(model) if is_admin else [],
        "promote_error": promote_error,
    }, status=status)


@studio_page
@require_http_methods(["GET"])
def model_detail(request, model_id: int):
    model = selectors.access_model(user=request.user, model_id=model_id)
    return _model_page(request, model)


@studio_page
@require_http_methods(["GET"])
def model_evaluations(request, model_id: int):
    """The evaluations panel alone: htmx polls it every PROGRESS_POLL_SECONDS while one of the
    model's evaluations is queued or running, and it stops polling once they have all finished."""
    model = selectors.access_model(user=request.user, model_id=model_id)
    evaluations = list(training_selectors.model_evaluation_list(user=request.user, model=model)[:50])
    return render(request, "training/_model_evaluations.html", {
        "model": model, "evaluations": evaluations, "evaluations_live": any(not e.is_finished for e in evaluations),
        "evaluations_url": reverse("modelhub:model_evaluations", args=[model.pk]),
        "poll_seconds": PROGRESS_POLL_SECONDS,
    })


@studio_page
@require_POST
def model_evaluate(request, model_id: int):
    """Admins: evaluate a reward model on a snapshot's split (training.evaluations), then back to
    the model page, where the evaluation shows its progress."""
    if not has_role(request.user, ADMIN):
        raise PermissionDeniedError("Only admins can start evaluations.")
    model = selectors.access_model(user=request.user, model_id=model_id)
    form = ModelEvaluationForm(request.POST, snapshots=_model_snapshots(model))
    if not form.is_valid():
        return _model_page(request, model, status=400, eval_form=form)
    try:
        evaluation = training_evaluations.model_evaluation_create(
            user=request.user, model=model, snapshot=form.cleaned_data["snapshot"], split=form.cleaned_data["split"])
    except ValidationFailed as exc:
        return _model_page(request, model, status=400, eval_form=form, eval_error=exc.message)
    except BrokerUnavailable as exc:
        return _model_page(request, model, status=503, eval_form=form, eval_error=str(exc))
    messages.success(request, f"Evaluation {evaluation.pk} queued: a worker on the default queue scores the "
                              f"{evaluation.get_split_display().lower()} of snapshot {evaluation.snapshot.short_hash}.")
    return redirect(reverse("modelhub:model_detail", args=[model.pk]) + "#evaluations")


@studio_page
@require_POST
def model_promote(request, model_id: int):
    """Admins: make the model the generator of a project (modelhub.registry.project_generator_set)."""
    if not has_role(request.user, ADMIN):
        raise PermissionDeniedError("Only admins can choose a project's generator.")
    model = selectors.access_model(user=request.user, model_id=model_id)
    project = labeling_selectors.access_project(user=request.user, slug=request.POST.get("project", ""))
    try:
        project_generator_set(user=request.user, project=project, model=model)
    except ValidationFailed as exc:
        return _model_page(request, model, status=400, promote_error=exc.message)
    messages.success(request, f"{model.name} now writes the candidates of {project.name}.")
    return redirect("modelhub:model_detail", model_id=model.pk)


# --- Generation jobs ---------------------------------------------------------------------------

@studio_page
@require_http_methods(["GET", "POST"])
def generation_create(request, slug: str):
    """The "Generate candidates" form of a project (admins), with the project's recent jobs."""
    if not has_role(request.user, ADMIN):
        raise PermissionDeniedError("Only admins can start generation jobs.")
    project = labeling_selectors.access_project(user=request.user, slug=slug)
    generator = selectors.project_generator_model(project=project)
    models = ModelArtifact.objects.exclude(kind=ModelArtifact.Kind.REWARD).order_by("-id")
    status = 200
    error = ""
    if request.method == "POST":
        form = GenerationJobForm(request.POST, models=models)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = services.generation_job_create(
                    user=request.user, project=project, prompt_ids=data["prompt_id_list"], model=data["model"],
                    k=data["k"])
            except ValidationFailed as exc:
                error, status = exc.message, 400
            except services.BrokerUnavailable as exc:
                error, status = str(exc), 503
            else:
                messages.success(request, f"Generation job {job.pk} queued.")
                return redirect("modelhub:generation_job_detail", job_id=job.pk)
        else:
            status = 400
    else:
        form = GenerationJobForm(models=models, initial={
            "model": generator.pk if generator else None, "k": project.k_candidates, "prompts": "missing"})
    return render(request, "modelhub/generation_form.html", {
        "project": project,
        "form": form,
        "error": error,
        "generator": generator,
        "has_models": models.exists(),
        "jobs": selectors.generation_job_list(user=request.user, project=project)[:10],
        "settings": project.generation_settings,
    }, status=status)


def _job_context(request, job) -> dict:
    return {
        "job": job,
        "poll_seconds": PROGRESS_POLL_SECONDS,
        "progress_url": reverse("modelhub:generation_job_progress", args=[job.pk]),
        "can_cancel": has_role(request.user, ADMIN) and not job.is_finished,
    }


@studio_page
@require_http_methods(["GET"])
def generation_job_detail(request, job_id: int):
    job = selectors.access_generation_job(user=request.user, job_id=job_id)
    context = _job_context(request, job)
    context["candidates"] = selectors.job_candidates(job=job).order_by("prompt_id", "external_id")[:200] \
        if job.candidates_done else []
    return render(request, "modelhub/generation_job.html", context)


@studio_page
@require_http_methods(["GET"])
def generation_job_progress(request, job_id: int):
    """The progress fragment htmx polls every PROGRESS_POLL_SECONDS; once the job is finished
    the fragment it returns no longer polls, and a finished job's page reloads once to show
    the candidates."""
    job = selectors.access_generation_job(user=request.user, job_id=job_id)
    response = render(request, "modelhub/_job_progress.html", _job_context(request, job))
    if job.is_finished and request.headers.get("HX-Request") and request.GET.get("was") == "live":
        response["HX-Refresh"] = "true"
    return response


@studio_page
@require_http_methods(["POST"])
def generation_job_cancel(request, job_id: int):
    job = selectors.access_generation_job(user=request.user, job_id=job_id)
    try:
        services.generation_job_cancel(user=request.user, job=job)
        messages.success(request, f"Generation job {job.pk} cancelled; the candidates already written stay.")
    except Conflict as exc:
        messages.warning(request, str(exc))
    return redirect("modelhub:generation_job_detail", job_id=job.pk)


# --- Reward scores on the reviewer's prompt page ------------------------------------------------

@studio_page
@require_http_methods(["GET"])
def review_scores(request, slug: str, prompt_id: int):
    """The project's reward model's score of each candidate of a prompt, for the reviewer's
    prompt page, which loads it with htmx after it has rendered (loading a model takes a while;
    the page never waits for it). A model that cannot score (no reward model, a load error, too
    many candidates) gives a short message instead of scores."""
    if not has_role(request.user, REVIEWER):
        raise PermissionDeniedError("Only reviewers and admins can see reward scores.")
    project = labeling_selectors.access_project(user=request.user, slug=slug)
    prompt = labeling_selectors.access_prompt(user=request.user, prompt_id=prompt_id)
    if prompt.project_id != project.pk:
        raise NotFound(f"No prompt with id {prompt_id} in this project.")
    model = selectors.project_reward_model(project=project)
    candidates = list(prompt.candidates.order_by("id"))
    rows, error = [], ""
    if model is None:
        error = "This project has no reward model yet."
    elif not candidates:
        error = "No answers to score."
    else:
        try:
            scores = training_evaluations.model_score(user=request.user, model=model, messages=prompt.messages,
                                 candidates=[c.text for c in candidates], documents=prompt.documents or [])
        except ValidationFailed as exc:
            error = exc.message
        except (ModelLoadError, OSError) as exc:
            # A missing or unreadable artifact: say so on the page (the reviewer's work goes on),
            # and keep the traceback for whoever fixes the model store.
            log.warning("Reward model %s could not score prompt %s", model.pk, prompt.pk, exc_info=True)
            error = f"{model.name} could not be loaded: {exc}"
        else:
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            place = {i: n + 1 for n, i in enumerate(order)}
            rows = [{"candidate": c, "score": scores[i], "place": place[i], "best": place[i] == 1}
                    for i, c in enumerate(candidates)]
    return render(request, "training/_review_scores.html", {
        "model": model, "rows": rows, "error": error[:300], "candidates": candidates})
