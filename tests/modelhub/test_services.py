"""Generation jobs end to end in one process (no broker): creating, running, resuming,
failing, cancelling and recovering, with the tiny random Llama model."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from labeling.models import Candidate, Source
from modelhub import services
from training.ml import sampling
from modelhub.models import GenerationJob, ModelArtifact, ProjectGenerator
from modelhub.registry import model_register
from modelhub.selectors import project_generator_model
from studio.errors import Conflict, PermissionDeniedError, ValidationFailed
from tests.factories import CandidateFactory, ProjectFactory, PromptFactory

pytestmark = pytest.mark.django_db

Status = GenerationJob.Status


@pytest.fixture
def prompts(gen_project):
    return [
        PromptFactory(project=gen_project, messages=[{"role": "user", "content": "What is the capital of France?"}]),
        PromptFactory(project=gen_project, kind="few_shot", messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Four."},
            {"role": "user", "content": "3+3?"}]),
        PromptFactory(project=gen_project, messages=[{"role": "user", "content": "Summarise the document."}],
                      documents=[{"title": "Sea", "text": "The sea is large and salty."}]),
    ]


def make_job(admin_user, project, prompts, published, **kwargs):
    job = services.generation_job_create(user=admin_user, project=project, prompt_ids=[p.pk for p in prompts],
                                         **kwargs)
    assert published and published[-1]["args"] == [job.pk]
    return job


def job_candidates(job):
    return Candidate.objects.filter(external_id__startswith=f"job{job.pk}-k").order_by("prompt_id", "external_id")


# --- Create ------------------------------------------------------------------------------------

def test_create_queues_a_job_on_the_generation_task(admin_user, gen_project, prompts, tiny_model, published):
    job = make_job(admin_user, gen_project, prompts, published, k=2)
    assert job.status == Status.QUEUED
    assert (job.k, job.prompts_total, job.candidates_total) == (2, 3, 6)
    assert job.model == tiny_model
    assert job.generation_settings["prompt_templates"] == ["plain", "step_by_step"]
    assert published[0]["task_id"] == job.celery_task_id


def test_create_defaults_to_project_k_and_prompts_without_candidates(admin_user, gen_project, prompts, tiny_model,
                                                                     published):
    CandidateFactory(prompt=prompts[0])
    job = services.generation_job_create(user=admin_user, project=gen_project)
    assert job.k == gen_project.k_candidates == 3
    assert job.prompt_ids == [prompts[1].pk, prompts[2].pk]


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be"),
    ({"k": 10}, "k must be"),
    ({"prompt_ids": []}, "non-empty list"),
    ({"prompt_ids": ["1"]}, "integers"),
    ({"model": 999999}, "No model with id"),
])
def test_create_rejects_bad_input(admin_user, gen_project, prompts, tiny_model, published, kwargs, message):
    kwargs.setdefault("prompt_ids", [prompts[0].pk])
    with pytest.raises(ValidationFailed, match=message):
        services.generation_job_create(user=admin_user, project=gen_project, **kwargs)
    assert not GenerationJob.objects.exists() and not published


def test_create_rejects_prompts_of_another_project(admin_user, gen_project, prompts, tiny_model, published):
    other = PromptFactory(project=ProjectFactory())
    with pytest.raises(ValidationFailed, match=f"not prompts of project.*{other.pk}"):
        services.generation_job_create(user=admin_user, project=gen_project, prompt_ids=[prompts[0].pk, other.pk])


def test_create_rejects_reward_models_and_a_registry_without_models(admin_user, gen_project, prompts, tiny_model_dir,
                                                                    published):
    with pytest.raises(ValidationFailed, match="No model is registered"):
        services.generation_job_create(user=admin_user, project=gen_project, prompt_ids=[prompts[0].pk])
    reward = model_register(name="rm", path=tiny_model_dir, kind="reward")
    with pytest.raises(ValidationFailed, match="reward model"):
        services.generation_job_create(user=admin_user, project=gen_project, prompt_ids=[prompts[0].pk],
                                       model=reward.pk)


def test_only_admins_create_jobs(reviewer, gen_project, prompts, tiny_model, published):
    with pytest.raises(PermissionDeniedError):
        services.generation_job_create(user=reviewer, project=gen_project, prompt_ids=[prompts[0].pk])


def test_broker_down_fails_the_job_with_a_clear_message(admin_user, gen_project, prompts, tiny_model, monkeypatch):
    from modelhub.tasks import generation_job_task

    def down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(generation_job_task, "apply_async", down)
    with pytest.raises(services.BrokerUnavailable, match="broker is unreachable"):
        services.generation_job_create(user=admin_user, project=gen_project, prompt_ids=[prompts[0].pk])
    job = GenerationJob.objects.get()
    assert job.status == Status.FAILED and "Connection refused" in job.error
    assert not Candidate.objects.exists()  # nothing ran inline


def test_generator_is_the_base_until_an_admin_promotes_a_model(gen_project, tiny_model, tiny_model_dir, admin_user):
    from modelhub.registry import project_generator_set

    assert project_generator_model(project=gen_project) == tiny_model
    sft = model_register(name="sft-1", path=tiny_model_dir, kind="sft", parent=tiny_model, project=gen_project)
    model_register(name="rm-1", path=tiny_model_dir, kind="reward", parent=sft, project=gen_project)
    model_register(name="base-2", path=tiny_model_dir, kind="base")  # a later import is not the default either
    assert project_generator_model(project=gen_project) == tiny_model  # trained, not promoted: no change
    project_generator_set(user=admin_user, project=gen_project, model=sft)
    assert project_generator_model(project=gen_project) == sft
    assert ProjectGenerator.objects.get(project=gen_project).set_by == admin_user


def test_slot_params_cycle_through_templates_and_temperatures():
    settings = {"temperatures": [0.7, 1.0], "top_p": 0.9, "max_new_tokens": 5, "prompt_templates": ["plain", "x"]}
    got = [(p["template"], p["temperature"]) for p in
           (services.slot_params(generation_settings=settings, slot=i) for i in range(5))]
    assert got == [("plain", 0.7), ("plain", 1.0), ("x", 0.7), ("x", 1.0), ("plain", 0.7)]


# --- Run ---------------------------------------------------------------------------------------

def test_run_writes_k_candidates_per_prompt_with_their_parameters(admin_user, gen_project, prompts, tiny_model,
                                                                  published):
    job = make_job(admin_user, gen_project, prompts, published)
    job = services.generation_job_run(job_id=job.pk, worker="w:1")
    assert job.status == Status.SUCCEEDED, job.error
    assert (job.prompts_done, job.candidates_done) == (3, 9)
    assert job.tokens_generated > 0 and job.tokens_per_second > 0 and job.eta_seconds == 0
    assert job.started_at and job.finished_at and job.device.startswith("cpu")
    for prompt in prompts:
        cands = list(prompt.candidates.order_by("external_id"))
        assert [c.external_id for c in cands] == [f"job{job.pk}-k{i}" for i in range(3)]
        for slot, cand in enumerate(cands):
            g = cand.generation
            assert cand.source == Source.GENERATED and cand.model == tiny_model
            expected = services.slot_params(generation_settings=job.generation_settings, slot=slot)
            assert (g["template"], g["temperature"], g["top_p"], g["max_new_tokens"]) == (
                expected["template"], expected["temperature"], 0.9, 12)
            assert g["seed"] == sampling.derive_seed(job.seed, prompt.pk, slot)
            assert g["model_id"] == tiny_model.pk and g["model_name"] == "tiny-llama"
            assert 0 < g["tokens_generated"] <= 12 or g["finish_reason"] == "stop"
            assert g["seconds"] >= 0 and g["job"] == job.pk
            assert isinstance(cand.safety_flags, list)
    assert {c.generation["template"] for c in job_candidates(job)} == {"plain", "step_by_step"}


def test_same_seed_same_parameters_reproduce_the_same_candidates(admin_user, gen_project, prompts, tiny_model,
                                                                 published):
    first = make_job(admin_user, gen_project, prompts[:2], published, k=2, seed=42)
    second = make_job(admin_user, gen_project, prompts[:2], published, k=2, seed=42)
    services.generation_job_run(job_id=first.pk)
    services.generation_job_run(job_id=second.pk)
    assert [c.text for c in job_candidates(first)] == [c.text for c in job_candidates(second)]
    assert [c.generation["seed"] for c in job_candidates(first)] == [c.generation["seed"] for c in
                                                                     job_candidates(second)]


def test_running_a_finished_job_again_changes_nothing(admin_user, gen_project, prompts, tiny_model, published):
    job = make_job(admin_user, gen_project, prompts, published)
    services.generation_job_run(job_id=job.pk)
    before = list(job_candidates(job).values_list("id", "text"))
    again = services.generation_job_run(job_id=job.pk)
    assert again.status == Status.SUCCEEDED
    assert list(job_candidates(job).values_list("id", "text")) == before


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the service catches it."""


