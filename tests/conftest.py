import os

import signal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Imports, snapshots and exports are jobs: their publishing is stood in for (tests/job_fixtures.py).
from tests.job_fixtures import _job_tasks_guard, jobs_inline, published_jobs  # noqa: E402,F401


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Full-strength hashing costs ~0.3 s a user on 2 cores; tests create hundreds of users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def make_user(db):
    """make_user(role="annotator", username=None) -> a user with that role (password PASSWORD)."""
    from tests.factories import UserFactory

    def make(role="annotator", **kwargs):
        return UserFactory(role=role, **kwargs)

    return make


@pytest.fixture
def admin_user(make_user):
    return make_user("admin")


@pytest.fixture
def annotator(make_user):
    return make_user("annotator")


@pytest.fixture
def reviewer(make_user):
    return make_user("reviewer")


@pytest.fixture
def project(db):
    from tests.factories import ProjectFactory

    return ProjectFactory()


@pytest.fixture
def client_as(api_client):
    """client_as(user) -> an APIClient authenticated as that user."""

    def login(user):
        api_client.force_authenticate(user=user)
        return api_client

    return login


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama and its tokenizer on disk (tests.tiny_models), built once per run."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """The tiny model loaded for generation (eval mode, CPU) with its tokenizer."""
    from modelhub.loading import load_causal_lm

    return load_causal_lm(tiny_model_dir, device="cpu")


@pytest.fixture
def tiny_model(db, tiny_model_dir):
    """The tiny model registered as the base model artifact."""
    from modelhub.registry import model_register

    return model_register(name="tiny-llama", path=tiny_model_dir, kind="base")


@pytest.fixture
def broker_data_dir(tmp_path):
    """Point this process's Celery producer at a private filesystem broker folder: the same
    folders the worker computes from STUDIO_DATA_DIR=<this dir>."""
    from studio.celery import app

    data = tmp_path / "data"
    folders = {name: data / "broker" / name for name in ("queue", "processed", "results")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    saved = app.conf.broker_transport_options
    uses_filesystem = app.conf.broker_url.startswith("filesystem")

    def reset_pools():
        if app._pool is not None:
            app._pool.force_close_all()
            app._pool = None
        app.amqp._producer_pool = None

    if uses_filesystem:
        app.conf.broker_transport_options = {
            **saved, "data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"])}
        reset_pools()
    yield data
    if uses_filesystem:
        app.conf.broker_transport_options = saved
        reset_pools()


@pytest.fixture
def workers(broker_data_dir, tmp_path):
    started: list = []

    def start(name="gen-test@%h", queues="generation,default", **env):
        from tests.celery_workers import Worker

        worker = Worker(broker_data_dir, tmp_path / "worker.log", name, env, queues=queues).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill(signal.SIGTERM)
