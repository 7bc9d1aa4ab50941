from django.contrib import admin

from labeling.models import (
    Candidate,
    Demonstration,
    GoldRanking,
    ImportRun,
    LabelReview,
    Project,
    Prompt,
    Ranking,
    Task,
)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "k_candidates", "overlap", "lease_minutes", "is_archived", "created_at")
    list_filter = ("is_archived", "k_candidates", "created_at")
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_by", "created_at", "updated_at")


class DemonstrationInline(admin.TabularInline):
    model = Demonstration
    extra = 0
    fields = ("text", "author", "source", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("author",)


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "project", "kind", "source", "created_by", "created_at")
    list_filter = ("project", "kind", "source", "source_format", "created_at")
    search_fields = ("messages", "external_id", "content_hash")
    raw_id_fields = ("created_by",)
    readonly_fields = ("content_hash", "created_at")
    inlines = [DemonstrationInline]


@admin.register(Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "author", "source", "created_at")
    list_filter = ("source", "prompt__project", "created_at")
    search_fields = ("text", "author__username")
    raw_id_fields = ("prompt", "author")


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "source", "model", "created_at")
    list_filter = ("source", "model", "prompt__project", "created_at")
    search_fields = ("text", "external_id")
    raw_id_fields = ("prompt",)


@admin.register(Ranking)
class RankingAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "annotator", "source", "all_bad", "created_at")
    list_filter = ("source", "all_bad", "prompt__project", "created_at")
    search_fields = ("annotator__username", "comment")
    raw_id_fields = ("prompt", "annotator")


@admin.register(ImportRun)
class ImportRunAdmin(admin.ModelAdmin):
    """Read-only: an import is a job (labeling.importers.run) that only its worker writes; the
    import page cancels one."""

    list_display = ("id", "project", "format", "filename", "status", "bad_rows", "worker", "created_by",
                    "created_at", "finished_at")
    list_filter = ("format", "status", "project", "created_at")
    search_fields = ("filename", "file_sha256", "worker")
    readonly_fields = [f.name for f in ImportRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- Work queue, reviews and gold (issue 5). Reviews and gold rows are history: no editing. ---

@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "kind", "prompt", "annotator", "status", "slot", "leased_at", "expires_at")
    list_filter = ("kind", "status", "project", "leased_at")
    search_fields = ("annotator__username", "skip_reason")
    raw_id_fields = ("prompt", "annotator", "label", "demonstration")


@admin.register(LabelReview)
class LabelReviewAdmin(admin.ModelAdmin):
    list_display = ("id", "ranking", "reviewer", "verdict", "created_at")
    list_filter = ("verdict", "created_at")
    search_fields = ("reason", "reviewer__username")
    raw_id_fields = ("ranking", "reviewer")

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GoldRanking)
class GoldRankingAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "created_by", "created_at")
    raw_id_fields = ("prompt", "created_by")

    def has_change_permission(self, request, obj=None):
        return False
