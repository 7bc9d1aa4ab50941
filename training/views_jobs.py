"""Pages of the snapshot and export jobs (admins): their progress (an htmx fragment polled every
JOB_POLL_SECONDS), errors and a cancel button. A snapshot job's page takes the browser to the
snapshot once it is done; an export job's page offers the download. HTTP only: the services
are training.snapshot_jobs and training.export_jobs."""
from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from studio.errors import Conflict, ValidationFailed
from studio.jobs import BrokerUnavailable
from studio.pages import studio_page
from training import export_jobs, selectors, snapshot_jobs
from training.exports import ExportOptions
from training.models import ExportJob, SnapshotJob

JOB_POLL_SECONDS = 2


def snapshot_job_done_message(request, job: SnapshotJob) -> None:
    snapshot = job.snapshot
    if job.created:
        messages.success(request, f"Snapshot {snapshot.short_hash} created.")
    else:
        messages.info(request, f"These labels are already frozen as snapshot {snapshot.short_hash}: "
                               "nothing changed since, so no new snapshot was made.")


# --- Snapshot jobs ----------------------------------------------------------------------------

def _snapshot_job(request, job_id: int) -> SnapshotJob:
    return snapshot_jobs.access_snapshot_job(user=request.user, job_id=job_id)


def _snapshot_job_context(job: SnapshotJob) -> dict:
    return {"job": job, "project": job.project, "poll_seconds": JOB_POLL_SECONDS,
            "progress_url": reverse("training:snapshot_job_progress", args=[job.pk]),
            "can_cancel": not job.is_finished}


def _cancel(request, job, cancel, kind: str, detail: str):
    """A job page's Cancel button: cancel through the service, say how it went, back to the page."""
    try:
        cancel(user=request.user, job=job)
        messages.success(request, f"{kind} job {job.pk} cancelled.")
    except Conflict as exc:
        messages.warning(request, str(exc))
    return redirect(detail, job_id=job.pk)


@studio_page
@require_http_methods(["GET"])
def snapshot_job_detail(request, job_id: int):
    job = _snapshot_job(request, job_id)
    if job.status == SnapshotJob.Status.SUCCEEDED and job.snapshot_id:
        snapshot_job_done_message(request, job)
        return redirect("training:snapshot_detail", sha256=job.snapshot_id)
    return render(request, "training/snapshot_job.html", _snapshot_job_context(job))


@studio_page
@require_http_methods(["GET"])
def snapshot_job_progress(request, job_id: int):
    """The fragment htmx polls; once the job has made its snapshot the browser goes there."""
    job = _snapshot_job(request, job_id)
    response = render(request, "training/_snapshot_job_progress.html", _snapshot_job_context(job))
    if job.status == SnapshotJob.Status.SUCCEEDED and job.snapshot_id and request.headers.get("HX-Request"):
        snapshot_job_done_message(request, job)
        response["HX-Redirect"] = reverse("training:snapshot_detail", args=[job.snapshot_id])
    elif job.is_finished and request.headers.get("HX-Request") and request.GET.get("was") == "live":
        response["HX-Refresh"] = "true"
    return response


@studio_page
@require_http_methods(["POST"])
def snapshot_job_cancel(request, job_id: int):
    job = _snapshot_job(request, job_id)
    return _cancel(request, job, snapshot_jobs.snapshot_job_cancel, "Snapshot", "training:snapshot_job_detail")


# --- Export jobs ------------------------------------------------------------------------------

def _export_job(request, job_id: int) -> ExportJob:
    return export_jobs.access_export_job(user=request.user, job_id=job_id)


def _export_job_context(job: ExportJob) -> dict:
    return {"job": job, "snapshot": job.snapshot, "project": job.snapshot.project, "poll_seconds": JOB_POLL_SECONDS,
            "progress_url": reverse("training:export_job_progress", args=[job.pk]),
            "download_url": export_jobs.export_download_url(job) if job.status == ExportJob.Status.SUCCEEDED else "",
            "can_cancel": not job.is_finished}


@studio_page
@require_http_methods(["GET"])
def export_start(request, sha256: str, export_format: str):
    """The snapshot page's link to an export built by a job (without JavaScript): the finished
    file is downloaded at once, else the job's page shows its progress."""
    snapshot = selectors.access_snapshot_for_export(user=request.user, sha256=sha256)
    try:
        options = ExportOptions.from_query(request.GET)
        job = export_jobs.export_job_for(user=request.user, snapshot=snapshot, format_name=export_format,
                                         options=options)
    except (ValidationFailed, BrokerUnavailable) as exc:
        messages.error(request, getattr(exc, "message", str(exc)))
        return redirect("training:snapshot_detail", sha256=snapshot.sha256)
    if job.status == ExportJob.Status.SUCCEEDED:
        return redirect(export_jobs.export_download_url(job))
    return redirect("training:export_job_detail", job_id=job.pk)


@studio_page
@require_http_methods(["GET"])
def export_job_detail(request, job_id: int):
    job = _export_job(request, job_id)
    return render(request, "training/export_job.html", _export_job_context(job))


@studio_page
@require_http_methods(["GET"])
def export_job_progress(request, job_id: int):
    """The fragment htmx polls; once the export is built the page reloads to offer it."""
    job = _export_job(request, job_id)
    response = render(request, "training/_export_job_progress.html", _export_job_context(job))
    if job.is_finished and request.headers.get("HX-Request") and request.GET.get("was") == "live":
        response["HX-Refresh"] = "true"
    return response


@studio_page
@require_http_methods(["POST"])
def export_job_cancel(request, job_id: int):
    job = _export_job(request, job_id)
    return _cancel(request, job, export_jobs.export_job_cancel, "Export", "training:export_job_detail")
