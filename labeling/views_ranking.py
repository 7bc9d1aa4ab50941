"""Pages of the work queue: taking the next task, the ranking page, skipping, and the reviewer
pages (a prompt's labels side by side, the project's agreement dashboard). HTTP only: the rules
(leases, blind labelling, who may review) live in labeling.queue / review / stats, and these
views turn their errors into pages.

The ranking page itself talks to the JSON API (submit, heartbeat, release) from static/js/rank.js;
the forms here (next task, skip, release, reject) also work without JavaScript.
"""
from __future__ import annotations

import string

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from labeling import queue, review, selectors, stats
from labeling.forms import new_idempotency_key
from labeling.gold import gold_accuracy_by_annotator, gold_ranking_of
from labeling.label_checks import FLAGS, RATING_MAX, RATING_MIN
from labeling.models import Candidate, LabelReview, Project, Prompt, Task
from labeling.views import _transcript
from modelhub.selectors import project_reward_model
from studio.pages import studio_page
from studio.errors import Conflict, NotFound, ValidationFailed

# The browser keeps a lease while the annotator works and hands it back when they leave:
# - a heartbeat every HEARTBEAT_SECONDS while there was input in the last ACTIVE_SECONDS;
# - after IDLE_RELEASE_SECONDS without input the page releases the task itself (the lease would
#   run out anyway; releasing returns the work to the pool sooner);
# - when the page goes away, the release waits RELEASE_GRACE_SECONDS (in a service worker) and
#   is dropped if the same task page is open again by then: a reload must not lose the lease.
HEARTBEAT_SECONDS = 60
ACTIVE_SECONDS = 5 * 60
IDLE_RELEASE_SECONDS = 15 * 60
RELEASE_GRACE_SECONDS = 10
PROMPTS_PER_PAGE = 25
# What the safety screen's labels mean on the page (modelhub.safety uses "pii" and "unsafe").
SAFETY_LABELS = {"pii": "Personal information", "unsafe": "Unsafe content"}
# Short names of the flags for the reviewers' side-by-side table (the full label is its tooltip).
FLAG_SHORT = {"unsafe": "Unsafe", "hallucination": "Hallucination", "fails_instruction": "Fails instruction",
              "pii": "PII", "spam": "Spam"}
SKIP_REASONS = [
    "I can't judge this topic",
    "The prompt is unclear or broken",
    "The answers are unreadable or empty",
    "The prompt contains content I don't want to read",
]


def _letter(index: int) -> str:
    """The name of the n-th answer: A, B, … On the ranking page answers are named in the order
    they were shown to the annotator (so the names stay put while they reorder, and their comments
    use them); on the review pages in the order of their ids, the same for every label."""
    return string.ascii_uppercase[index] if index < 26 else str(index + 1)


def _safety_marks(candidate: Candidate) -> list[dict]:
    return [{"label": SAFETY_LABELS.get(flag.get("label"), str(flag.get("label") or "Flagged")),
             "detail": flag.get("detail", "")} for flag in candidate.safety_flags or []]


def _redirect_to_task(task: Task):
    return redirect("task_page", task_id=task.pk)


def _lease_next(request, project: Project):
    """Lease the caller's next ranking task (or the lease they already hold) and go to it; back
    to the project page with a message when there is none."""
    try:
        task = queue.task_next_lease(user=request.user, project=project, kinds=[Task.Kind.RANK])
    except Conflict as exc:
        messages.warning(request, str(exc))
        return redirect("project_detail", slug=project.slug)
    if task is None:
        messages.info(request, "No ranking work is left for you in this project right now. Thank you!",
                      extra_tags="queue-empty")
        return redirect("project_detail", slug=project.slug)
    return _redirect_to_task(task)


# --- Annotator: next task, ranking page, skip, release ------------------------------------------

@studio_page
@require_POST
def task_next(request, slug: str):
    # POST, not GET: leasing changes state, and a link prefetcher must not take work.
    project = selectors.access_project(user=request.user, slug=slug)
    return _lease_next(request, project)


