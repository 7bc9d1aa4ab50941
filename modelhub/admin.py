from django.contrib import admin

from modelhub.models import GenerationJob, ModelArtifact, ProjectGenerator


@admin.register(ModelArtifact)
class ModelArtifactAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "kind", "format", "project", "parent", "snapshot_sha256", "created_at")
    list_filter = ("kind", "format", "project")
    search_fields = ("name", "path", "snapshot__sha256", "checksum")
    raw_id_fields = ("parent", "project", "snapshot", "reference_model", "reward_model", "created_by")
    readonly_fields = ("created_at",)


@admin.register(ProjectGenerator)
class ProjectGeneratorAdmin(admin.ModelAdmin):
    list_display = ("project", "model", "set_by", "set_at")
    raw_id_fields = ("project", "model", "set_by")


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    """Read-mostly: jobs are started and cancelled from the project page or the API, so that
    the services' rules (validation, broker check) always apply."""

    list_display = ("id", "project", "model", "status", "k", "prompts_done", "prompts_total", "candidates_done",
                    "candidates_total", "tokens_per_second", "device", "created_at")
    list_filter = ("status",)
    search_fields = ("project__slug", "model__name", "error", "celery_task_id")
    readonly_fields = [f.name for f in GenerationJob._meta.fields]

    def has_add_permission(self, request):
        return False
