"""Exports that are built as jobs (studio.jobs): `hf` builds a `datasets` dataset on disk before
a byte of it can be sent, which for a big snapshot takes longer than a web request should. A
worker of the `default` queue writes it to DATA_DIR/exports/hf/<sha256>/<job id>.tar, and every
later request for the same export (same snapshot, format and options) is served that file.
The other formats are constant-memory streams: the API sends them directly.

    export_job_for      admins: the finished job of this export, else the one queued or running,
                        else a new one (published; broker down: BrokerUnavailable)
    export_job_execute  on a worker: builds the archive with progress (rows read, then the
                        dataset saved, then the archive written)
    export_job_cancel   admins: stops it at its next heartbeat; nothing is left behind
    export_jobs_recover a worker that starts re-queues the jobs a killed worker left behind;
                        they start over
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from studio import jobs
from studio.errors import NotFound, PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, has_role
from training.exports import ExportOptions, export_context, export_format, export_rows, export_stream, hf
from training.models import DatasetSnapshot, ExportJob

Status = ExportJob.Status
Phase = ExportJob.Phase
EXPORT_DIR = "exports"  # under settings.DATA_DIR
# Formats whose export is built by a job (the others are streamed).
JOB_FORMATS = {"hf": hf}


def _check_admin(user) -> None:
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can export datasets.")


def export_is_job(format_name: str) -> bool:
    return format_name in JOB_FORMATS


def export_options_normalise(*, format_name: str, options: ExportOptions) -> ExportOptions:
    """The options as the job stores them (a bad value is refused here, before anything is
    queued): `rows` spelt out, so that the default and its explicit name are the same export."""
    export_format(format_name)  # NotFound for an unknown format
    if format_name not in JOB_FORMATS:
        raise ValidationFailed(f"The {format_name} export is streamed: GET it. Only "
                               f"{', '.join(JOB_FORMATS)} is built by a job.", {"format": ["Not a job export."]})
    return replace(options, rows=JOB_FORMATS[format_name].check_options(options))


def export_options_key(options: ExportOptions) -> str:
    return json.dumps(asdict(options), sort_keys=True, separators=(",", ":"))


def _finished_job(snapshot: DatasetSnapshot, format_name: str, key: str) -> ExportJob | None:
    done = ExportJob.objects.filter(snapshot=snapshot, format=format_name, options_key=key,
                                    status=Status.SUCCEEDED).exclude(path="").order_by("-id")
    for job in done[:5]:
        if job.file_path.is_file():
            return job
    return None


def export_job_for(*, user, snapshot: DatasetSnapshot, format_name: str, options: ExportOptions) -> ExportJob:
    """The export of `snapshot` as `format_name` with `options`: its finished job when the file
    is there (status succeeded), else the job queued or running for it, else a new job, queued
    and published to the `default` queue. Must not run inside a transaction: the worker has to
    see the committed row."""
    _check_admin(user)
    options = export_options_normalise(format_name=format_name, options=options)
    if not snapshot.file_path.exists():
        raise ValidationFailed(f"The file of snapshot {snapshot.short_hash} is missing from the data directory.",
                               {"snapshot": ["File missing."]})
    key = export_options_key(options)
    finished = _finished_job(snapshot, format_name, key)
    if finished is not None:
        return finished
    live = ExportJob.objects.filter(snapshot=snapshot, format=format_name, options_key=key,
                                    status__in=[Status.QUEUED, Status.RUNNING]).order_by("-id").first()
    if live is not None:
        return live
    # export_stream only names the export here: its chunks are built when first read, never here.
    filename = export_stream(snapshot=snapshot, format_name=format_name, options=options).filename
    job = ExportJob.objects.create(snapshot=snapshot, format=format_name, options=asdict(options), options_key=key,
                                   filename=filename, created_by=user, celery_task_id=str(uuid.uuid4()))
    jobs.job_enqueue(job=job)
    return job


def export_download_url(job: ExportJob) -> str:
    """The GET that serves a job's export: the export URL with the job's options."""
    defaults = ExportOptions()
    query = {name: ("1" if value is True else value) for name, value in job.options.items()
             if value not in (getattr(defaults, name, None), False, "", None)}
    url = reverse("api-snapshot-export", args=[job.snapshot_id, job.format])
    return f"{url}?{urlencode(sorted(query.items()))}" if query else url


def access_export_job(*, user, job_id: int) -> ExportJob:
    """An export job by its id, for admins (who alone export)."""
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can export datasets.")
    job = ExportJob.objects.select_related("snapshot", "snapshot__project", "created_by").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No export job with id {job_id}.")
    return job


def export_job_cancel(*, user, job: ExportJob) -> ExportJob:
    _check_admin(user)
    return jobs.job_cancel(job=job)


def export_jobs_recover(*, worker_prefix: str = "") -> list[int]:
    return jobs.jobs_recover(model=ExportJob, worker_prefix=worker_prefix)


# --- Run (on a worker) ------------------------------------------------------------------------

def export_job_execute(*, job_id: int, worker: str = "") -> ExportJob | None:
    return jobs.job_run(model=ExportJob, job_id=job_id, worker=worker, body=_export,
                        select_related=("snapshot", "snapshot__project"))


def _counted(rows, beat: jobs.Heartbeat):
    done = 0
    for row in rows:
        done += 1
        beat(rows_done=done)
        yield row


def _export(job: ExportJob) -> None:
    snapshot = job.snapshot
    module = JOB_FORMATS.get(job.format)
    if module is None:
        raise jobs.JobFailure(f"The {job.format} export is not built by a job.")
    if not snapshot.file_path.exists():
        raise jobs.JobFailure(f"The file of snapshot {snapshot.short_hash} is missing from the data directory.")
    try:
        options = ExportOptions(**job.options)
        kind = module.check_options(options)
    except (TypeError, ValidationFailed) as exc:
        raise jobs.JobFailure(f"Bad export options {job.options}: {getattr(exc, 'message', exc)}") from exc
    split = snapshot.split or {}
    total = int(split.get(options.split, 0)) if options.split else int((snapshot.counts or {}).get("prompts", 0))
    beat = jobs.Heartbeat(job)
    beat(force=True, phase=Phase.ROWS, rows_total=total, rows_done=0)
    directory = Path(settings.DATA_DIR) / EXPORT_DIR / job.format / snapshot.sha256
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{job.pk}.{export_format(job.format).extension}"
    tmp = directory / f".tmp-{job.pk}-{uuid.uuid4().hex}"
    rows = _counted(export_rows(snapshot=snapshot, options=options), beat)
    chunks = module.tar_chunks(rows, context=export_context(snapshot), options=options, kind=kind,
                               on_phase=lambda phase: beat(force=True, phase=phase))
    size = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
                beat()  # looks for a cancel while the archive is written
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        chunks.close()  # removes the build directory now, not when the generator is collected
        tmp.unlink(missing_ok=True)
        raise
    jobs.job_finish(job, status=Status.SUCCEEDED, path=str(target.relative_to(Path(settings.DATA_DIR))),
                    size_bytes=size, phase=Phase.DONE, rows_done=total)
