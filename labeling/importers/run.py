"""Imports as jobs (studio.jobs): the upload is written to disk, and a worker reads it row by row.

    import_run_create      admins: the upload is streamed to DATA_DIR/imports/ (hashed as it is
                           written), the run saved "queued" and published to the `default` queue
                           (broker down: the run is marked failed and BrokerUnavailable raised)
    import_run_in_process  the same run, claimed and executed in this process: for callers that
                           wait for the result (manage.py import_data, the demo bootstrap)
    import_run_execute     on a worker: claims the run and imports the file's rows
    import_run_cancel      admins: stops it at its next row; the rows already written stay
    import_runs_recover    a worker that starts re-queues the runs a killed worker left behind

Each good row is written in its own transaction (a bad row rolls back alone), and that
transaction also saves the run's checkpoint: rows read, counts, bad rows. A worker killed in
the middle of a file is restarted and resumes after the last committed row, so the counts are
exact; and the writes find rows an earlier import made by their external ids, so importing the
same file again creates nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from labeling.importers.base import ImportContext, Importer, RowResult
from labeling.importers.formats import IMPORT_FORMATS
from labeling.importers.readers import HashingReader
from labeling.models import ImportRun, Project
from studio import jobs
from studio.errors import NotFound, PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, has_role
from studio.services import imported_annotator

log = logging.getLogger(__name__)

COUNT_KEYS = ("rows", "prompts", "demonstrations", "candidates", "rankings", "unchanged")
# The run keeps the first bad rows' messages; a file that is wrong throughout (the wrong format
# chosen) would otherwise store one message per line.
MAX_REPORTED_ERRORS = 1000
IMPORT_DIR = "imports"  # under settings.DATA_DIR: uploads waiting for (or being read by) their import
COPY_CHUNK_BYTES = 1 << 20

Status = ImportRun.Status


# --- The upload -------------------------------------------------------------------------------

def import_upload_save(*, stream) -> tuple[str, int, str]:
    """Copy a binary (or text) stream to DATA_DIR/imports/ a chunk at a time, hashing it on the
    way: (path relative to DATA_DIR, size in bytes, sha256). An upload of 64 MiB is never held
    in memory."""
    directory = Path(settings.DATA_DIR) / IMPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}.upload"
    tmp = directory / f".tmp-{name}"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := stream.read(COPY_CHUNK_BYTES):
                if isinstance(chunk, str):  # a text-mode stream: what it would be on disk
                    chunk = chunk.encode()
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return f"{IMPORT_DIR}/{name}", size, digest.hexdigest()


def _upload_path(run: ImportRun) -> Path | None:
    return Path(settings.DATA_DIR) / run.path if run.path else None


def _upload_delete_if_finished(run_id: int) -> None:
    """A finished run's upload is of no more use: delete it (a queued or running one keeps it)."""
    run = ImportRun.objects.filter(pk=run_id).only("id", "status", "path").first()
    if run is None or not run.is_finished or not run.path:
        return
    _upload_path(run).unlink(missing_ok=True)
    ImportRun.objects.filter(pk=run_id).update(path="")


# --- Create, cancel, recover ------------------------------------------------------------------

def _check(*, user, format: str) -> Importer:
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can import data.")
    importer = IMPORT_FORMATS.get(format)
    if importer is None:
        msg = f"Unknown import format {format!r}; use one of {', '.join(IMPORT_FORMATS)}."
        raise ValidationFailed(msg, {"format": [msg]})
    return importer


def _run_new(*, project: Project, user, stream, filename: str, format: str) -> ImportRun:
    importer = _check(user=user, format=format)
    path, size, sha256 = import_upload_save(stream=stream)
    try:
        return ImportRun.objects.create(
            project=project, format=importer.name, filename=(filename or "")[:500], file_sha256=sha256, path=path,
            size_bytes=size, counts=dict.fromkeys(COUNT_KEYS, 0), created_by=user, celery_task_id=str(uuid.uuid4()),
        )
    except BaseException:
        (Path(settings.DATA_DIR) / path).unlink(missing_ok=True)
        raise


def import_run_create(*, project: Project, user, stream, filename: str, format: str) -> ImportRun:
    """An admin imports a file (`stream`, binary) into `project`: the file is saved, the run
    queued and published to the `default` queue. Must not run inside a transaction: the worker
    has to see the committed row. Raises BrokerUnavailable (the run is then failed) when the
    task cannot be published; nothing runs inline."""
    run = _run_new(project=project, user=user, stream=stream, filename=filename, format=format)
    try:
        jobs.job_enqueue(job=run)
    finally:
        _upload_delete_if_finished(run.pk)  # a run failed for want of a broker keeps no file
    return run


