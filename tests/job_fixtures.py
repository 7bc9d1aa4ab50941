"""Stand-ins for the Celery publishing of the jobs that run on the `default` queue (imports,
snapshots, exports), so only @pytest.mark.celery tests touch a broker. tests/conftest.py imports
these fixtures, so every test has them.

- By default a snapshot job runs at once, in-process, when it is published, as a fast idle
  worker would: pages and API calls that freeze a snapshot answer with it. Imports and exports
  published by accident fail the test (they would reach the shared broker folder).
- `published_jobs` records what a test publishes instead (nothing runs: the job stays queued);
  run one with `run_published(published_jobs[0])`, as a worker would.
- `jobs_inline` runs every kind at once, in-process, when it is published.
"""
from __future__ import annotations

from importlib import import_module

import pytest

JOB_TASKS = ("labeling.tasks.import_run_task", "training.tasks.snapshot_job_task", "training.tasks.export_job_task")
INLINE_BY_DEFAULT = ("training.tasks.snapshot_job_task",)


def job_task(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(import_module(module), attr)


def run_published(message: dict):
    """Run a recorded message's task here, as a worker would (its body calls the service)."""
    return job_task(message["task"])(*message["args"])


def _inline(task):
    def apply_async(args=None, kwargs=None, **options):
        task(*(args or ()), **(kwargs or {}))

    return apply_async


def _refuse(name: str):
    def apply_async(*args, **kwargs):
        raise AssertionError(f"This test published {name} without the `published_jobs` or `jobs_inline` fixture.")

    return apply_async


@pytest.fixture
def published_jobs(monkeypatch):
    sent: list[dict] = []
    for name in JOB_TASKS:
        def record(args=None, kwargs=None, _name=name, **options):
            sent.append({"task": _name, "args": list(args or ()), **options})

        monkeypatch.setattr(job_task(name), "apply_async", record)
    return sent


@pytest.fixture
def jobs_inline(monkeypatch):
    for name in JOB_TASKS:
        monkeypatch.setattr(job_task(name), "apply_async", _inline(job_task(name)))


@pytest.fixture(autouse=True)
def _job_tasks_guard(request, monkeypatch):
    if request.node.get_closest_marker("celery"):
        return
    if {"published_jobs", "jobs_inline"} & set(request.fixturenames):
        return
    for name in JOB_TASKS:
        task = job_task(name)
        monkeypatch.setattr(task, "apply_async", _inline(task) if name in INLINE_BY_DEFAULT else _refuse(name))