def _task_closed_message(task: Task) -> str:
    if task.status == Task.Status.SUBMITTED:
        return "You submitted this task. Thank you!"
    if task.status == Task.Status.SKIPPED:
        return "You skipped this task, so it will not come back to you."
    if task.status == Task.Status.RELEASED:
        return ("This task was handed back unfinished (the page was closed or left idle), so it went back to "
                "the queue.")
    return "Your lease on this task ran out, so it went back to the queue."


def _rank_context(task: Task) -> dict:
    prompt = task.prompt
    transcript = _transcript(prompt)
    candidates = [{"id": c.pk, "letter": _letter(i), "text": c.text, "safety": _safety_marks(c)}
                  for i, c in enumerate(queue.task_candidates(task=task))]
    now = timezone.now()
    config = {
        "task": task.pk,
        "project": task.project.slug,
        "candidates": [{"id": c["id"], "letter": c["letter"]} for c in candidates],
        "flags": list(FLAGS),
        "rating_min": RATING_MIN,
        "rating_max": RATING_MAX,
        "expires_at": task.expires_at.isoformat(),
        "server_now": now.isoformat(),
        "lease_minutes": task.project.lease_minutes,
        "heartbeat_ms": HEARTBEAT_SECONDS * 1000,
        "active_ms": ACTIVE_SECONDS * 1000,
        "idle_release_ms": IDLE_RELEASE_SECONDS * 1000,
        "release_grace_ms": RELEASE_GRACE_SECONDS * 1000,
        "urls": {
            "task": reverse("api-task", kwargs={"task_id": task.pk}),
            "submit": reverse("api-task-submit", kwargs={"task_id": task.pk}),
            "heartbeat": reverse("api-task-heartbeat", kwargs={"task_id": task.pk}),
            "release": reverse("api-task-release", kwargs={"task_id": task.pk}),
        },
    }
    return {
        "project": task.project,
        "task": task,
        "prompt": prompt,
        "examples": [row for row in transcript if row["is_example"]],
        "turns": [row for row in transcript if not row["is_example"]],
        "candidates": candidates,
        "flags": list(FLAGS.items()),
        "ratings": range(RATING_MIN, RATING_MAX + 1),
        "skip_reasons": SKIP_REASONS,
        "config": config,
    }


@studio_page
@require_http_methods(["GET", "POST"])
def task_page(request, task_id: int):
    """The page of one of the caller's tasks: the ranking page for a live rank lease; a short
    page for other kinds (a demonstration to write, or a lease to hand back); and a closed page
    with the next-task button once the task is over."""
    task = queue.access_task(user=request.user, task_id=task_id)
    live = task.status == Task.Status.LEASED and task.expires_at > timezone.now()
    if request.method == "POST" and task.kind == Task.Kind.WRITE_DEMONSTRATION and task.status == Task.Status.LEASED:
        # Even past its expiry: the service then says why it cannot be saved, and the text stays.
        return _other_task_page(request, task)
    if not live:
        if request.method == "POST":
            messages.warning(request, _task_closed_message(task))
            return _redirect_to_task(task)
        return render(request, "labeling/task_closed.html",
                      {"project": task.project, "task": task, "message": _task_closed_message(task)})
    if task.kind == Task.Kind.RANK:
        if request.method == "POST":
            return redirect("task_page", task_id=task.pk)  # ranking is submitted through the API
        return render(request, "labeling/rank.html", _rank_context(task))
    return _other_task_page(request, task)


def _other_task_page(request, task: Task):
    """A non-ranking lease (taken through the API): write its demonstration here, or hand it back."""
    error = None
    text = ""
    key = new_idempotency_key()
    if request.method == "POST" and task.kind == Task.Kind.WRITE_DEMONSTRATION:
        text = request.POST.get("demonstration", "")
        key = request.POST.get("idempotency_key") or key
        try:
            queue.task_submit(user=request.user, task=task, idempotency_key=key, body={"demonstration": text})
        except (ValidationFailed, Conflict) as exc:
            error = getattr(exc, "message", str(exc))
        else:
            messages.success(request, "Demonstration saved. Thank you!")
            return redirect("project_detail", slug=task.project.slug)
    context = {"project": task.project, "task": task, "error": error, "text": text, "idempotency_key": key}
    if task.prompt_id:
        transcript = _transcript(task.prompt)
        context.update(prompt=task.prompt, examples=[r for r in transcript if r["is_example"]],
                       turns=[r for r in transcript if not r["is_example"]])
    return render(request, "labeling/task_other.html", context, status=400 if error else 200)