def test_an_interrupted_job_resumes_without_duplicates_or_gaps(admin_user, gen_project, prompts, tiny_model,
                                                               published, monkeypatch):
    job = make_job(admin_user, gen_project, prompts, published, seed=7)
    real_generate = sampling.generate
    calls = {"n": 0}

    def dies_on_second_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise WorkerKilled()
        return real_generate(*args, **kwargs)

    monkeypatch.setenv("STUDIO_GENERATION_BATCH_ROWS", "3")  # one prompt (K=3) per chunk
    monkeypatch.setattr(sampling, "generate", dies_on_second_chunk)
    with pytest.raises(WorkerKilled):
        services.generation_job_run(job_id=job.pk, worker="celery@a:1")
    job.refresh_from_db()
    assert job.status == Status.RUNNING and job.candidates_done == 3 and job.prompts_done == 1
    partial = {c.external_id + str(c.prompt_id): c.text for c in job_candidates(job)}

    monkeypatch.setattr(sampling, "generate", real_generate)
    # A restarted worker (another pid) gets the job back once recovery has released it.
    assert services.generation_job_run(job_id=job.pk, worker="celery@a:2").status == Status.RUNNING
    assert services.generation_jobs_recover(worker_prefix="celery@a") == [job.pk]
    job = services.generation_job_run(job_id=job.pk, worker="celery@a:2")
    assert job.status == Status.SUCCEEDED, job.error
    assert (job.prompts_done, job.candidates_done) == (3, 9)
    for prompt in prompts:
        assert sorted(prompt.candidates.values_list("external_id", flat=True)) == [
            f"job{job.pk}-k{i}" for i in range(3)]
    # What was written before the kill is untouched.
    assert {k: v for k, v in ((c.external_id + str(c.prompt_id), c.text) for c in job_candidates(job))
            if k in partial} == partial


