"""Fixtures for the model hub: a project that generates with two temperatures and templates, and
a stand-in for publishing Celery tasks, so only the @pytest.mark.celery tests touch a broker."""
from __future__ import annotations

import pytest


@pytest.fixture
def gen_project(db):
    """A project with short answers, two temperatures and two templates."""
    from tests.factories import ProjectFactory

    return ProjectFactory(k_candidates=3, generation_settings={
        "temperatures": [0.7, 1.0], "top_p": 0.9, "max_new_tokens": 12, "prompt_templates": ["plain", "step_by_step"],
    })


@pytest.fixture
def published(monkeypatch, request):
    """Records the generation tasks a test publishes instead of sending them to a broker.
    (Celery tests need the real thing and do not use this fixture.)"""
    from modelhub.tasks import generation_job_task

    sent: list[dict] = []

    def fake_apply_async(args=None, kwargs=None, **options):
        sent.append({"args": args, "kwargs": kwargs, **options})

    monkeypatch.setattr(generation_job_task, "apply_async", fake_apply_async)
    return sent


@pytest.fixture(autouse=True)
def _no_real_broker(request, monkeypatch):
    """Outside @pytest.mark.celery tests a task that is published by accident must not reach
    the shared broker folder, where a later worker would pick it up."""
    if request.node.get_closest_marker("celery"):
        return
    from modelhub.tasks import generation_job_task

    def refuse(*args, **kwargs):
        raise AssertionError("This test published a Celery task without the `published` fixture.")

    if "published" not in request.fixturenames:
        monkeypatch.setattr(generation_job_task, "apply_async", refuse)


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    from modelhub.loading import clear_cache

    clear_cache()
    yield
    clear_cache()
