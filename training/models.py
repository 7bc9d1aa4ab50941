"""Training's data: frozen, hashed dataset snapshots of a project's labels (and, on the roadmap,
training runs that read them).

Snapshots live in `training/` and not in `labeling/` because training reads snapshots only:
a trainer never queries Prompt or Ranking rows, it reads one immutable snapshot file named by
its sha256, so every model traces back to exactly the labels that made it
(modelhub.ModelArtifact.snapshot_sha256 names that file). Labeling owns the live, growing
labels; training owns the frozen copies it learns from.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

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
