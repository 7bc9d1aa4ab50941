"""Real Celery worker processes for the @pytest.mark.celery tests: each gets its own broker
folder (STUDIO_DATA_DIR of a temp dir) and the test database (DATABASE_URL), so it never sees
another run's messages or the development database. The `broker_data_dir` and `workers` fixtures
are in tests/conftest.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(settings.BASE_DIR)
CELERY = Path(sys.executable).parent / "celery"


def database_url() -> str:
    """The test database as a DATABASE_URL a worker process can use."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    """A real `celery worker` process (solo pool) on the given queues, with the test database."""

    def __init__(self, data_dir: Path, log_path: Path, name: str, extra_env: dict | None = None,
                 queues: str = "generation,default"):
        self.data_dir, self.log_path, self.name, self.queues = data_dir, log_path, name, queues
        self.env = {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "DATABASE_URL": database_url(),
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "STUDIO_DEVICE": "cpu", **(extra_env or {})}
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(CELERY), "-A", "studio", "worker", "-Q", self.queues, "--pool", "solo", "-c", "1",
             "-n", self.name, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def wait_for(predicate, *, timeout: float, what: str, worker: "Worker", interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited ({worker.proc.returncode}) while waiting for {what}:\n{worker.log()}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{worker.log()}")