@studio_page
@require_POST
def task_skip(request, task_id: int):
    """Skip with a reason, then straight on to the next task."""
    task = queue.access_task(user=request.user, task_id=task_id)
    reason = request.POST.get("reason", "")
    if reason == "other":
        reason = request.POST.get("reason_other", "")
    try:
        queue.task_skip(user=request.user, task=task, reason=reason.strip())
    except (ValidationFailed, Conflict) as exc:
        messages.error(request, getattr(exc, "message", str(exc)))
        return _redirect_to_task(task)
    messages.info(request, "Skipped. It will not come back to you.")
    return _lease_next(request, task.project)


@studio_page
@require_POST
def task_release(request, task_id: int):
    """Hand a lease back unfinished and return to the project."""
    task = queue.access_task(user=request.user, task_id=task_id)
    queue.task_release(user=request.user, task=task)
    messages.info(request, "The task went back to the queue.")
    return redirect("project_detail", slug=task.project.slug)


# --- Reviewer pages -------------------------------------------------------------------------

def _access_project_prompt(user, slug: str, prompt_id: int) -> tuple[Project, Prompt]:
    project = selectors.access_project(user=user, slug=slug)
    prompt = selectors.access_prompt(user=user, prompt_id=prompt_id)
    if prompt.project_id != project.pk:
        raise NotFound(f"No prompt with id {prompt_id} in this project.")
    return project, prompt


def _labelled_prompts(project: Project):
    """The project's prompts that have labels, with how many count and how many were rejected
    (callers have already passed the reviewer check)."""
    rejected = Q(rankings__reviews__verdict=LabelReview.Verdict.REJECTED)
    return (project.prompts.annotate(n_labels=Count("rankings", distinct=True),
                                     n_rejected=Count("rankings", filter=rejected, distinct=True))
            .filter(n_labels__gt=0).order_by("id"))


# A bias is worth a reviewer's look once it is this far from chance over enough labels.
POSITION_BIAS_MARGIN, POSITION_BIAS_MIN_LABELS = 0.15, 5
LENGTH_BIAS_MARGIN, LENGTH_BIAS_MIN_PAIRS = 0.15, 20


def _bias_warnings(position: dict, length: dict) -> dict:
    enough = (position.get("labels") or 0) >= POSITION_BIAS_MIN_LABELS
    chance = position.get("chance")
    def high(rate):
        return enough and rate is not None and chance is not None and rate - chance > POSITION_BIAS_MARGIN
    longer = length.get("longer_wins")
    return {
        "first": high(position.get("first_wins")),
        "last": high(position.get("last_wins")),
        "length": ((length.get("pairs") or 0) >= LENGTH_BIAS_MIN_PAIRS and longer is not None
                   and abs(longer - 0.5) > LENGTH_BIAS_MARGIN),
    }


@studio_page
@require_http_methods(["GET"])
def review_dashboard(request, slug: str):
    project = selectors.access_project(user=request.user, slug=slug)
    figures = stats.project_agreement(user=request.user, project=project)  # reviewers only
    prompts = Paginator(_labelled_prompts(project), PROMPTS_PER_PAGE).get_page(request.GET.get("page"))
    leases = (Task.objects.filter(project=project, status=Task.Status.LEASED, expires_at__gt=timezone.now())
              .count())
    for row in figures["annotators"]:
        row["warn"] = _bias_warnings(row["position_bias"], row["length_bias"])
    return render(request, "labeling/review_dashboard.html", {
        "project": project, "figures": figures, "page": prompts, "live_leases": leases,
        "warn": _bias_warnings(figures["position_bias"], figures["length_bias"]),
    })