def test_a_deleted_candidate_is_resampled_identically(admin_user, gen_project, prompts, tiny_model, published):
    job = make_job(admin_user, gen_project, prompts, published)
    services.generation_job_run(job_id=job.pk)
    lost = job_candidates(job).filter(prompt=prompts[1], external_id=f"job{job.pk}-k2").get()
    lost_text = lost.text
    lost.delete()
    GenerationJob.objects.filter(pk=job.pk).update(status=Status.RUNNING, heartbeat_at=None)
    job = services.generation_job_run(job_id=job.pk)
    assert job.status == Status.SUCCEEDED and job.candidates_done == 9
    assert job_candidates(job).get(prompt=prompts[1], external_id=f"job{job.pk}-k2").text == lost_text


def test_a_job_held_by_a_live_worker_is_not_run_twice(admin_user, gen_project, prompts, tiny_model, published):
    job = make_job(admin_user, gen_project, prompts, published)
    GenerationJob.objects.filter(pk=job.pk).update(status=Status.RUNNING, worker="celery@b:9",
                                                   heartbeat_at=timezone.now())
    assert services.generation_job_run(job_id=job.pk, worker="celery@a:1").worker == "celery@b:9"
    assert not job_candidates(job).exists()


def test_a_missing_model_fails_the_job_with_a_clear_message(admin_user, gen_project, prompts, tiny_model_dir,
                                                            published, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_model_dir, tmp_path / "doomed")
    model = model_register(name="doomed", path=copy)
    job = make_job(admin_user, gen_project, prompts, published, model=model.pk)
    shutil.rmtree(copy)
    job = services.generation_job_run(job_id=job.pk)
    assert job.status == Status.FAILED
    assert "Model doomed" in job.error and "is missing" in job.error and str(copy) in job.error
    assert not job_candidates(job).exists()


