"""Writes for generation jobs: create (admins), enqueue, run (on a worker), cancel, recover.

A job's life (the lifecycle itself is every job's: studio.jobs):

    generation_job_create  -> row "queued", message published to the `generation` queue
                              (broker down: the row is marked failed and BrokerUnavailable raised;
                              a job never runs inline in the web process)
    generation_job_run     -> claims the row ("running", worker, heartbeat), loads the model, and
                              samples the prompts in chunks; after each chunk `_chunk_save` writes
                              the chunk's candidates and the job's progress in one transaction
    generation_job_cancel  -> "cancelled"; the worker sees it within a few seconds and stops
    generation_jobs_recover-> a restarted worker re-queues the jobs its killed predecessor held

Idempotence: the candidate for slot i of a prompt has external_id "job<id>-k<i>", unique per
prompt, and its seed derives from (job seed, prompt id, slot). A resumed job samples only the
slots that have no candidate yet, with the same seeds, so a killed and restarted job ends with
exactly K candidates per prompt: none twice, none missing.
"""
from __future__ import annotations

import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from itertools import product

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from labeling.models import Candidate, Project, Prompt, Source
from modelhub import safety
from training.ml import sampling
from modelhub.loading import FORMAT_PEFT, ModelLoadError, load_cached
from modelhub.models import GenerationJob, ModelArtifact
from modelhub.registry import model_resolve_path
from modelhub.selectors import project_generator_model
from studio import jobs
from studio.errors import PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, has_role

log = logging.getLogger(__name__)

Status = GenerationJob.Status

HEARTBEAT_SECONDS = jobs.HEARTBEAT_SECONDS  # how often a running job reports (and looks for a cancel) mid-batch
STALE_AFTER = GenerationJob.stale_after  # a running job silent this long has lost its worker
MAX_PROMPTS_PER_JOB = 10000

# The lifecycle's exceptions, under the names this module's callers know.
BrokerUnavailable = jobs.BrokerUnavailable
JobFailure = jobs.JobFailure
JobCancelled = jobs.JobCancelled


def _check_admin(user) -> None:
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can start or cancel generation jobs.")


# --- Sampling plan ---------------------------------------------------------------------------

def slot_params(*, generation_settings: dict, slot: int) -> dict:
    """The parameters of the `slot`-th candidate of every prompt: slots walk through every
    (template, temperature) pair of the project's settings, so K candidates mix strategies and
    temperatures evenly (two temperatures, one template, K=3 -> 0.7, 1.0, 0.7)."""
    combos = list(product(generation_settings["prompt_templates"], generation_settings["temperatures"]))
    template, temperature = combos[slot % len(combos)]
    return {
        "template": template,
        "temperature": float(temperature),
        "top_p": float(generation_settings["top_p"]),
        "max_new_tokens": int(generation_settings["max_new_tokens"]),
    }


def check_job_settings(value: dict) -> dict:
    """The sampling settings a job can run with; raises JobFailure with what is wrong."""
    from labeling.validation import check_generation_settings

    try:
        cleaned = check_generation_settings(value)
    except ValidationFailed as exc:
        raise JobFailure(f"Bad generation settings: {exc.message}") from exc
    unknown = [t for t in cleaned["prompt_templates"] if t not in sampling.PROMPT_TEMPLATES]
    if unknown:
        raise JobFailure(f"Bad generation settings: unknown prompt template(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(sampling.PROMPT_TEMPLATES))}.")
    return cleaned


def _seed_for(job: GenerationJob, prompt_id: int, slot: int) -> int:
    return sampling.derive_seed(job.seed, prompt_id, slot)


def _slot_of(external_id: str) -> int | None:
    _, _, tail = external_id.rpartition("-k")
    return int(tail) if tail.isdigit() else None


# --- Create, enqueue, cancel -----------------------------------------------------------------

def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 9:
        raise ValidationFailed("k must be an integer from 1 to 9.", {"k": ["An integer from 1 to 9."]})
    return k