def _cell(label, candidate_id: int) -> dict:
    """One label's verdict on one candidate: tie-group position, whether tied, rating, flags."""
    for index, group in enumerate(label.ranking):
        if candidate_id in group:
            return {"position": index + 1, "tied": len(group) > 1,
                    "rating": label.ratings.get(str(candidate_id)),
                    "flags": [{"short": FLAG_SHORT.get(f, f), "label": FLAGS.get(f, f)}
                              for f in label.flags.get(str(candidate_id), [])]}
    return {"position": None, "tied": False, "rating": None, "flags": []}


def _positions(ranking) -> dict[int, dict]:
    return {cid: {"position": i + 1, "tied": len(group) > 1} for i, group in enumerate(ranking or []) for cid in group}


def _review_prompt_context(request, project: Project, prompt: Prompt, errors: dict | None = None) -> dict:
    user = request.user
    labels = list(review.prompt_label_list(user=user, prompt=prompt).select_related("task"))  # reviewers only
    consensus = stats.prompt_consensus(prompt=prompt)
    gold = gold_ranking_of(prompt=prompt)
    trust = gold_accuracy_by_annotator(project=project)
    candidates = list(prompt.candidates.order_by("id"))
    letters = {c.pk: _letter(i) for i, c in enumerate(candidates)}
    consensus_pos, gold_pos = _positions(consensus["ranking"]), _positions(gold)
    columns = []
    for label in labels:
        rejection = review.label_rejection(label)
        columns.append({
            "label": label, "rejection": rejection, "trust": trust.get(label.annotator_id, {}).get("trust"),
            "error": (errors or {}).get(label.pk),
            "shown_letters": [letters.get(cid, "?") for cid in label.shown_order],
            "their_letters": [_letter(i) for i in range(len(label.shown_order))],
        })
    rows = []
    for index, candidate in enumerate(candidates):
        rows.append({
            "candidate": candidate, "letter": _letter(index), "safety": _safety_marks(candidate),
            "cells": [{**_cell(col["label"], candidate.pk), "rejected": col["rejection"] is not None}
                      for col in columns],
            "consensus": consensus_pos.get(candidate.pk), "gold": gold_pos.get(candidate.pk),
        })
    transcript = _transcript(prompt)
    neighbours = _labelled_prompts(project).values_list("id", flat=True)
    return {
        "project": project, "prompt": prompt, "columns": columns, "rows": rows, "consensus": consensus,
        "has_gold": gold is not None, "counting": sum(1 for c in columns if c["rejection"] is None),
        # Its scores are loaded after the page (modelhub.views.review_scores): loading a model is slow.
        "reward_model": project_reward_model(project=project) if candidates else None,
        "examples": [r for r in transcript if r["is_example"]], "turns": [r for r in transcript if not r["is_example"]],
        "previous_id": neighbours.filter(id__lt=prompt.pk).order_by("-id").first(),
        "next_id": neighbours.filter(id__gt=prompt.pk).order_by("id").first(),
    }


@studio_page
@require_http_methods(["GET"])
def review_prompt(request, slug: str, prompt_id: int):
    project, prompt = _access_project_prompt(request.user, slug, prompt_id)
    return render(request, "labeling/review_prompt.html", _review_prompt_context(request, project, prompt))


@studio_page
@require_POST
def label_reject(request, slug: str, prompt_id: int, label_id: int):
    project, prompt = _access_project_prompt(request.user, slug, prompt_id)
    label = review.access_label(user=request.user, label_id=label_id)
    if label.prompt_id != prompt.pk:
        raise NotFound(f"No label with id {label_id} on this prompt.")
    try:
        _, created = review.label_reject(user=request.user, label=label, reason=request.POST.get("reason", ""))
    except ValidationFailed as exc:
        context = _review_prompt_context(request, project, prompt, errors={label.pk: exc.message})
        return render(request, "labeling/review_prompt.html", context, status=400)
    who = label.annotator.get_username()
    messages.success(request, f"Rejected {who}’s label; the prompt goes back to the queue for another ranking."
                     if created else f"{who}’s label was already rejected.")
    return redirect(reverse("review_prompt", kwargs={"slug": project.slug, "prompt_id": prompt.pk})
                    + f"#label-{label.pk}")
