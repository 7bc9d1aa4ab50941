"""Reads of dataset snapshots with the role rules applied.

Who sees what: admins create and export snapshots (exports carry every label, so they are
admin work like the rest of training). Reviewers may list snapshots and read their metadata
(hash, filters, counts): they already see every label of a project, and knowing which snapshot
trained which model is part of reviewing the loop; they may not download exports. Annotators
see none of it (blind labelling: a snapshot's counts describe other people's work).
"""
from __future__ import annotations

import re

from django.db.models import QuerySet

from labeling.models import Project
from studio.errors import NotFound, PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, REVIEWER, has_role
from training.models import DatasetSnapshot, ModelEvaluation, TrainingMetric, TrainingRun

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_reviewer(user) -> None:
    if not has_role(user, REVIEWER):
        raise PermissionDeniedError("Only reviewers and admins can see dataset snapshots.")


def snapshot_list(*, user, project: Project) -> QuerySet[DatasetSnapshot]:
    _check_reviewer(user)
    return project.snapshots.select_related("created_by", "project").order_by("-id")


def access_snapshot(*, user, sha256: str) -> DatasetSnapshot:
    """A snapshot by its hash for reviewers and admins (NotFound for an unknown hash, and for a
    snapshot of an archived project unless the caller is an admin)."""
    _check_reviewer(user)
    snapshot = DatasetSnapshot.objects.select_related("project", "created_by").filter(sha256=sha256.lower()).first()
    if snapshot is None or (snapshot.project.is_archived and not has_role(user, ADMIN)):
        raise NotFound(f"No snapshot {sha256}.")
    return snapshot


def access_snapshot_for_export(*, user, sha256: str) -> DatasetSnapshot:
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can export datasets.")
    return access_snapshot(user=user, sha256=sha256)


def snapshot_by_hash_prefix(prefix: str) -> DatasetSnapshot:
    """For the command line (no user): a full hash or an unambiguous prefix of 8+ characters."""
    prefix = prefix.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
        raise ValidationFailed("Give the snapshot's sha256 (or its first 8+ hex characters).")
    matches = list(DatasetSnapshot.objects.select_related("project").filter(sha256__startswith=prefix)[:2])
    if not matches:
        raise NotFound(f"No snapshot {prefix}.")
    if len(matches) > 1:
        raise ValidationFailed(f"{prefix} is the start of several snapshots' hashes; give more of it.")
    return matches[0]


# --- Training runs and evaluations ------------------------------------------------------------
#
# Runs are admin work like the rest of training (annotators and reviewers get 403); a model's
# evaluations are read by reviewers too, like the model itself.

def _check_admin(user) -> None:
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can see training runs.")


def training_run_list(*, user, project: Project | None = None) -> QuerySet[TrainingRun]:
    _check_admin(user)
    runs = TrainingRun.objects.select_related("project", "base_model", "snapshot", "model", "created_by")
    return (runs.filter(project=project) if project is not None else runs).order_by("-id")


def access_training_run(*, user, run_id: int) -> TrainingRun:
    _check_admin(user)
    run = TrainingRun.objects.select_related("project", "base_model", "snapshot", "model", "created_by").filter(
        pk=run_id).first()
    if run is None:
        raise NotFound(f"No training run with id {run_id}.")
    return run


def training_run_metrics(*, run: TrainingRun, after=None) -> QuerySet[TrainingMetric]:
    rows = run.metric_rows.order_by("step", "split")
    if after not in (None, ""):
        try:
            rows = rows.filter(step__gt=int(after))
        except (TypeError, ValueError) as exc:
            raise ValidationFailed("after must be a step number.", {"after": ["An integer."]}) from exc
    return rows


def model_evaluation_list(*, user, model) -> QuerySet[ModelEvaluation]:
    _check_reviewer(user)
    return model.evaluations.select_related("snapshot", "created_by").order_by("-id")


def access_model_evaluation(*, user, model, evaluation_id: int) -> ModelEvaluation:
    _check_reviewer(user)
    evaluation = model.evaluations.filter(pk=evaluation_id).first()
    if evaluation is None:
        raise NotFound(f"Model {model.pk} has no evaluation {evaluation_id}.")
    return evaluation