def _resolve_model(*, project: Project, model) -> ModelArtifact:
    if model is None:
        chosen = project_generator_model(project=project)
        if chosen is None:
            raise ValidationFailed("No model is registered yet: run `python manage.py model_default` (or "
                                   "model_import) first.", {"model": ["No model registered."]})
        return chosen
    if isinstance(model, ModelArtifact):
        chosen = model
    else:
        if isinstance(model, bool) or not isinstance(model, int):
            raise ValidationFailed("model must be a model id.", {"model": ["A model id."]})
        chosen = ModelArtifact.objects.filter(pk=model).first()
        if chosen is None:
            raise ValidationFailed(f"No model with id {model}.", {"model": [f"No model with id {model}."]})
    if not chosen.is_generative:
        raise ValidationFailed(f"{chosen.name} is a reward model: it scores answers, it cannot write them.",
                               {"model": ["Not a generative model."]})
    return chosen


def _resolve_prompt_ids(*, project: Project, prompt_ids) -> list[int]:
    """Given ids must all be prompts of the project; none given means every prompt of the
    project that has no candidate yet."""
    if prompt_ids is None:
        ids = list(project.prompts.annotate(n=Count("candidates")).filter(n=0).order_by("id")
                   .values_list("id", flat=True)[:MAX_PROMPTS_PER_JOB])
        if not ids:
            raise ValidationFailed("Every prompt of this project already has candidates; pass prompt_ids to "
                                   "sample more for chosen prompts.", {"prompt_ids": ["No prompt needs candidates."]})
        return ids
    if not isinstance(prompt_ids, list) or not prompt_ids:
        raise ValidationFailed("prompt_ids must be a non-empty list of prompt ids.",
                               {"prompt_ids": ["A non-empty list of ids."]})
    if len(prompt_ids) > MAX_PROMPTS_PER_JOB:
        raise ValidationFailed(f"At most {MAX_PROMPTS_PER_JOB} prompts per job.", {"prompt_ids": ["Too many."]})
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in prompt_ids):
        raise ValidationFailed("prompt_ids must be integers.", {"prompt_ids": ["Integers only."]})
    ids = list(dict.fromkeys(prompt_ids))  # drop repeats, keep order
    found = set(project.prompts.filter(pk__in=ids).values_list("id", flat=True))
    missing = [p for p in ids if p not in found]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + ("…" if len(missing) > 20 else "")
        raise ValidationFailed(f"These prompt ids are not prompts of project {project.slug!r}: {shown}.",
                               {"prompt_ids": [f"Unknown in this project: {shown}."]})
    return ids


def generation_job_create(*, user, project: Project, prompt_ids=None, model=None, k=None,
                          seed: int | None = None) -> GenerationJob:
    """An admin asks for K candidates for prompts of a project. Validates, saves the job
    (queued) and publishes it to the `generation` queue. Must not run inside a transaction:
    the worker has to see the committed row."""
    _check_admin(user)
    if project.is_archived:
        raise ValidationFailed("The project is archived; unarchive it to generate candidates.")
    k = project.k_candidates if k is None else _check_k(k)
    chosen = _resolve_model(project=project, model=model)
    ids = _resolve_prompt_ids(project=project, prompt_ids=prompt_ids)
    try:
        job_settings = check_job_settings(project.generation_settings)
    except JobFailure as exc:
        raise ValidationFailed(str(exc), {"generation_settings": [str(exc)]}) from exc
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    with transaction.atomic():
        job = GenerationJob.objects.create(
            project=project, model=chosen, prompt_ids=ids, k=k, generation_settings=job_settings, seed=seed,
            prompts_total=len(ids), candidates_total=len(ids) * k, created_by=user,
            celery_task_id=str(uuid.uuid4()),
        )
    generation_job_enqueue(job=job)
    return job


def generation_job_enqueue(*, job: GenerationJob) -> None:
    """Publish the job's task to the `generation` queue (see studio.jobs.job_enqueue)."""
    jobs.job_enqueue(job=job)


