"""Server-rendered pages: HTTP only. Each view reads through selectors, writes through one
service, and turns domain errors into pages (PermissionDeniedError -> 403, NotFound -> 404,
ValidationFailed -> the form again, with the message and everything the user typed).
"""
from __future__ import annotations


from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from labeling import importers, selectors, services, stats
from labeling.forms import DemonstrationForm, ImportForm, ProjectForm, PromptDraft, new_idempotency_key
from labeling.models import Prompt
from studio.errors import Conflict, PermissionDeniedError, ValidationFailed
from studio.jobs import BrokerUnavailable
from studio.roles import ADMIN, REVIEWER, has_role
from studio.pages import studio_page

PROMPTS_PER_PAGE = 25

def _require_admin(user) -> None:
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can manage projects.")


def _form_status(has_errors: bool) -> int:
    return 400 if has_errors else 200


# --- Home and projects ------------------------------------------------------------------------

@studio_page
@require_http_methods(["GET"])
def home(request):
    projects = list(selectors.project_list(user=request.user, include_archived=True))
    for project in projects:  # the annotator's figures per project (archived ones hand out no work)
        project.my_work = None if project.is_archived else stats.annotator_home(user=request.user, project=project)
    return render(request, "labeling/home.html", {"projects": projects})


@studio_page
@require_http_methods(["GET", "POST"])
def project_create(request):
    _require_admin(request.user)
    form = ProjectForm(request.POST if request.method == "POST" else None, creating=True)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(user=request.user, **form.service_fields())
        except ValidationFailed as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Project “{project.name}” created.")
            return redirect("project_detail", slug=project.slug)
    return render(request, "labeling/project_form.html", {"form": form, "project": None},
                  status=_form_status(bool(form.errors)))


@studio_page
@require_http_methods(["GET", "POST"])
def project_edit(request, slug: str):
    project = selectors.access_project(user=request.user, slug=slug)
    _require_admin(request.user)
    if request.method == "POST":
        form = ProjectForm(request.POST)
        if form.is_valid():
            try:
                project = services.project_update(user=request.user, project=project, **form.service_fields())
            except ValidationFailed as exc:
                form.add_service_error(exc)
                project.refresh_from_db()  # the failed update may have touched the instance
            else:
                messages.success(request, "Project saved.")
                return redirect("project_detail", slug=project.slug)
    else:
        form = ProjectForm(initial=ProjectForm.initial_for(project))
    return render(request, "labeling/project_form.html", {"form": form, "project": project},
                  status=_form_status(bool(form.errors)))


@studio_page
@require_http_methods(["GET"])
def project_detail(request, slug: str):
    user = request.user
    project = selectors.access_project(user=user, slug=slug)
    prompts = Paginator(selectors.prompt_list(user=user, project=project), PROMPTS_PER_PAGE)
    context = {
        "project": project,
        "stats": selectors.project_stats(user=user, project=project),
        "page": prompts.get_page(request.GET.get("page")),
        "recent_imports": selectors.import_run_list(user=user, project=project)[:5] if has_role(user, ADMIN) else [],
        "my_work": None if project.is_archived else stats.annotator_home(user=user, project=project),
    }
    return render(request, "labeling/project_detail.html", context)


# --- Imports ----------------------------------------------------------------------------------

IMPORT_POLL_SECONDS = 2


@studio_page
@require_http_methods(["GET", "POST"])
def import_create(request, slug: str):
    """The upload form: the file is saved and imported by a worker; the browser goes to the
    import's page, which shows its progress and then what it created."""
    project = selectors.access_project(user=request.user, slug=slug)
    runs = selectors.import_run_list(user=request.user, project=project)  # admins only
    form = ImportForm(request.POST if request.method == "POST" else None, request.FILES or None,
                      formats=importers.IMPORT_FORMATS)
    status = 200
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            run = importers.import_run_create(project=project, user=request.user, stream=upload,
                                              filename=upload.name, format=form.cleaned_data["format"])
        except ValidationFailed as exc:
            form.add_error(None, exc.message)
        except BrokerUnavailable as exc:
            form.add_error(None, str(exc))
            status = 503
        else:
            return redirect("import_detail", slug=project.slug, run_id=run.pk)
    if form.errors and status == 200:
        status = 400
    return render(request, "labeling/import_form.html", {"project": project, "form": form, "runs": runs[:50]},
                  status=status)


def _import_context(request, project, run) -> dict:
    return {
        "project": project,
        "run": run,
        "job": run,  # the shared progress card (templates/_job_progress.html) reads `job`
        # Bad rows are numbered by line (JSONL) or by item (a JSON list), as the format reads them.
        "unit": getattr(importers.IMPORT_FORMATS.get(run.format), "unit", "line"),
        "poll_seconds": IMPORT_POLL_SECONDS,
        "progress_url": reverse("import_progress", kwargs={"slug": project.slug, "run_id": run.pk}),
        "can_cancel": not run.is_finished,
    }


@studio_page
@require_http_methods(["GET"])
def import_detail(request, slug: str, run_id: int):
    project = selectors.access_project(user=request.user, slug=slug)
    run = selectors.access_import_run(user=request.user, project=project, run_id=run_id)
    return render(request, "labeling/import_detail.html", _import_context(request, project, run))


