"""`studio_run` starts real Celery workers (one for jobs, one for training) and the web server, and Ctrl-C
stops them all."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.celery, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.5)
    return False


def test_run_serves_pages_runs_tasks_and_stops_on_ctrl_c(tmp_path):
    env = dict(os.environ, STUDIO_DATA_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    env.pop("DATABASE_URL", None)  # the embedded default: SQLite and the filesystem broker
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
    port = free_port()
    proc = subprocess.Popen([*manage, "studio_run", "--port", str(port), "--web-workers", "1"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/api/schema/", 60), "web server did not come up"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/schema/").read()
        assert b"openapi" in body
        ping = subprocess.run([*manage, "shell", "-c",
                               "from studio.tasks import ping; print(ping.delay().get(timeout=90))"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert "pong" in ping.stdout, ping.stderr[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("studio_run did not stop within 30 s of Ctrl-C")
    assert b"RLHF Studio stopped." in out, out[-2000:]
    # Two workers: training runs have their own, so they never hold up generation or evaluations.
    assert b"studio-worker@" in out and b"studio-trainer@" in out, out[-3000:]
    assert b".> training" in out and b".> generation" in out  # each worker's queues, from its banner
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
