from django.contrib import admin

from training.models import DatasetSnapshot, ExportJob, SnapshotJob


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    """Read-only: snapshots are made by training.snapshots.snapshot_create (page, API or the
    dataset_snapshot command) and are never edited."""

    list_display = ("short_hash", "project", "created_by", "created_at", "size_bytes")
    list_filter = ("project",)
    search_fields = ("sha256", "project__slug")
    readonly_fields = [f.name for f in DatasetSnapshot._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class _JobAdmin(admin.ModelAdmin):
    """Read-only: jobs are written by their services and workers (training.snapshot_jobs,
    training.export_jobs); their pages and the API cancel them."""

    list_filter = ("status", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SnapshotJob)
class SnapshotJobAdmin(_JobAdmin):
    list_display = ("id", "project", "status", "prompts_done", "prompts_total", "snapshot", "created", "worker",
                    "created_by", "created_at", "finished_at")
    search_fields = ("project__slug", "snapshot__sha256", "worker")


@admin.register(ExportJob)
class ExportJobAdmin(_JobAdmin):
    list_display = ("id", "snapshot", "format", "status", "phase", "rows_done", "rows_total", "size_bytes", "worker",
                    "created_by", "created_at", "finished_at")
    list_filter = ("status", "format", "created_at")
    search_fields = ("snapshot__sha256", "filename", "worker")
