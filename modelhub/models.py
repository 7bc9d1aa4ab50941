"""The model registry: every model artifact with its lineage (parent, dataset snapshot, config)."""
from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from studio.jobs import Job


class ModelArtifact(models.Model):
    class Kind(models.TextChoices):
        BASE = "base", "Base (pretrained)"
        SFT = "sft", "Supervised fine-tuned"
        REWARD = "reward", "Reward model"
        POLICY = "policy", "PPO policy"
        DPO = "dpo", "DPO policy"
        BEST_OF_N = "best_of_n", "Best-of-n fine-tuned"
        PROMPT_TUNED = "prompt_tuned", "Soft-prompt tuned"

    class Format(models.TextChoices):
        HF = "hf", "Hugging Face safetensors directory"
        GGUF = "gguf", "GGUF file"
        PEFT = "peft", "peft adapter on its parent"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.BASE)
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.HF)
    # Absolute path, or relative to STUDIO_MODEL_DIR for artifacts the store owns.
    path = models.CharField(max_length=1000)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    # The project whose labels trained it; null for imported models (every project may use them).
    # A trained model is never another project's generator unless an admin promotes it there.
    project = models.ForeignKey("labeling.Project", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="models")
    # The dataset snapshot it was trained on (null for imported models); the column holds the
    # snapshot's sha256, so the hash of the exact labels is in the row itself.
    snapshot = models.ForeignKey("training.DatasetSnapshot", to_field="sha256", null=True, blank=True,
                                 on_delete=models.PROTECT, related_name="models")
    # The models it was trained against: the frozen reference (the SFT model PPO and DPO stay
    # close to) and the reward model that scored its answers.
    reference_model = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reward_model = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # sha256 over the weight files (name and bytes, in name order): says two artifacts are the same
    # weights, and that a file on disk is still the one that was registered.
    checksum = models.CharField(max_length=64, blank=True)
    # torch, transformers, peft, accelerate versions of the run that made it.
    library_versions = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def snapshot_sha256(self) -> str:
        """The dataset snapshot's sha256 ("" for imported models)."""
        return self.snapshot_id or ""

    @property
    def is_generative(self) -> bool:
        """Reward models score answers; every other kind writes them."""
        return self.kind != self.Kind.REWARD


class ProjectGenerator(models.Model):
    """Which model writes a project's candidates (the "current policy").

    A project without a row here uses the default base model (see
    `selectors.project_generator_model`); training a model never changes it. Promoting a newly
    trained policy is an admin setting this row.
    """

    project = models.OneToOneField("labeling.Project", on_delete=models.CASCADE, related_name="generator")
    model = models.ForeignKey(ModelArtifact, on_delete=models.PROTECT, related_name="+")
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    set_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.project_id} -> {self.model_id}"


class GenerationJob(Job):
    """Sampling K candidates for a set of a project's prompts, on the Celery `generation` queue.

    Its lifecycle (queued → running → succeeded/failed/cancelled, worker claim, heartbeat,
    recovery) is every job's: studio.jobs. Progress lives here and only here (written by
    `services.generation_job_run` after each chunk of prompts); candidates themselves are
    Candidate rows whose external_id is `job<id>-k<slot>`, so a retried or resumed job never
    writes one twice.
    """

    task_name = "modelhub.tasks.generation_job_task"
    label = "Generation job"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="generation_jobs")
    model = models.ForeignKey(ModelArtifact, on_delete=models.PROTECT, related_name="generation_jobs")
    prompt_ids = models.JSONField(default=list)
    k = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(9)])
    # The project's generation settings when the job was created (temperatures, top_p,
    # max_new_tokens, prompt_templates): later edits to the project do not change a running job.
    generation_settings = models.JSONField(default=dict)
    seed = models.BigIntegerField(default=0)  # every candidate's seed derives from (seed, prompt, slot)
    prompts_total = models.PositiveIntegerField(default=0)
    prompts_done = models.PositiveIntegerField(default=0)
    candidates_total = models.PositiveIntegerField(default=0)
    candidates_done = models.PositiveIntegerField(default=0)
    tokens_generated = models.PositiveBigIntegerField(default=0)
    generation_seconds = models.FloatField(default=0.0)  # time spent sampling (excludes model loading)
    tokens_per_second = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(k__gte=1, k__lte=9), name="generation_job_k_1_to_9"),
        ]

    def __str__(self) -> str:
        return f"Generation job {self.pk} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if not self.candidates_total:
            return 100 if self.status == self.Status.SUCCEEDED else 0
        return int(100 * self.candidates_done / self.candidates_total)

    def external_id(self, slot: int) -> str:
        """The Candidate.external_id of this job's `slot`-th candidate of a prompt."""
        return f"job{self.pk}-k{slot}"
