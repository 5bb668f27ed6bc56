from django.contrib import admin

from generation.models import AIModel, Job, OutputImage


@admin.register(AIModel)
class AIModelAdmin(admin.ModelAdmin):
    list_display = ["model_id", "family", "is_default", "enabled", "organization", "created_at"]
    list_filter = ["family", "enabled", "is_default"]
    search_fields = ["model_id", "name"]


class OutputImageInline(admin.TabularInline):
    model = OutputImage
    extra = 0
    readonly_fields = ["index", "path", "seed", "nsfw", "width", "height", "created_at"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "organization",
        "model",
        "status",
        "priority",
        "attempts",
        "created_at",
        "generation_time",
    ]
    list_filter = ["status", "kind", "model"]
    search_fields = ["id", "organization__slug", "track_id"]
    readonly_fields = ["params", "created_at", "started_at", "finished_at", "lease_expires_at"]
    inlines = [OutputImageInline]