def generation_job_cancel(*, user, job: GenerationJob) -> GenerationJob:
    """Stop a queued or running job. Candidates already written stay."""
    _check_admin(user)
    return jobs.job_cancel(job=job)


# --- Run (on a worker) -----------------------------------------------------------------------

@dataclass
class _Row:
    prompt_id: int
    slot: int
    params: dict
    seed: int


def _safety_checks() -> tuple:
    extra = getattr(settings, "STUDIO_SAFETY_CHECKS", None) or os.environ.get("STUDIO_SAFETY_CHECKS", "")
    try:
        return safety.build_checks(extra)
    except ValueError as exc:
        raise JobFailure(str(exc)) from exc


def _generation_config(device) -> sampling.GenerationConfig:
    overrides = {}
    for name, field in (("STUDIO_GENERATION_BATCH_ROWS", "max_batch_rows"),
                        ("STUDIO_GENERATION_BATCH_TOKENS", "max_batch_tokens")):
        value = getattr(settings, name, None) or os.environ.get(name)
        if value:
            try:
                overrides[field] = int(value)
            except ValueError as exc:
                raise JobFailure(f"{name}={value!r} is not an integer.") from exc
    try:
        return sampling.GenerationConfig.for_device(device, **overrides)
    except ValueError as exc:
        raise JobFailure(f"Bad generation configuration: {exc}") from exc


def _load(job: GenerationJob):
    model = job.model
    if not model.is_generative:
        raise JobFailure(f"Model {model.name} (id {model.pk}) is a reward model and cannot generate.")
    path = model_resolve_path(model=model)
    base_path = None
    if model.format == FORMAT_PEFT:
        if model.parent is None:
            raise JobFailure(f"Adapter {model.name} (id {model.pk}) has no parent model to apply it to.")
        base_path = model_resolve_path(model=model.parent)
    if not path.exists():
        raise JobFailure(f"Model {model.name} (id {model.pk}) is missing: {path} does not exist. Re-import it "
                         "or choose another model.")
    try:
        return load_cached(path, format=model.format, device=getattr(settings, "STUDIO_DEVICE", "") or None,
                           base_path=base_path)
    except ModelLoadError as exc:
        raise JobFailure(f"Model {model.name} (id {model.pk}) could not be loaded: {exc}") from exc


def generation_job_run(*, job_id: int, worker: str = "") -> GenerationJob | None:
    """Run (or resume) a job on this worker (studio.jobs.job_run: returns at once when the job is
    finished or held by another live worker; failures end the job with their message)."""
    return jobs.job_run(model=GenerationJob, job_id=job_id, worker=worker, body=_run,
                        select_related=("model", "model__parent", "project"))


def _is_cancelled(job: GenerationJob) -> bool:
    return jobs.job_is_cancelled(job)


