import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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


@pytest.fixture
def tiny_model(db, tiny_model_dir):
    """The tiny model registered as the base model artifact."""
    from modelhub.registry import model_register

    return model_register(name="tiny-llama", path=tiny_model_dir, kind="base")
