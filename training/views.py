"""Dataset snapshot pages: HTTP only. A project's snapshots page (list; admins also create
with filters) and a snapshot's page (counts, filters, split; admins export in every format).
Downloads go through the API's streamed export endpoint (the session authenticates it)."""
from __future__ import annotations


from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from labeling.selectors import access_project
from studio.errors import PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, has_role
from studio.pages import studio_page
from studio.jobs import BrokerUnavailable
from training import selectors, snapshot_jobs, snapshots
from training.export_jobs import export_is_job
from training.views_jobs import snapshot_job_done_message
from training.exports import EXPORT_FORMATS, ExportOptions, export_expected_rows
from training.forms import SnapshotForm

@studio_page
@require_http_methods(["GET", "POST"])
def snapshot_list(request, slug: str):
    project = access_project(user=request.user, slug=slug)
    snapshot_rows = selectors.snapshot_list(user=request.user, project=project)  # reviewers and admins
    # Admins also see the snapshot jobs still going, and the ones that failed or were cancelled today.
    snapshot_job_rows = (snapshot_jobs.snapshot_job_list_unfinished(project=project)
                         if has_role(request.user, ADMIN) else [])
    form = SnapshotForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if not has_role(request.user, ADMIN):
            raise PermissionDeniedError("Only admins can create dataset snapshots.")
        if form.is_valid():
            # A snapshot job on a worker; the page waits for it a little (STUDIO_SNAPSHOT_WAIT_SECONDS),
            # then shows the snapshot, or the job's progress page when it takes longer.
            try:
                filters, split = snapshots.snapshot_spec_clean(form.spec_input())
                job = snapshot_jobs.snapshot_job_create(user=request.user, project=project, filters=filters,
                                                        split=split)
            except ValidationFailed as exc:
                form.add_error(None, exc.message)
            except BrokerUnavailable as exc:
                form.add_error(None, str(exc))
            else:
                job = snapshot_jobs.snapshot_job_wait(job=job)
                if job.status == job.Status.SUCCEEDED and job.snapshot_id:
                    snapshot_job_done_message(request, job)
                    return redirect("training:snapshot_detail", sha256=job.snapshot_id)
                return redirect("training:snapshot_job_detail", job_id=job.pk)
    return render(request, "training/snapshot_list.html",
                  {"project": project, "snapshots": snapshot_rows[:100], "form": form,
                   "jobs": snapshot_job_rows[:10]},
                  status=400 if form.errors else 200)


@studio_page
@require_http_methods(["GET"])
def snapshot_detail(request, sha256: str):
    snapshot = selectors.access_snapshot(user=request.user, sha256=sha256)
    options = ExportOptions()
    formats = [{"name": f.name, "description": f.description, "unit": f.unit,
                "expected": export_expected_rows(snapshot=snapshot, format_name=f.name, options=options),
                # Built by a job first (training.export_jobs): its page shows the progress.
                "is_job": export_is_job(f.name)}
               for f in EXPORT_FORMATS.values()]
    return render(request, "training/snapshot_detail.html", {
        "snapshot": snapshot, "project": snapshot.project, "formats": formats,
        "can_export": has_role(request.user, ADMIN),
        "file_ok": snapshot.file_path.exists(),
    })