def _run(job: GenerationJob) -> None:
    job_settings = check_job_settings(job.generation_settings)
    checks = _safety_checks()
    prompts = {p.pk: p for p in Prompt.objects.filter(pk__in=job.prompt_ids, project_id=job.project_id)}
    loaded = _load(job)
    config = _generation_config(loaded.device)
    job.device = f"{loaded.device} ({str(loaded.dtype).removeprefix('torch.')})"[:40]
    job.save(update_fields=["device", "updated_at"])

    done = _done_slots(job)
    rows: dict[int, list[_Row]] = {}
    encoded: dict[tuple[int, str], tuple[int, ...]] = {}
    for prompt_id in job.prompt_ids:
        prompt = prompts.get(prompt_id)
        if prompt is None:  # deleted since the job was created: nothing to write for it
            continue
        for slot in range(job.k):
            if (prompt_id, slot) in done:
                continue
            params = slot_params(generation_settings=job_settings, slot=slot)
            key = (prompt_id, params["template"])
            if key not in encoded:
                try:
                    chat = sampling.build_chat(prompt.messages, prompt.documents, params["template"])
                    encoded[key] = tuple(sampling.encode_chat(loaded.tokenizer, chat,
                                                                max_prompt_tokens=config.max_prompt_tokens))
                except Exception as exc:
                    raise JobFailure(f"Prompt {prompt_id} could not be turned into model input: {exc}") from exc
            rows.setdefault(prompt_id, []).append(_Row(prompt_id, slot, params, _seed_for(job, prompt_id, slot)))

    # Length bucketing across the whole job: prompts sorted by their longest encoding, then cut
    # into chunks of about one batch each; a chunk is written (and checkpointed) at once.
    def prompt_len(pid: int) -> int:
        return max(len(encoded[(pid, r.params["template"])]) for r in rows[pid])

    order = sorted(rows, key=prompt_len)
    chunks: list[list[int]] = []
    current: list[int] = []
    for pid in order:
        if current and sum(len(rows[p]) for p in current) + len(rows[pid]) > config.max_batch_rows:
            chunks.append(current)
            current = []
        current.append(pid)
    if current:
        chunks.append(current)

    _progress_save(job, new_tokens=0, seconds=0.0, remaining_rows=sum(len(r) for r in rows.values()),
                   seconds_per_row=None)
    run_rows = 0
    run_seconds = 0.0
    remaining = sum(len(r) for r in rows.values())
    for chunk in chunks:
        if _is_cancelled(job):
            raise JobCancelled()
        requests = [
            sampling.SampleRequest(
                key=(row.prompt_id, row.slot), input_ids=encoded[(row.prompt_id, row.params["template"])],
                temperature=row.params["temperature"], top_p=row.params["top_p"], seed=row.seed,
                max_new_tokens=row.params["max_new_tokens"])
            for pid in chunk for row in rows[pid]
        ]
        beat = _Heartbeat(job, remaining_rows=remaining, max_new_tokens=job_settings["max_new_tokens"])
        t0 = time.perf_counter()
        try:
            results = sampling.generate(loaded.model, loaded.tokenizer, requests, config=config, on_step=beat)
        except sampling.GenerationAborted:
            raise JobCancelled() from None
        seconds = time.perf_counter() - t0
        by_key = {(row.prompt_id, row.slot): row for pid in chunk for row in rows[pid]}
        _chunk_save(job, results=results, rows=by_key, checks=checks, device=job.device)
        run_rows += len(requests)
        run_seconds += seconds
        remaining -= len(requests)
        _progress_save(job, new_tokens=sum(r.tokens for r in results), seconds=seconds, remaining_rows=remaining,
                       seconds_per_row=run_seconds / run_rows)
    if _is_cancelled(job):
        raise JobCancelled()
    missing = job.candidates_total - _count(job)[1] - _deleted_prompt_slots(job, prompts)
    if missing > 0:
        raise JobFailure(f"{missing} candidates are missing after the run; start the job again to fill them in.")
    jobs.job_finish(job, status=Status.SUCCEEDED)


def _done_slots(job: GenerationJob) -> set[tuple[int, int]]:
    done = set()
    for prompt_id, external_id in Candidate.objects.filter(
            prompt_id__in=job.prompt_ids, external_id__startswith=f"job{job.pk}-k").values_list("prompt_id",
                                                                                               "external_id"):
        slot = _slot_of(external_id)
        if slot is not None and slot < job.k:
            done.add((prompt_id, slot))
    return done


def _deleted_prompt_slots(job: GenerationJob, prompts: dict) -> int:
    return (len(job.prompt_ids) - len(prompts)) * job.k


def _count(job: GenerationJob) -> tuple[int, int]:
    """(prompts with all K candidates, candidates written) for this job, from the database."""
    written = Candidate.objects.filter(prompt_id__in=job.prompt_ids, external_id__startswith=f"job{job.pk}-k")
    per_prompt = written.values("prompt_id").annotate(n=Count("id"))
    prompts_done = sum(1 for row in per_prompt if row["n"] >= job.k)
    return prompts_done, written.count()


