"""Using a reward model: evaluate it on a snapshot (a job) and score answers (at once).

    model_evaluation_create   admins: a reward model, a snapshot, a split -> queued on `default`
    model_evaluation_execute  on a worker: pairwise accuracy (ties excluded) with its 95% interval,
                              pairs scored, pairs identical after truncation, accuracy per source
    model_score               reviewers and admins: scores of candidate answers to one prompt

Both read prompts and answers exactly as the model was trained on them (the same renderer and
the same truncation limits, taken from the model's training config).
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import transaction

from labeling.validation import check_documents, check_messages, check_text
from modelhub.loading import FORMAT_PEFT, ModelLoadError, load_reward_cached
from modelhub.models import ModelArtifact
from modelhub.registry import model_resolve_path
from studio import jobs
from studio.errors import PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, REVIEWER, has_role
from training.ml.config import RewardConfig
from training.models import DatasetSnapshot, ModelEvaluation
from training.snapshots import snapshot_read_rows

MAX_SCORED_CANDIDATES = 16


def _check_reward_model(model: ModelArtifact) -> None:
    if model.kind != ModelArtifact.Kind.REWARD:
        raise ValidationFailed(f"{model.name} is a {model.get_kind_display().lower()}, not a reward model: only "
                               "reward models score answers.", {"model": ["Not a reward model."]})


def reward_limits(model: ModelArtifact) -> dict:
    """The truncation limits and label choice the model was trained with (the defaults for an
    imported reward model)."""
    trained = (model.config or {}).get("training") or {}
    defaults = RewardConfig()
    return {"max_length": int(trained.get("max_length", defaults.max_length)),
            "max_response_tokens": int(trained.get("max_response_tokens", defaults.max_response_tokens)),
            "labels": trained.get("labels", defaults.labels)}


def _load(model: ModelArtifact):
    path = model_resolve_path(model=model)
    base_path = model_resolve_path(model=model.parent) if model.format == FORMAT_PEFT and model.parent else None
    try:
        return load_reward_cached(path, format=model.format, base_path=base_path,
                                  device=getattr(settings, "STUDIO_DEVICE", "") or None)
    except ModelLoadError as exc:
        raise jobs.JobFailure(f"Reward model {model.name} (id {model.pk}) could not be loaded: {exc}") from exc


# --- Evaluations ------------------------------------------------------------------------------

def model_evaluation_create(*, user, model: ModelArtifact, snapshot, split: str = "validation") -> ModelEvaluation:
    """An admin asks for a reward model's accuracy on a snapshot's split; published to `default`.
    `user` None is the command line (manage.py model_evaluate)."""
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can start evaluations.")
    _check_reward_model(model)
    if split not in ModelEvaluation.Split.values:
        raise ValidationFailed(f"split must be one of {', '.join(ModelEvaluation.Split.values)}.",
                               {"split": ["Unknown split."]})
    if not isinstance(snapshot, DatasetSnapshot):
        found = DatasetSnapshot.objects.filter(sha256=str(snapshot or "").lower()).first()
        if found is None:
            raise ValidationFailed(f"No snapshot {snapshot!r}.", {"snapshot": [f"No snapshot {snapshot!r}."]})
        snapshot = found
    if not snapshot.file_path.exists():
        raise ValidationFailed(f"The file of snapshot {snapshot.short_hash} is missing from the data directory.",
                               {"snapshot": ["File missing."]})
    with transaction.atomic():
        evaluation = ModelEvaluation.objects.create(model=model, snapshot=snapshot, split=split, created_by=user,
                                                    celery_task_id=str(uuid.uuid4()))
    jobs.job_enqueue(job=evaluation)
    return evaluation


def model_evaluation_execute(*, evaluation_id: int, worker: str = "") -> ModelEvaluation | None:
    return jobs.job_run(model=ModelEvaluation, job_id=evaluation_id, worker=worker, body=_evaluate,
                        select_related=("model", "model__parent", "snapshot"))


def model_evaluations_recover(*, worker_prefix: str = "") -> list[int]:
    return jobs.jobs_recover(model=ModelEvaluation, worker_prefix=worker_prefix)


def _evaluate(evaluation: ModelEvaluation) -> None:
    from training.ml.data import reward_groups
    from training.ml.reward import reward_evaluate

    model, snapshot = evaluation.model, evaluation.snapshot
    _check_reward_model(model)
    if not snapshot.file_path.exists():
        raise jobs.JobFailure(f"The file of snapshot {snapshot.short_hash} is missing from the data directory.")
    beat = jobs.Heartbeat(evaluation)
    loaded = _load(model)
    limits = reward_limits(model)
    groups, stats = reward_groups(snapshot_read_rows(snapshot=snapshot), loaded.tokenizer, split=evaluation.split,
                                  max_length=limits["max_length"], max_response_tokens=limits["max_response_tokens"],
                                  labels=limits["labels"])
    if not groups:
        raise jobs.JobFailure(f"The snapshot's {evaluation.get_split_display().lower()} has no ranked pairs to "
                              "evaluate on.")
    beat(force=True, device=str(loaded.device)[:40])

    def progress(done: int, total: int) -> None:
        beat(batches_done=done, batches_total=total)

    results = reward_evaluate(loaded.model, groups, pad_id=loaded.tokenizer.pad_token_id, device=loaded.device,
                              progress=progress)
    results.update({
        "identical_pairs": stats.identical_pairs, "truncated_prompts": stats.truncated_prompts,
        "truncated_responses": stats.truncated_responses, "max_length": limits["max_length"],
        # Accuracy on labels the model learnt from says little about new ones.
        "overlaps_training": snapshot.pk == getattr(model.snapshot, "pk", None) and (
            evaluation.split != "validation" or not (model.config or {}).get("held_out", True)),
    })
    jobs.job_finish(evaluation, status=ModelEvaluation.Status.SUCCEEDED, accuracy=results["accuracy"],
                    results=results, batches_done=evaluation.batches_total or 1)


# --- Scores -----------------------------------------------------------------------------------

def model_score(*, user, model: ModelArtifact, messages, candidates, documents=None) -> list[float]:
    """One score per candidate answer to the prompt `messages` (+ reference documents), each
    shifted by the model's offset (0 = as good as the training split's best answers)."""
    import torch

    from training.ml.prompting import encode_response, render_chat
    from training.ml.data import cap_response, fit_prompt
    from training.ml.models import score_shared_prefix

    if not has_role(user, REVIEWER):
        raise PermissionDeniedError("Only reviewers and admins can score answers.")
    _check_reward_model(model)
    messages = check_messages(messages)
    documents = check_documents(documents or [])
    if not isinstance(candidates, list) or not 1 <= len(candidates) <= MAX_SCORED_CANDIDATES:
        raise ValidationFailed(f"candidates must be a list of 1 to {MAX_SCORED_CANDIDATES} answers.",
                               {"candidates": [f"1 to {MAX_SCORED_CANDIDATES} answers."]})
    texts = [check_text(c, field=f"candidates[{i}]") for i, c in enumerate(candidates)]
    try:
        chat = render_chat(messages, documents)
    except ValueError as exc:
        raise ValidationFailed(str(exc), {"messages": [str(exc)]}) from exc
    try:
        loaded = _load(model)
    except jobs.JobFailure as exc:
        raise ValidationFailed(str(exc)) from exc
    limits = reward_limits(model)
    answers = [cap_response(encode_response(loaded.tokenizer, t), limits["max_response_tokens"])[0] for t in texts]
    prompt, _ = fit_prompt(loaded.tokenizer, chat, limits["max_length"] - max(len(a) for a in answers))
    with torch.no_grad():
        scores = score_shared_prefix(loaded.model, [prompt], [answers], pad_id=loaded.tokenizer.pad_token_id)
    return [round(float(s) - loaded.offset, 4) for s in scores]
