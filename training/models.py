"""Training's data: frozen, hashed dataset snapshots of a project's labels, the training runs
that read them, their metrics over steps, and evaluations of the models they make.

Snapshots live in `training/` and not in `labeling/` because training reads snapshots only:
a trainer never queries Prompt or Ranking rows, it reads one immutable snapshot file named by
its sha256, so every model traces back to exactly the labels that made it
(modelhub.ModelArtifact.snapshot points at it). Labeling owns the live, growing
labels; training owns the frozen copies it learns from.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import models

from studio.jobs import Job

# Bump when the canonical row layout changes: a new schema gives new hashes for the same labels,
# which is right, because the file's bytes differ.
SNAPSHOT_SCHEMA_VERSION = 1


class DatasetSnapshot(models.Model):
    """One frozen snapshot of a project's labels, stored as canonical JSONL.

    The file (DATA_DIR/snapshots/<sha256>.jsonl) holds a header line (schema, project id,
    filters, split settings, consensus method) and then one line per prompt, sorted by prompt
    id; `sha256` is the hash of those exact bytes. The same labels and filters give the same
    bytes, hence the same hash, so creating a snapshot that exists returns it. Neither the row
    nor the file is ever rewritten (the file is made read-only once written).
    """

    project = models.ForeignKey("labeling.Project", on_delete=models.PROTECT, related_name="snapshots")
    sha256 = models.CharField(max_length=64, unique=True)
    schema_version = models.PositiveSmallIntegerField(default=SNAPSHOT_SCHEMA_VERSION)
    # The normalised filters it was made with (training.snapshots.SnapshotFilters.as_dict()):
    # created_from/created_to, min_agreement, exclude_flagged_candidates,
    # exclude_flagged_labels, exclude_imported. Rejected labels never enter a snapshot.
    filters = models.JSONField(default=dict)
    # {"seed", "validation_fraction", "train": prompts, "validation": prompts}
    split = models.JSONField(default=dict)
    # {"prompts", "demonstrations", "candidates", "rankings", "annotators", "consensus",
    #  "consensus_pairs", "annotator_pairs", "imported_prompts"}
    counts = models.JSONField(default=dict)
    # Import formats of the imported prompts it holds ({"fgrlhf": 12}), for licence notes.
    sources = models.JSONField(default=dict)
    # Relative to settings.DATA_DIR, so a moved data dir keeps working.
    path = models.CharField(max_length=500)
    size_bytes = models.PositiveBigIntegerField(default=0)
    # Lines of the file that json wrote because orjson refused them (integers beyond 64 bits,
    # lone surrogates; see training.snapshots.canonical_line): only such lines can hold what
    # orjson would read differently from json. 0 lets readers parse every line with orjson
    # without scanning it first; null (a snapshot made before this was counted): unknown.
    json_fallback_lines = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Snapshot {self.sha256[:12]} of project {self.project_id}"

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def file_path(self) -> Path:
        return Path(settings.DATA_DIR) / self.path


class TrainingRun(Job):
    """One training run: a base model trained on a snapshot's labels into a new registered model.

    Runs on the Celery `training` queue (training.tasks); its lifecycle (claim, heartbeat,
    cancel, recovery after a killed worker) is every job's (studio.jobs). Checkpoints live in
    DATA_DIR/runs/<id>/checkpoints: a restarted worker resumes from the newest one. Metrics
    over steps are TrainingMetric rows (the run page plots them live); `metrics` holds the
    latest of each.
    """

    task_name = "training.tasks.training_run_task"
    label = "Training run"
    # A step of the default model takes seconds; a checkpoint of it a few more.
    stale_after = timedelta(seconds=300)

    class Kind(models.TextChoices):
        SFT = "sft", "Supervised fine-tuning"
        REWARD = "reward", "Reward model"
        PPO = "ppo", "PPO"
        DPO = "dpo", "DPO"
        BEST_OF_N = "best_of_n", "Best-of-n"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    project = models.ForeignKey("labeling.Project", on_delete=models.PROTECT, related_name="training_runs")
    base_model = models.ForeignKey("modelhub.ModelArtifact", on_delete=models.PROTECT, related_name="training_runs")
    # The reward model a policy is trained against (PPO, best-of-n); null for SFT and reward runs.
    reward_model = models.ForeignKey("modelhub.ModelArtifact", null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    snapshot = models.ForeignKey(DatasetSnapshot, to_field="sha256", on_delete=models.PROTECT,
                                 related_name="training_runs")
    # The validated config with every default filled in (training.ml.config): what ran.
    config = models.JSONField(default=dict)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(default=0.0)
    # The latest value of every metric (train and validation), and the final ones once finished.
    metrics = models.JSONField(default=dict, blank=True)
    # What the snapshot gave: examples, pairs, truncation and identical-pair counts per split.
    data_stats = models.JSONField(default=dict, blank=True)
    checkpoint_step = models.PositiveIntegerField(null=True, blank=True)  # the newest checkpoint
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)  # the last resume started here
    resumes = models.PositiveSmallIntegerField(default=0)
    log_tail = models.TextField(blank=True)  # the last lines of the run's log, for the run page
    model = models.OneToOneField("modelhub.ModelArtifact", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="training_run")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.kind}, {self.status})"

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return int(100 * self.step / self.total_steps) if self.total_steps else 0

    @property
    def run_dir(self) -> Path:
        return Path(settings.DATA_DIR) / "runs" / str(self.pk)


class TrainingMetric(models.Model):
    """A run's metrics at one step: the training step's (loss, learning rate, grad norm, ...) or
    an evaluation's on the validation split. A resumed run rewrites the steps after its
    checkpoint, so the series is the uninterrupted run's."""

    class Split(models.TextChoices):
        TRAIN = "train", "Training step"
        VALIDATION = "validation", "Validation"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metric_rows")
    split = models.CharField(max_length=12, choices=Split.choices)
    step = models.PositiveIntegerField()
    values = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step", "split"]
        constraints = [models.UniqueConstraint(fields=["run", "split", "step"], name="training_metric_once_per_step")]


