"""What the training benchmarks share: Django on a private SQLite database, the product's
importer and snapshot (so a benchmark trains on exactly what a user who imported the file and
pressed Train would), device helpers and the hooks that time our trainer's steps."""
from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- Setup: a private database, the product's importer and snapshot ------------------------------

def setup_django(data_dir: str) -> None:
    """Django on a private SQLite database under `data_dir`: the user's DATABASE_URL and data
    directory are left alone. The bench's model store is `data_dir`/models too (its runs are
    numbered from 1 and would overwrite the user's trained models), with the user's converted
    default model linked into it, so it is converted once for both."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    user_data = Path(os.environ.get("STUDIO_DATA_DIR", ROOT / "var"))
    user_models = Path(os.environ.get("STUDIO_MODEL_DIR", user_data / "models"))
    bench_models = Path(data_dir) / "models"
    os.environ["STUDIO_MODEL_DIR"] = str(bench_models)
    os.environ["STUDIO_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = f"sqlite:///{Path(data_dir) / 'bench.sqlite3'}"
    os.environ.setdefault("STUDIO_SECRET_KEY", "bench")
    os.environ["DJANGO_SETTINGS_MODULE"] = "studio.settings"
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):  # no job leaves this process
        os.environ.pop(name, None)
    import django

    django.setup()
    from modelhub.default_model import DEFAULT_STORE_DIR

    (user_models / DEFAULT_STORE_DIR).mkdir(parents=True, exist_ok=True)
    bench_models.mkdir(parents=True, exist_ok=True)
    if not (bench_models / DEFAULT_STORE_DIR).exists():
        (bench_models / DEFAULT_STORE_DIR).symlink_to((user_models / DEFAULT_STORE_DIR).resolve())


def import_and_snapshot(path: Path, format_name: str, *, needs: str = "prompts") -> tuple[list[dict], dict]:
    """Import `path` into a new project with the product's importer, snapshot it with the
    default filters and split, and return the snapshot's rows and a summary. Exits when the
    import wrote none of `needs` (e.g. "demonstrations" for SFT)."""
    from django.core.management import call_command

    from labeling import importers
    from labeling.models import Project
    from training.snapshots import snapshot_create, snapshot_read_rows

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench", slug="bench")
    # The import_data command's way (in this process, waited for); older checkouts only had
    # import_run_create, which then ran in process too.
    run_import = getattr(importers, "import_run_in_process", None) or importers.import_run_create
    with open(path, "rb") as stream:
        run = run_import(project=project, user=None, stream=stream, filename=path.name, format=format_name)
    if run.errors:
        print(f"import: {len(run.errors)} error(s), first: {run.errors[0]}")
    if not run.counts.get(needs):
        sys.exit(f"The import of {path} wrote no {needs} (status {run.status}, counts {run.counts}).")
    snapshot, _ = snapshot_create(user=None, project=project)
    rows = list(snapshot_read_rows(snapshot=snapshot))
    return rows, {"file": path.name, "import_counts": run.counts, "snapshot_sha256": snapshot.sha256,
                  "snapshot_split": {k: snapshot.split.get(k) for k in ("train", "validation",
                                                                         "validation_fraction")}}


# --- Helpers --------------------------------------------------------------------------------------

def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TrainSpan:
    """Hooks that time our trainer's steps: from the first step's start to the last step's end
    (wall and this process's CPU time), and count checkpoints."""

    def __init__(self, device):
        self.device = device
        self.start = self.end = None
        self.checkpoints = 0

    def progress(self, step: int, total: int) -> None:
        if total and self.start is None:
            sync(self.device)
            self.start = (time.perf_counter(), time.process_time())

    def log(self, record: dict) -> None:
        sync(self.device)
        self.end = (time.perf_counter(), time.process_time())

    def checkpoint(self, step, path) -> None:
        self.checkpoints += 1

    def hooks(self):
        from training.ml.trainer import Hooks

        return Hooks(log=self.log, progress=self.progress, checkpoint=self.checkpoint)


def preference_items_taken(groups, cfg, *, steps: int) -> list[int]:
    """The training groups (indexes, with repeats across epochs) that the first `steps` steps of
    our reward or DPO trainer take: the length-grouped plan RewardTask.plan and DPOTask.plan
    follow (`cfg`: their config)."""
    from training.ml.reward import preference_plan

    taken, epoch = [], 0
    while steps > 0:
        plan = preference_plan(groups, cfg, epoch)
        for items in plan[:steps]:
            taken.extend(items)
        steps -= len(plan)
        epoch += 1
    return taken


def config_from_args(cls, args) -> tuple[object, list[str]]:
    """A kind's config (`cls`: SFTConfig, RewardConfig, DPOConfig) with the defaults, overridden
    only by the benchmark's command line (seed, epochs, max_length, tokens_per_microbatch,
    max_steps, checkpoint_every when given), and notes on what had to follow a shorter
    max_length for the config to stay valid."""
    config: dict = {"seed": args.seed, "epochs": args.epochs}
    defaults = cls()
    notes = []
    if args.max_length:
        config["max_length"] = args.max_length
        if defaults.max_response_tokens >= args.max_length:  # else the config is invalid
            config["max_response_tokens"] = args.max_length // 2
            notes.append(f"max_response_tokens {config['max_response_tokens']} (max_length/2: the default "
                         f"{defaults.max_response_tokens} does not fit)")
        if defaults.tokens_per_microbatch < args.max_length:
            config["tokens_per_microbatch"] = args.max_length
            notes.append(f"tokens_per_microbatch {args.max_length} (at least max_length)")
    if args.tokens_per_microbatch:
        config["tokens_per_microbatch"] = args.tokens_per_microbatch
    if args.max_steps:
        config["max_steps"] = args.max_steps
    if getattr(args, "checkpoint_every", 0):
        config["checkpoint_every"] = args.checkpoint_every
    return cls(**config), notes


def require_trl(args) -> None:
    """Stop with what to install when TRL is needed (no --skip-trl) and missing."""
    import importlib.util

    if not getattr(args, "skip_trl", False) and importlib.util.find_spec("trl") is None:
        sys.exit("TRL is not installed: pip install -r requirements-bench.txt (or run with --skip-trl)")


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for the run's database, models and checkpoints (the caller removes
    it); a run killed with SIGTERM (e.g. `timeout`) still exits through the caller's cleanup."""
    import signal
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return scratch


def device_and_base(args):
    """(torch device, the base model's folder): --device (else CUDA when present), --model (else
    the default model, converted once into the model store). After setup_django."""
    import torch
    import transformers
    from django.conf import settings

    from modelhub.default_model import default_model_convert

    transformers.logging.set_verbosity_error()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, Path(args.model) if args.model else default_model_convert(Path(settings.MODEL_DIR))


def emit_summary(summary: dict, json_path: str = "") -> None:
    """Print a benchmark's figures as its last line (one JSON object), and write them to
    `json_path` too when given."""
    import json

    line = json.dumps(summary, default=str)
    if json_path:
        Path(json_path).write_text(line + "\n")
    print(line)