def import_run_in_process(*, project: Project, user, stream, filename: str, format: str) -> ImportRun:
    """The same import run in this process, for a caller that waits for it (the import_data
    command, the demo bootstrap); `user` None is the system. Returns the finished run."""
    run = _run_new(project=project, user=user, stream=stream, filename=filename, format=format)
    try:
        return import_run_execute(run_id=run.pk, worker=jobs.worker_id("in-process"))
    except KeyboardInterrupt:
        # Ctrl-C: the rows written so far stay, and no worker picks the run up later.
        ImportRun.objects.filter(pk=run.pk, status__in=[Status.QUEUED, Status.RUNNING]).update(
            status=Status.CANCELLED, finished_at=timezone.now(), eta_seconds=None)
        _upload_delete_if_finished(run.pk)
        raise


def import_run_cancel(*, user, run: ImportRun) -> ImportRun:
    """Stop a queued or running import (admins). Rows already written stay; a running import
    stops at its next row."""
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can cancel imports.")
    run = jobs.job_cancel(job=run)
    _upload_delete_if_finished(run.pk)
    return run


def import_runs_recover(*, worker_prefix: str = "") -> list[int]:
    """Re-queue imports whose worker is gone (studio.jobs.jobs_recover); they resume after their
    checkpoint."""
    return jobs.jobs_recover(model=ImportRun, worker_prefix=worker_prefix)


def access_import(*, user, run_id: int) -> ImportRun:
    """An import by its id, for admins (imports are admin work, like labeling.selectors'
    import_run_list)."""
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can see imports.")
    run = ImportRun.objects.select_related("project", "created_by").filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"No import with id {run_id}.")
    return run


# --- Run (on a worker) ------------------------------------------------------------------------

def import_run_execute(*, run_id: int, worker: str = "") -> ImportRun | None:
    """Claim the run and import its file (or resume it after its checkpoint). The upload is
    deleted once the run has finished, however it finished."""
    try:
        run = jobs.job_run(model=ImportRun, job_id=run_id, worker=worker, body=_import,
                           select_related=("project", "created_by"))
    finally:
        _upload_delete_if_finished(run_id)
    if run is not None:
        run.refresh_from_db(fields=["path"])
    return run


class _CountingReader(HashingReader):
    """The importers' reader, counting the bytes it has handed out (the run's progress)."""

    bytes_read = 0

    def _take(self, data) -> bytes:
        data = super()._take(data)
        self.bytes_read += len(data)
        return data


@dataclass
class _State:
    """What the run has done so far: saved with every committed row (the checkpoint)."""

    rows_read: int = 0  # rows the reader has handed out: good, bad and whole-file problems alike
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    errors: list = field(default_factory=list)
    bad_rows: int = 0
    unlisted: int = 0  # problems beyond MAX_REPORTED_ERRORS
    errors_saved: int = 0  # len(errors) at the last save: the list is written only when it grew

    @classmethod
    def of(cls, run: ImportRun) -> _State:
        counts = {**dict.fromkeys(COUNT_KEYS, 0), **(run.counts or {})}
        errors = list(run.errors or [])
        listed_rows = sum(1 for e in errors if e.get("line"))
        return cls(rows_read=run.rows_read, counts=counts, errors=errors, bad_rows=run.bad_rows,
                   unlisted=max(0, run.bad_rows - listed_rows), errors_saved=len(errors))

    def problem(self, *, importer: Importer, position: int, message: str) -> None:
        if position:
            self.bad_rows += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            if position and importer.unit == "item":
                message = f"item {position}: {message}"
            self.errors.append({"line": position, "message": message})
        else:
            self.unlisted += 1

    def with_row(self, result: RowResult) -> _State:
        """The state once this good row is committed (the row's transaction saves it)."""
        counts = dict(self.counts)
        counts["prompts"] += result.prompts
        counts["demonstrations"] += result.demonstrations
        counts["candidates"] += result.candidates
        counts["rankings"] += result.rankings
        counts["unchanged"] += not result.created_anything
        return _State(rows_read=self.rows_read, counts=counts, errors=self.errors, bad_rows=self.bad_rows,
                      unlisted=self.unlisted, errors_saved=self.errors_saved)

    @property
    def good_rows(self) -> int:
        return self.counts["rows"] - self.bad_rows


