"""Fixtures for dataset snapshots: a private data directory per test, Hugging Face offline, and
a hand-built project whose labels are known exactly."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """Snapshots, export scratch files and trained models go to this test's own directories: a
    trained model lands in MODEL_DIR/trained/run-<id>-<kind>, and run ids restart in every test
    database, so with the development model store a test run overwrote the models `make run`
    and the benchmarks had trained there."""
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    settings.MODEL_DIR = tmp_path / "models"
    return settings.DATA_DIR


@pytest.fixture
def hf_cache(tmp_path):
    path = tmp_path / "hf-cache"
    path.mkdir()
    return str(path)


@pytest.fixture
def labelled(db, make_user):
    """A project with one K=4 prompt ranked [[a], [b, c], [d]] (b and c tied) by one annotator
    with ratings a 7, b 5, c 5, d 1, and a demonstration. See tests.training.helpers."""
    from tests.training.helpers import build_labelled_project

    return build_labelled_project(make_user)


@pytest.fixture
def marker(make_user):
    """(project, snapshot, admin): 40 prompts whose labels follow a rule a reward model can learn
    (tests.training.helpers.build_marker_project)."""
    from tests.training.helpers import build_marker_project

    return build_marker_project(make_user, prompts=40)


@pytest.fixture
def published(monkeypatch):
    """Training tasks recorded instead of sent to a broker."""
    from training.tasks import training_run_task

    sent = []
    monkeypatch.setattr(training_run_task, "apply_async", lambda args=None, **kw: sent.append(args))
    return sent