def test_an_unloadable_model_fails_the_job(admin_user, gen_project, prompts, tiny_model_dir, published, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    model = ModelArtifact.objects.create(name="broken", path=str(broken))
    job = make_job(admin_user, gen_project, prompts, published, model=model.pk)
    job = services.generation_job_run(job_id=job.pk)
    assert job.status == Status.FAILED and "could not be loaded" in job.error


def test_bad_settings_fail_the_job(admin_user, gen_project, prompts, tiny_model, published):
    job = make_job(admin_user, gen_project, prompts, published)
    GenerationJob.objects.filter(pk=job.pk).update(generation_settings={
        **job.generation_settings, "prompt_templates": ["haiku_mode"]})
    job = services.generation_job_run(job_id=job.pk)
    assert job.status == Status.FAILED and "unknown prompt template(s) 'haiku_mode'" in job.error


def test_the_safety_screen_marks_planted_pii_and_keeps_the_candidate(admin_user, gen_project, prompts, tiny_model,
                                                                     published, monkeypatch):
    job = make_job(admin_user, gen_project, prompts[:1], published, k=2)

    def planted(model, tokenizer, requests, **kwargs):
        texts = ["Sure! Email me at jane.doe@example.com or call +1 415-555-0132.", "Paris."]
        return [sampling.SampleResult(key=r.key, token_ids=[5, 6], text=texts[i % 2], finish_reason="stop",
                                        seconds=0.1, prompt_tokens=len(r.input_ids), batch_rows=len(requests))
                for i, r in enumerate(requests)]

    monkeypatch.setattr(sampling, "generate", planted)
    job = services.generation_job_run(job_id=job.pk)
    assert job.status == Status.SUCCEEDED
    flagged, clean = job_candidates(job).order_by("external_id")
    assert {f["check"] for f in flagged.safety_flags} == {"pii.email", "pii.phone"}
    assert all(f["label"] == "pii" for f in flagged.safety_flags) and flagged.is_flagged
    assert flagged.text.startswith("Sure! Email me")  # kept, not dropped or redacted
    assert clean.safety_flags == []


# --- Cancel, recover ---------------------------------------------------------------------------

def test_cancel_a_queued_job_and_its_run_does_nothing(admin_user, gen_project, prompts, tiny_model, published):
    job = make_job(admin_user, gen_project, prompts, published)
    job = services.generation_job_cancel(user=admin_user, job=job)
    assert job.status == Status.CANCELLED and job.finished_at
    assert services.generation_job_run(job_id=job.pk).status == Status.CANCELLED
    assert not job_candidates(job).exists()
    with pytest.raises(Conflict, match="already cancelled"):
        services.generation_job_cancel(user=admin_user, job=job)


def test_cancel_stops_a_running_job_mid_batch(admin_user, gen_project, prompts, tiny_model, published, monkeypatch):
    job = make_job(admin_user, gen_project, prompts, published)
    monkeypatch.setattr(services, "HEARTBEAT_SECONDS", 0.0)
    real_generate = sampling.generate

    def cancel_then_generate(*args, **kwargs):
        GenerationJob.objects.filter(pk=job.pk).update(status=Status.CANCELLED)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(sampling, "generate", cancel_then_generate)
    job = services.generation_job_run(job_id=job.pk)
    assert job.status == Status.CANCELLED
    assert not job_candidates(job).exists()


def test_recover_requeues_orphaned_and_queued_jobs_only(admin_user, gen_project, prompts, tiny_model, published):
    def job_with(**fields):
        job = make_job(admin_user, gen_project, prompts[:1], published)
        GenerationJob.objects.filter(pk=job.pk).update(**fields)
        return job

    now = timezone.now()
    queued = job_with()
    mine = job_with(status=Status.RUNNING, worker="celery@a:10", heartbeat_at=now)
    stale = job_with(status=Status.RUNNING, worker="celery@b:11", heartbeat_at=now - timedelta(minutes=5))
    alive = job_with(status=Status.RUNNING, worker="celery@b:12", heartbeat_at=now)
    job_with(status=Status.SUCCEEDED)
    published.clear()
    assert services.generation_jobs_recover(worker_prefix="celery@a") == sorted([queued.pk, mine.pk, stale.pk])
    assert sorted(p["args"][0] for p in published) == sorted([queued.pk, mine.pk, stale.pk])
    mine.refresh_from_db()
    alive.refresh_from_db()
    assert (mine.status, mine.worker, mine.heartbeat_at) == (Status.RUNNING, "", None)
    assert alive.worker == "celery@b:12"


def test_a_generation_job_samples_from_a_soft_prompt_adapter(admin_user, gen_project, prompts, tiny_model,
                                                             tiny_model_dir, published, tmp_path):
    """A soft prompt (peft prompt tuning) cannot be merged into its base: the job loads it as a
    peft model and the sampler puts the prompt in front of every row (training.ml.soft_prompt)."""
    import torch

    from training.ml.models import load_causal_lm_for_training, load_tokenizer
    from training.ml.soft_prompt import add_soft_prompt

    tokenizer = load_tokenizer(tiny_model_dir)
    soft = add_soft_prompt(load_causal_lm_for_training(tiny_model_dir), tokens=4, init_text="", tokenizer=tokenizer,
                           task="sft", seed=0)
    with torch.no_grad():  # a prompt far from the words: it changes what the model writes
        soft.prompt_encoder[soft.active_adapter].embedding.weight.mul_(5.0)
    soft.save_pretrained(tmp_path / "soft")
    adapter = model_register(name="tiny-soft", path=tmp_path / "soft", kind="sft", format="peft", parent=tiny_model)
    plain = make_job(admin_user, gen_project, prompts[:2], published, k=2, seed=7)
    prompted = make_job(admin_user, gen_project, prompts[:2], published, k=2, seed=7, model=adapter)
    assert services.generation_job_run(job_id=plain.pk).status == Status.SUCCEEDED
    prompted = services.generation_job_run(job_id=prompted.pk)
    assert prompted.status == Status.SUCCEEDED, prompted.error
    assert all(c.model == adapter and c.text for c in job_candidates(prompted))
    assert [c.text for c in job_candidates(prompted)] != [c.text for c in job_candidates(plain)]