@studio_page
@require_http_methods(["GET"])
def import_progress(request, slug: str, run_id: int):
    """The progress fragment htmx polls every IMPORT_POLL_SECONDS; once the import has finished
    the page reloads once to show what it created and every bad row."""
    project = selectors.access_project(user=request.user, slug=slug)
    run = selectors.access_import_run(user=request.user, project=project, run_id=run_id)
    response = render(request, "labeling/_import_progress.html", _import_context(request, project, run))
    if run.is_finished and request.headers.get("HX-Request") and request.GET.get("was") == "live":
        response["HX-Refresh"] = "true"
    return response


@studio_page
@require_http_methods(["POST"])
def import_cancel(request, slug: str, run_id: int):
    project = selectors.access_project(user=request.user, slug=slug)
    run = selectors.access_import_run(user=request.user, project=project, run_id=run_id)
    try:
        importers.import_run_cancel(user=request.user, run=run)
        messages.success(request, f"Import {run.pk} cancelled; the rows already imported stay.")
    except Conflict as exc:
        messages.warning(request, str(exc))
    return redirect("import_detail", slug=project.slug, run_id=run.pk)


# --- Prompts ----------------------------------------------------------------------------------

def _prompt_write_context(project, draft: PromptDraft, error: str | None) -> dict:
    return {
        "project": project,
        "draft": draft,
        "error": error,
        "kinds": Prompt.Kind.choices,
        "max_chars": settings.STUDIO_MAX_PROMPT_CHARS,
        "character_count": draft.character_count(),
        "empty_example": {"q": "", "a": ""},
        "empty_turn": {"role": "user", "content": ""},
        "empty_document": {"title": "", "text": ""},
    }


@studio_page
@require_http_methods(["GET", "POST"])
def prompt_write(request, slug: str):
    project = selectors.access_project(user=request.user, slug=slug)
    error = None
    if request.method == "POST":
        draft = PromptDraft.from_post(request.POST)
        try:
            prompt, created = services.prompt_create(project=project, user=request.user, **draft.service_kwargs())
        except ValidationFailed as exc:
            error = draft.explain(exc)
        else:
            text = "Prompt saved." if created else "This prompt was already saved; here it is."
            messages.success(request, text, extra_tags="prompt-saved")
            return redirect("prompt_detail", prompt_id=prompt.pk)
    else:
        draft = PromptDraft()
    return render(request, "labeling/prompt_write.html", _prompt_write_context(project, draft, error),
                  status=_form_status(error is not None))


def _transcript(prompt: Prompt) -> list[dict]:
    """The prompt's turns with the label each gets on the page: few-shot examples are labelled
    as examples, so nobody mistakes them for the question."""
    turns = prompt.turns
    rows = []
    for index, message in enumerate(turns):
        is_last = index == len(turns) - 1
        is_example = prompt.kind == Prompt.Kind.FEW_SHOT and not is_last
        if prompt.kind == Prompt.Kind.FEW_SHOT:
            part = "question" if message["role"] == "user" else "answer"
            label = f"Example {index // 2 + 1} · {part}" if is_example else "Question"
        elif prompt.kind == Prompt.Kind.CONVERSATION:
            label = "User" if message["role"] == "user" else "Assistant"
        else:
            label = "Instruction"
        rows.append({"role": message["role"], "content": message["content"], "label": label,
                     "is_example": is_example, "is_last": is_last})
    return rows


@studio_page
@require_http_methods(["GET", "POST"])
def prompt_detail(request, prompt_id: int):
    user = request.user
    prompt = selectors.access_prompt(user=user, prompt_id=prompt_id)
    demo_error = None
    if request.method == "POST":
        form = DemonstrationForm(request.POST)
        if form.is_valid():
            try:
                demo, created = services.demonstration_create(
                    prompt=prompt, user=user, text=form.cleaned_data["text"],
                    idempotency_key=form.cleaned_data["idempotency_key"],
                )
            except ValidationFailed as exc:
                demo_error = form.explain(exc)
            else:
                messages.success(request, "Demonstration saved." if created else "This demonstration was already saved.")
                return redirect(reverse("prompt_detail", kwargs={"prompt_id": prompt.pk}) + f"#demonstration-{demo.pk}")
        else:
            demo_error = "; ".join(" ".join(errors) for errors in form.errors.values())
    else:
        form = DemonstrationForm(initial={"idempotency_key": new_idempotency_key()})
    transcript = _transcript(prompt)
    context = {
        "project": prompt.project,
        "prompt": prompt,
        "examples": [row for row in transcript if row["is_example"]],
        "turns": [row for row in transcript if not row["is_example"]],
        # Who wrote a prompt is a label: annotators see it only on their own prompts.
        "show_author": has_role(user, REVIEWER) or prompt.created_by_id == user.pk,
        "demonstrations": selectors.demonstration_list(user=user, prompt=prompt),
        "form": form,
        "demo_error": demo_error,
        "max_chars": settings.STUDIO_MAX_PROMPT_CHARS,
    }
    return render(request, "labeling/prompt_detail.html", context, status=_form_status(demo_error is not None))