def _chunk_save(job: GenerationJob, *, results: list[sampling.SampleResult], rows: dict, checks,
                device: str) -> None:
    """Screen and write one chunk's candidates. Inserting an external_id that exists is a
    no-op (unique per prompt), so a chunk written twice still gives one candidate per slot."""
    import torch
    import transformers

    candidates = []
    for result in results:
        row = rows[result.key]
        text = result.text  # the sampler's text has no NUL (PostgreSQL cannot store it)
        candidates.append(Candidate(
            prompt_id=row.prompt_id, text=text, source=Source.GENERATED, model=job.model,
            external_id=job.external_id(row.slot),
            safety_flags=safety.screen(text, checks),
            generation={
                "job": job.pk,
                "slot": row.slot,
                "model_id": job.model_id,
                "model_name": job.model.name,
                "template": row.params["template"],
                "temperature": row.params["temperature"],
                "top_p": row.params["top_p"],
                "seed": row.seed,
                "max_new_tokens": row.params["max_new_tokens"],
                "tokens_generated": result.tokens,
                "prompt_tokens": result.prompt_tokens,
                "finish_reason": result.finish_reason,
                # The row's share of its batch's wall time (rows of a batch decode together).
                "seconds": round(result.seconds / max(result.batch_rows, 1), 4),
                "batch_seconds": round(result.seconds, 3),
                "batch_rows": result.batch_rows,
                "sampler": "nucleus-inverse-cdf-v1",
                "device": device,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        ))
    with transaction.atomic():
        Candidate.objects.bulk_create(candidates, ignore_conflicts=True)


def _progress_save(job: GenerationJob, *, new_tokens: int, seconds: float, remaining_rows: int,
                   seconds_per_row: float | None) -> None:
    """The job's progress, recounted from the candidates written: right after a resume too."""
    job.prompts_done, job.candidates_done = _count(job)
    job.tokens_generated += new_tokens
    job.generation_seconds += seconds
    if job.generation_seconds > 0:
        job.tokens_per_second = round(job.tokens_generated / job.generation_seconds, 2)
    if seconds_per_row is not None:
        job.eta_seconds = round(remaining_rows * seconds_per_row, 1)
    job.heartbeat_at = timezone.now()
    job.save(update_fields=["prompts_done", "candidates_done", "tokens_generated", "generation_seconds",
                            "tokens_per_second", "eta_seconds", "heartbeat_at", "updated_at"])


class _Heartbeat:
    """Called after every decoding step: every few seconds it records that the worker is alive
    and the live token rate, and answers True (stop) when the job was cancelled."""

    def __init__(self, job: GenerationJob, *, remaining_rows: int, max_new_tokens: int):
        self.job = job
        self.remaining_rows = remaining_rows
        self.max_new_tokens = max_new_tokens
        self.start = self.last = time.perf_counter()
        self.tokens = 0

    def __call__(self, step_tokens: int) -> bool:
        self.tokens += step_tokens
        now = time.perf_counter()
        if now - self.last < HEARTBEAT_SECONDS:
            return False
        self.last = now
        rate = self.tokens / max(now - self.start, 1e-6)
        fields = {"heartbeat_at": timezone.now(), "tokens_per_second": round(rate, 2)}
        if self.job.eta_seconds is None and rate > 0:
            # No chunk finished yet: an upper bound from the token rate and the token budget.
            fields["eta_seconds"] = round(self.remaining_rows * self.max_new_tokens / rate, 1)
        GenerationJob.objects.filter(pk=self.job.pk).update(**fields)
        return _is_cancelled(self.job)


# --- Recovery --------------------------------------------------------------------------------

def generation_jobs_recover(*, worker_prefix: str = "") -> list[int]:
    """Re-queue generation jobs whose worker is gone, so they resume (studio.jobs.jobs_recover):
    run by every generation worker as it starts (modelhub.tasks), and by
    `manage.py generation_recover`."""
    return jobs.jobs_recover(model=GenerationJob, worker_prefix=worker_prefix)
