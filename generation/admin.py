from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework.exceptions import APIException

from generation import jobs, service
from generation.models import (
    AIModel,
    DailyImages,
    Job,
    OutputImage,
    WebhookAttempt,
    WebhookDelivery,
    WorkerHeartbeat,
)
from sdplatform.admin_actions import ReadOnlyAdmin


@admin.register(AIModel)
class AIModelAdmin(admin.ModelAdmin):
    list_display = [
        "model_id",
        "family",
        "distillation",
        "is_default",
        "enabled",
        "organization",
        "created_at",
    ]
    list_filter = ["family", "distillation", "enabled", "is_default"]
    search_fields = ["model_id", "name"]
    # Written by the object store with the weights (generation/model_store.py), and checked
    # against them on every fetch: not something to type.
    readonly_fields = ["files", "sha256", "size", "storage_prefix"]


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
    # A state changes through the actions (cancel refunds, and uncounts the day's images), never
    # through the form, which would do neither.
    readonly_fields = [
        "status",
        "params",
        "created_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
    ]
    inlines = [OutputImageInline]
    list_select_related = ["organization", "model"]
    date_hierarchy = "created_at"
    actions = ["cancel", "retry"]

    @admin.action(description="Cancel (and refund) queued or running jobs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        canceled = sum(jobs.cancel(job) for job in queryset)
        self.message_user(request, f"Canceled {canceled} job(s); finished ones were left alone.")

    @admin.action(description="Retry: queue a new job with the same parameters (charged)")
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        queued, refused = [], []
        for job in queryset.select_related("organization__plan", "model"):
            try:
                new = service.submit_again(
                    job,
                    track_id=job.track_id,
                    webhook=job.webhook,
                    webhook_events=job.webhook_events,
                    base_url=job.base_url,
                    output_base64=job.output_base64,
                )
            except FileNotFoundError:
                refused.append(f"{job.pk}: its input images are no longer kept")
            except APIException as exc:
                refused.append(f"{job.pk}: {exc.detail}")
            else:
                queued.append(str(new.pk))
        if queued:
            self.message_user(request, f"Queued job(s) {', '.join(queued)}.")
        if refused:
            self.message_user(request, "Not queued: " + "; ".join(refused), level="error")


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "status_code", "error", "response_excerpt")
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


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "last_seen", "models_loaded", "jobs_done", "current_job", "started_at"]
    search_fields = ["name"]
    readonly_fields = [f.name for f in WorkerHeartbeat._meta.fields]


@admin.register(OutputImage)
class OutputImageAdmin(admin.ModelAdmin):
    list_display = ["job", "index", "path", "seed", "nsfw", "width", "height", "created_at"]
    list_filter = ["nsfw"]
    search_fields = ["job__id", "path", "job__organization__slug"]
    readonly_fields = ["job", "index", "path", "seed", "nsfw", "width", "height", "created_at"]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    list_display = ["delivery", "number", "started_at", "status_code", "duration_ms", "error"]
    list_filter = ["status_code"]
    search_fields = ["delivery__webhook_id", "delivery__job__id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(DailyImages)
class DailyImagesAdmin(ReadOnlyAdmin):
    """Read-only: submits and finish() keep the totals (generation/quotas.py)."""

    list_display = ["organization", "day", "images"]
    search_fields = ["organization__slug"]
    date_hierarchy = "day"
    list_select_related = ["organization"]