class ModelEvaluation(Job):
    """A reward model scored on a snapshot's ranked pairs: pairwise accuracy (ties excluded) with
    its 95% interval, pairs scored, pairs identical after truncation, accuracy per import source.
    Runs on the `default` queue, so a long training run never holds it up."""

    task_name = "training.tasks.model_evaluation_task"
    label = "Evaluation"

    class Split(models.TextChoices):
        VALIDATION = "validation", "Validation split"
        TRAIN = "train", "Training split"
        ALL = "all", "All prompts"

    model = models.ForeignKey("modelhub.ModelArtifact", on_delete=models.CASCADE, related_name="evaluations")
    snapshot = models.ForeignKey(DatasetSnapshot, to_field="sha256", on_delete=models.PROTECT,
                                 related_name="evaluations")
    split = models.CharField(max_length=12, choices=Split.choices, default=Split.VALIDATION)
    # The run that trained the model made it (its final validation), else an admin asked for it.
    training_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="evaluations")
    accuracy = models.FloatField(null=True, blank=True)
    # {"accuracy", "accuracy_ci", "ci_method", "pairs", "prompts", "identical_pairs", "by_source",
    #  "loss", "truncated_prompts", "truncated_responses"}
    results = models.JSONField(default=dict, blank=True)
    batches_done = models.PositiveIntegerField(default=0)
    batches_total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Evaluation {self.pk} of model {self.model_id} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return int(100 * self.batches_done / self.batches_total) if self.batches_total else 0


class SnapshotJob(Job):
    """Making a dataset snapshot on the Celery `default` queue (training.snapshot_jobs): the
    project, the normalised filters and split it was asked with, its progress, and the snapshot
    it made or found (`created` False: the same labels were already frozen). A snapshot of a big
    project takes seconds to minutes, longer than a web request should."""

    task_name = "training.tasks.snapshot_job_task"
    label = "Snapshot job"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="snapshot_jobs")
    # training.snapshots.SnapshotFilters.as_dict() and {"validation_fraction", "seed"}.
    filters = models.JSONField(default=dict)
    split = models.JSONField(default=dict)
    # sha256 of (project, filters, split): a queued job with the same key is reused, not doubled.
    spec_key = models.CharField(max_length=64, db_index=True)
    prompts_done = models.PositiveIntegerField(default=0)
    prompts_total = models.PositiveIntegerField(default=0)  # the project's prompts when it started
    snapshot = models.ForeignKey(DatasetSnapshot, to_field="sha256", null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="jobs")
    created = models.BooleanField(null=True, blank=True)  # True: a new snapshot; False: it existed

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Snapshot job {self.pk} of project {self.project_id} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return min(99, int(100 * self.prompts_done / self.prompts_total)) if self.prompts_total else 0


class ExportJob(Job):
    """An export built on the Celery `default` queue into a file under DATA_DIR/exports/ (only
    `hf` today: it builds a `datasets` dataset on disk first, which can take long). The finished
    file is served for every later request of the same export (same snapshot, format and
    options); the other formats are streamed directly."""

    task_name = "training.tasks.export_job_task"
    label = "Export job"
    # `datasets` saves a big dataset in one call, without a heartbeat.
    stale_after = timedelta(seconds=600)

    class Phase(models.TextChoices):
        ROWS = "rows", "Reading the snapshot's rows"
        DATASET = "dataset", "Saving the dataset"
        ARCHIVE = "archive", "Writing the archive"
        DONE = "done", "Done"

    snapshot = models.ForeignKey(DatasetSnapshot, to_field="sha256", on_delete=models.CASCADE,
                                 related_name="export_jobs")
    format = models.CharField(max_length=40)
    # The normalised training.exports.ExportOptions (as a dict), and its canonical JSON: the key
    # that says two requests ask for the same export.
    options = models.JSONField(default=dict)
    options_key = models.CharField(max_length=300)
    filename = models.CharField(max_length=300)  # the download's name
    path = models.CharField(max_length=500, blank=True)  # the finished file, relative to DATA_DIR
    size_bytes = models.PositiveBigIntegerField(default=0)
    phase = models.CharField(max_length=20, choices=Phase.choices, default=Phase.ROWS)
    rows_done = models.PositiveIntegerField(default=0)  # snapshot rows read
    rows_total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["snapshot", "format", "options_key"], name="export_job_lookup")]

    def __str__(self) -> str:
        return f"Export job {self.pk} ({self.format} of {self.snapshot_id[:12]}, {self.status})"

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        if self.phase == self.Phase.ROWS:
            return min(90, int(90 * self.rows_done / self.rows_total)) if self.rows_total else 0
        return 95

    @property
    def file_path(self) -> Path | None:
        return Path(settings.DATA_DIR) / self.path if self.path else None
