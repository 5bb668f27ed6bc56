from django.contrib import admin

from generation.models import AIModel, Job, OutputImage, WebhookAttempt, WebhookDelivery


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


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["number", "started_at", "duration_ms", "status_code", "error", "response_excerpt"]
    readonly_fields = fields

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["webhook_id", "job", "url", "status", "attempts", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["webhook_id", "job__id", "url", "job__organization__slug"]
    readonly_fields = [
        "job",
        "url",
        "webhook_id",
        "payload",
        "attempts",
        "created_at",
        "finished_at",
    ]
    list_select_related = ["job"]
    inlines = [WebhookAttemptInline]
