"""Start the whole product in the foreground: two Celery worker processes and the web server.

    worker    queues default, generation: candidate generation, evaluations, and the other jobs
    trainer   queue training: training runs, which take minutes to hours

Two workers, so that a long training run never holds up generation or an evaluation (one worker
would serve them one after the other). Each is one process (`--pool solo`): a worker holds a model
in memory.

Ctrl-C (SIGINT) or SIGTERM stops them all cleanly; if one dies, the others are stopped too and the
command exits non-zero, so `make run` never leaves half a product running.
"""
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

GRACE_SECONDS = 10


class Command(BaseCommand):
    help = "Run the Celery workers (jobs, training) and the web server until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("STUDIO_PORT", "8000"))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("STUDIO_WEB_WORKERS", "2")))
        parser.add_argument("--queues", default=os.environ.get("STUDIO_WORKER_QUEUES", "default,generation"),
                            help="Queues of the first worker.")
        parser.add_argument("--training-queues", default=os.environ.get("STUDIO_TRAINING_QUEUES", "training"),
                            help="Queues of the training worker ('' for none: train on another machine).")

    def handle(self, *args, **options):
        python = sys.executable
        bindir = os.path.dirname(python)

        def worker(queues: str, name: str) -> list[str]:
            # One process each (`solo`): a worker holds a model in memory.
            return [python, "-m", "celery", "-A", "studio", "worker", "-Q", queues, "--pool", "solo",
                    "--concurrency", "1", "--loglevel", "INFO", "-n", f"{name}@%h"]

        web = [
            os.path.join(bindir, "gunicorn"), "studio.wsgi:application",
            "--bind", f"{options['host']}:{options['port']}",
            "--workers", str(options["web_workers"]), "--threads", "4", "--timeout", "300",
            "--access-logfile", "-", "--graceful-timeout", str(GRACE_SECONDS),
        ]
        children = {"worker": subprocess.Popen(worker(options["queues"], "studio-worker"))}
        if options["training_queues"]:
            children["trainer"] = subprocess.Popen(worker(options["training_queues"], "studio-trainer"))
        children["web"] = subprocess.Popen(web)
        db = settings.DATABASES["default"]
        self.stdout.write(self.style.SUCCESS(
            f"RLHF Studio is starting on http://{options['host']}:{options['port']}/ "
            f"(database: {db['ENGINE'].rsplit('.', 1)[-1]}, broker: {settings.CELERY_BROKER_URL.split('://')[0]}, "
            f"data: {settings.DATA_DIR}). Press Ctrl-C to stop."))

        stopping = {"flag": False}

        def request_stop(signum, _frame):
            stopping["flag"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        exit_code = 0
        try:
            while not stopping["flag"]:
                for name, proc in children.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"The {name} process exited with {proc.returncode}; stopping.")
                        exit_code = proc.returncode or 1
                        stopping["flag"] = True
                        break
                time.sleep(0.5)
        finally:
            self._stop(children)
        self.stdout.write("RLHF Studio stopped.")
        if exit_code:
            sys.exit(exit_code)

    def _stop(self, children):
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
