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
    directory are left alone. The model store stays the user's (where the default model is
    converted once), so its location is fixed before STUDIO_DATA_DIR moves."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    user_data = Path(os.environ.get("STUDIO_DATA_DIR", ROOT / "var"))
    os.environ.setdefault("STUDIO_MODEL_DIR", str(user_data / "models"))
    os.environ["STUDIO_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = f"sqlite:///{Path(data_dir) / 'bench.sqlite3'}"
    os.environ.setdefault("STUDIO_SECRET_KEY", "bench")
    os.environ["DJANGO_SETTINGS_MODULE"] = "studio.settings"
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):  # no job leaves this process
        os.environ.pop(name, None)
    import django

    django.setup()


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
    from training.ml.data import step_plan
    from training.ml.reward import group_cost

    lengths = [group_cost(g, shared_prefix=cfg.share_prompt_prefix) for g in groups]
    taken, epoch = [], 0
    while steps > 0:
        plan = step_plan(len(groups), per_step=cfg.prompts_per_step, seed=cfg.seed, epoch=epoch, lengths=lengths)
        for items in plan[:steps]:
            taken.extend(items)
        steps -= len(plan)
        epoch += 1
    return taken