class _Checkpoint:
    """Saves the run's state with its heartbeat, only while this worker holds the run: the
    update says whether the run was cancelled meanwhile, or taken by another worker (this one
    was silent too long), and the caller stops."""

    OK, CANCELLED, LOST = "ok", "cancelled", "lost"

    def __init__(self, run: ImportRun, reader: _CountingReader):
        self.run = run
        self.reader = reader
        self.started = time.monotonic()
        self.bytes_at_start = run.bytes_done
        self.last = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self.last >= jobs.HEARTBEAT_SECONDS

    def save(self, state: _State) -> str:
        now = timezone.now()
        done = min(self.reader.bytes_read, self.run.size_bytes)
        fields = {"rows_read": state.rows_read, "counts": state.counts, "bad_rows": state.bad_rows,
                  "bytes_done": max(done, self.run.bytes_done)}
        if len(state.errors) != state.errors_saved:
            fields["errors"] = list(state.errors)
        elapsed = time.monotonic() - self.started
        eta = None
        if elapsed >= 1 and done > self.bytes_at_start:
            eta = round((self.run.size_bytes - done) * elapsed / (done - self.bytes_at_start), 1)
        updated = ImportRun.objects.filter(pk=self.run.pk, status=Status.RUNNING, worker=self.run.worker).update(
            heartbeat_at=now, updated_at=now, eta_seconds=eta, **fields)
        self.last = time.monotonic()
        if updated:
            state.errors_saved = len(state.errors)
            return self.OK
        if ImportRun.objects.filter(pk=self.run.pk, status=Status.CANCELLED).exists():
            # What was written stays: so do its counts (the status stays "cancelled").
            ImportRun.objects.filter(pk=self.run.pk).update(**fields)
            return self.CANCELLED
        return self.LOST


def _row_write(*, importer: Importer, context: ImportContext, data, state: _State,
               checkpoint: _Checkpoint) -> tuple[_State, str]:
    """Write one row and the checkpoint after it in one transaction: a bad row rolls back alone,
    and a killed worker's successor resumes right after the last row that was committed."""

    def write() -> tuple[_State, str]:
        with transaction.atomic():
            after = state.with_row(importer.write_row(context=context, row=data))
            outcome = checkpoint.save(after)
            if outcome == _Checkpoint.LOST:
                raise jobs.JobCancelled()  # another worker holds the run now: leave this row to it
            return after, outcome

    try:
        return write()
    except IntegrityError:
        # Another import of the same file committed this row between our lookup and our insert;
        # a second pass finds its objects and reports the row as unchanged.
        return write()


def _import(run: ImportRun) -> None:
    importer = IMPORT_FORMATS.get(run.format)
    if importer is None:
        raise jobs.JobFailure(f"Unknown import format {run.format!r}; use one of {', '.join(IMPORT_FORMATS)}.")
    path = _upload_path(run)
    if path is None or not path.exists():
        raise jobs.JobFailure("The uploaded file of this import is no longer in the data directory "
                              f"({IMPORT_DIR}/); upload it again.")
    state = _State.of(run)
    skip = state.rows_read  # a resumed run: these rows were done (and saved) by its predecessor
    if skip:
        ImportRun.objects.filter(pk=run.pk).update(resumes=F("resumes") + 1)
        log.info("%s resumes after row %s of %s.", run.title, skip, run.filename)
    context = ImportContext(project=run.project, user=run.created_by, format=importer.name,
                            annotator=imported_annotator())
    with open(path, "rb") as stream:
        reader = _CountingReader(stream)
        checkpoint = _Checkpoint(run, reader)
        for index, raw in enumerate(importer.read_rows(reader), start=1):
            if index <= skip:
                continue
            state.rows_read = index
            if raw.position:
                state.counts["rows"] += 1
            message = raw.error
            if message is None:
                try:
                    state, outcome = _row_write(importer=importer, context=context, data=raw.data, state=state,
                                                checkpoint=checkpoint)
                except ValidationFailed as exc:
                    message = exc.message
                else:
                    if outcome == _Checkpoint.CANCELLED:
                        raise jobs.JobCancelled()
                    continue
            state.problem(importer=importer, position=raw.position, message=message)
            if checkpoint.due() and checkpoint.save(state) != _Checkpoint.OK:
                raise jobs.JobCancelled()
        bytes_total = reader.bytes_read

    if state.unlisted:
        state.errors.append({"line": 0, "message": f"{state.unlisted} more bad rows are not listed."})
    if state.counts["rows"] == 0 and not state.errors:
        state.errors.append({"line": 0, "message": "The file has no rows."})
    result = {"counts": state.counts, "errors": state.errors, "bad_rows": state.bad_rows,
              "rows_read": state.rows_read, "bytes_done": max(bytes_total, run.bytes_done)}
    if state.errors and state.good_rows == 0:
        run.errors = state.errors
        first = import_run_error_lines(run=run)[0]
        jobs.job_finish(run, status=Status.FAILED, error=f"Nothing could be imported from {run.filename} as "
                                                           f"{run.format}; the first problem: {first}", **result)
    else:
        jobs.job_finish(run, status=Status.SUCCEEDED, **result)


def import_run_error_lines(*, run: ImportRun) -> list[str]:
    """Each error of a run as one line for people: "line 3: …", "item 3: …", or the message
    alone when it is about the whole file."""
    importer = IMPORT_FORMATS.get(run.format)
    lines = []
    for error in run.errors:
        if not error["line"] or (importer is not None and importer.unit == "item"):
            lines.append(error["message"])  # item errors already say "item N: "
        else:
            lines.append(f"line {error['line']}: {error['message']}")
    return lines
