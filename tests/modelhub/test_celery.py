"""A real Celery worker process runs generation jobs from the broker, and a worker killed
(SIGKILL) in the middle of a job is restarted and finishes it with exactly K candidates per
prompt: none twice, none missing.

The worker gets its own broker folder (STUDIO_DATA_DIR of a temp dir) and the test database
(DATABASE_URL), so it never sees another run's messages or the development database.
"""
from __future__ import annotations

import signal
import time

import pytest

from labeling.models import Candidate
from modelhub import services
from modelhub.models import GenerationJob
from tests.celery_workers import wait_for
from tests.factories import PromptFactory

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def slow_safety_check(text: str) -> list[dict]:
    """Plugged in as the worker's extra safety check: makes each chunk take long enough to kill
    the worker between two chunks."""
    time.sleep(0.4)
    return []


def job_status(job_id: int) -> GenerationJob:
    return GenerationJob.objects.get(pk=job_id)


def test_a_real_worker_runs_a_generation_job(workers, admin_user, gen_project, tiny_model):
    prompts = [PromptFactory(project=gen_project) for _ in range(2)]
    job = services.generation_job_create(user=admin_user, project=gen_project, prompt_ids=[p.pk for p in prompts],
                                         k=2)
    worker = workers()
    done = wait_for(lambda: job_status(job.pk).is_finished and job_status(job.pk), timeout=120,
                    what="the job to finish", worker=worker)
    assert done.status == "succeeded", done.error
    assert done.worker.startswith("gen-test@") and done.candidates_done == 4
    for prompt in prompts:
        assert sorted(prompt.candidates.values_list("external_id", flat=True)) == [f"job{job.pk}-k0",
                                                                                   f"job{job.pk}-k1"]


def test_a_killed_worker_resumes_the_job_with_exactly_k_candidates(workers, admin_user, gen_project, tiny_model):
    k, n_prompts = 3, 5
    prompts = [PromptFactory(project=gen_project) for _ in range(n_prompts)]
    job = services.generation_job_create(user=admin_user, project=gen_project, prompt_ids=[p.pk for p in prompts],
                                         k=k)
    env = {"STUDIO_GENERATION_BATCH_ROWS": str(k),  # one prompt per chunk
           "STUDIO_SAFETY_CHECKS": "tests.modelhub.test_celery:slow_safety_check"}
    first = workers("gen-kill@%h", **env)
    progress = wait_for(lambda: (j := job_status(job.pk)).candidates_done >= k and j, timeout=120,
                        what="the first chunk", worker=first)
    assert progress.status == "running", f"the job ended before the kill: {progress.status} {progress.error}"
    first.kill(signal.SIGKILL)
    killed = job_status(job.pk)
    assert killed.status == "running" and k <= killed.candidates_done < k * n_prompts

    second = workers("gen-kill@%h", **env)  # same node name: it re-queues what its predecessor held
    done = wait_for(lambda: job_status(job.pk).is_finished and job_status(job.pk), timeout=180,
                    what="the resumed job to finish", worker=second)
    assert done.status == "succeeded", done.error
    assert (done.prompts_done, done.candidates_done) == (n_prompts, k * n_prompts)
    assert done.worker != killed.worker  # another process finished it
    assert f"Re-queued generation jobs [{job.pk}]" in second.log()
    for prompt in prompts:
        assert sorted(prompt.candidates.values_list("external_id", flat=True)) == [
            f"job{job.pk}-k{i}" for i in range(k)]
    assert Candidate.objects.filter(prompt__in=prompts).count() == k * n_prompts
