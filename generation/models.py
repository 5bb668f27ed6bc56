"""The model registry, jobs and their output images."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from accounts.models import ApiKey, Organization
from generation.engine.request import OUTPUT_FORMATS, ModelRef
from sdplatform.rows import Selected, fixed_cursor

# An AIModel's display name; an own model's longer name is refused, not cut (own_models.py).
MODEL_NAME_LENGTH = 200


class AIModelQuerySet(models.QuerySet["AIModel"]):
    def visible_to(self, organization: Organization) -> AIModelQuerySet:
        """Enabled models that this organization may use: public ones and its own."""
        return self.filter(enabled=True, status=AIModel.Status.READY).filter(
            models.Q(organization__isnull=True) | models.Q(organization=organization)
        )


class AIModel(models.Model):
    """A model registered by path (relative to PICTOR_MODELS_DIR, or absolute).

    Checkpoints (sd15, sd2, sdxl, inpaint) are what a request's model_id names; the other
    families are add-ons a request names in its own fields (lora_model, embeddings_model, vae,
    controlnet_model) or the super-resolution model. `base` is the architecture a model belongs
    to, so an add-on is only applied to a checkpoint it fits.
    """

    class Family(models.TextChoices):
        SD15 = "sd15", "Stable Diffusion 1.x"
        SD2 = "sd2", "Stable Diffusion 2.x"
        SDXL = "sdxl", "Stable Diffusion XL"
        INPAINT = "inpaint", "Inpainting"
        CONTROLNET = "controlnet", "ControlNet"
        LORA = "lora", "LoRA"
        EMBEDDING = "embedding", "Textual inversion embedding"
        VAE = "vae", "VAE"
        UPSCALER = "upscaler", "Super resolution"
        REFINER = "refiner", "SDXL refiner"
        IP_ADAPTER = "ip_adapter", "IP-Adapter"

    class Base(models.TextChoices):
        SD15 = "sd15", "SD 1.x"
        SD2 = "sd2", "SD 2.x"
        SDXL = "sdxl", "SDXL"

    CHECKPOINTS = (Family.SD15, Family.SD2, Family.SDXL, Family.INPAINT)

    model_id = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=MODEL_NAME_LENGTH)
    family = models.CharField(max_length=12, choices=Family.choices, default=Family.SD15)
    base = models.CharField(
        max_length=8,
        choices=Base.choices,
        default=Base.SD15,
        help_text="The architecture; add-ons only apply to checkpoints of the same base",
    )
    path = models.CharField(max_length=500, help_text="Relative to PICTOR_MODELS_DIR, or absolute")
    config_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="For a single-file checkpoint: a diffusers folder holding its configs",
    )

    class Distillation(models.TextChoices):
        NONE = "", "None (the plan's steps)"
        LCM = "lcm", "LCM"
        TURBO = "turbo", "Turbo"
        LIGHTNING = "lightning", "Lightning"

    distillation = models.CharField(
        max_length=12,
        choices=Distillation.choices,
        blank=True,
        default=Distillation.NONE,
        help_text="A few-step checkpoint takes 1 to 8 steps, outside the plan's steps list",
    )
    description = models.TextField(blank=True)
    is_default = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="private_models",
        help_text="Empty: visible to every organization",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Status(models.TextChoices):
        VALIDATING = "validating", "Validating (a worker loads it once)"
        READY = "ready"
        FAILED = "failed"

    # A tenant's own model (or an operator's published one) lives in the object store and is
    # fetched into each worker's model cache on first use (generation/model_store.py).
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True, help_text="Why validation failed")
    sha256 = models.CharField(
        max_length=64, blank=True, help_text="Of the uploaded weights file, for a stored model"
    )
    size = models.BigIntegerField(default=0, help_text="Bytes in the object store, all files")
    storage_prefix = models.CharField(
        max_length=300, blank=True, help_text="Object-store folder of a stored model; empty: a path"
    )
    files = models.JSONField(
        default=list, blank=True, help_text="A stored model's files: name, sha256, size"
    )

    class SampleState(models.TextChoices):
        NONE = "", "None yet"
        PENDING = "pending", "Pending (a worker makes it)"
        READY = "ready"
        FAILED = "failed"

    # A checkpoint's thumbnail on the models page, made once by a worker (model_samples.py).
    sample_state = models.CharField(
        max_length=8, choices=SampleState.choices, blank=True, default=SampleState.NONE
    )
    sample_path = models.CharField(
        max_length=300, blank=True, help_text="Storage name of the sample image (private)"
    )
    sample_error = models.TextField(blank=True, help_text="Why the sample could not be made")
    sample_attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Times a sample was queued (a lost task is queued again, capped)"
    )
    sample_at = models.DateTimeField(
        null=True, blank=True, help_text="When the sample was last queued, made or given up"
    )

    objects = AIModelQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="generation_aimodel_one_default",
            )
        ]

    def __str__(self) -> str:
        return self.model_id

    @property
    def is_checkpoint(self) -> bool:
        return self.family in self.CHECKPOINTS

    @property
    def local_path(self) -> str:
        """The absolute folder (or file) the engine loads."""
        return str(Path(settings.PICTOR_MODELS_DIR) / self.path)

    def ref(self) -> ModelRef:
        """The engine's view of this model: where it is and how to load it."""
        if self.storage_prefix:
            from generation import model_store  # fetches a stored model into this host's cache

            return model_store.local_ref(self, stored_models)
        config = (
            str(Path(settings.PICTOR_MODELS_DIR) / self.config_path) if self.config_path else ""
        )
        return ModelRef(
            model_id=self.model_id,
            path=self.local_path,
            family=self.family,
            base=self.base,
            config_path=config,
        )


def default_webhook_events() -> list[str]:
    """A job's webhook events unless the client chose: completion only, as before events."""
    return [WebhookEvent.COMPLETED.value]


def stored_models() -> models.QuerySet[AIModel]:
    """Every model whose files are in the object store (generation/model_store.py)."""
    return AIModel.objects.exclude(storage_prefix="").only("pk", "files")


class WebhookEvent(models.TextChoices):
    """What a job's webhook is called for; the client picks some (`webhook_events`)."""

    START = "start", "The job began processing"
    PROGRESS = "progress", "The job passed 25, 50 or 75 % of its steps"
    COMPLETED = "completed", "The job ended: success, failed or canceled"


def find_visible(organization: Organization, model_id: str | None) -> AIModel | None:
    """`AIModel.objects.visible_to(organization)`'s `model_id`, or its default one for None.

    The `.filter(...).first()` of either, as one fixed statement: every submit looks its model
    up, and the ORM's building of the query cost more than PostgreSQL's answer (sdplatform/rows.py).
    """
    selected, sql = visible_model_query("model_id" if model_id else "is_default")
    value = model_id if model_id else True
    with fixed_cursor() as cursor:
        cursor.execute(sql, [True, AIModel.Status.READY.value, organization.pk, value])
        row = cursor.fetchone()
    return None if row is None else selected.instance(row)


@functools.cache
def visible_model_query(column: str) -> tuple[Selected[AIModel], str]:
    selected = Selected(AIModel, "m")
    sql = (
        f"SELECT {selected.sql} FROM {AIModel._meta.db_table} m"
        " WHERE m.enabled = %s AND m.status = %s"
        " AND (m.organization_id IS NULL OR m.organization_id = %s)"
        f" AND m.{connection.ops.quote_name(column)} = %s ORDER BY m.id LIMIT 1"
    )
    return selected, sql


# A test ping from the settings page: a delivery without a job, never chosen by a client.
PING_EVENT = "ping"
DELIVERY_EVENTS = [*WebhookEvent.choices, (PING_EVENT, "A test ping from the settings page")]


class JobQuerySet(models.QuerySet["Job"]):
    def for_org(self, organization: Organization) -> JobQuerySet:
        """Jobs of one tenant; every id that comes from a request goes through this."""
        return self.filter(organization=organization)

    def waiting(self) -> JobQuerySet:
        return self.filter(status__in=Job.WAITING)


class Job(models.Model):
    """One generation request: queued, run by a worker under a lease, then finished."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        SUCCESS = "success"
        FAILED = "failed"
        CANCELED = "canceled"

    WAITING = (Status.QUEUED, Status.PROCESSING)
    FINISHED = (Status.SUCCESS, Status.FAILED, Status.CANCELED)
    # Not a column: True on the instance a submit answered with an earlier request's job, found by
    # its Idempotency-Key (generation/service.py Replayed); a blocking wait never cancels that one.
    replayed = False

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="jobs")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=20, default="text2img")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(help_text="The GenerationRequest, as to_params() wrote it")
    priority = models.SmallIntegerField(default=0)
    cost = models.PositiveIntegerField(default=0, help_text="Credits")
    track_id = models.CharField(max_length=255, blank=True)
    webhook = models.URLField(max_length=2000, blank=True, help_text="Called when the job ends")
    webhook_events = models.JSONField(
        default=default_webhook_events,
        help_text="The events the webhook is called for (WebhookDelivery.Event values)",
    )
    base_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="The scheme and host the client called, for absolute URLs in webhooks",
    )
    output_base64 = models.BooleanField(
        default=False, help_text="Answer with base64 images instead of URLs"
    )
    # Not the ModelsLab `request_id` (that is the job's own id): the HTTP request's log id.
    http_request_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="X-Request-ID of the request that submitted it, for the worker's log lines",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    generation_time = models.FloatField(null=True, blank=True, help_text="Seconds")
    error = models.TextField(blank=True)
    expired_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the plan's retention deleted this job's images (generation/retention.py)",
    )
    # The client's Idempotency-Key (1..255 characters; "#<n>" added for the n-th job of a request
    # that queues several): a retried submit with it finds this job instead of making a new one.
    idempotency_key = models.CharField(max_length=300, blank=True)
    request_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 of the submit's path and body, to refuse a key reused for another one",
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        constraints = [
            # submit's replay lookup: WHERE organization_id=%s AND idempotency_key=%s; unique, so
            # two concurrent submits with one key make one job (the second insert fails).
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="generation_job_unique_idempotency_key",
            )
        ]
        indexes = [
            # claim_next_job(): WHERE status='queued' ORDER BY priority DESC, created_at, id
            models.Index(
                fields=["status", "-priority", "created_at", "id"],
                name="generation_job_claim_idx",
            ),
            # reap_expired_jobs(): WHERE status='processing' AND lease_expires_at < now
            models.Index(fields=["status", "lease_expires_at"], name="generation_job_lease_idx"),
            # history and usage pages: WHERE organization_id=%s ORDER BY created_at DESC
            models.Index(fields=["organization", "-created_at"], name="generation_job_org_idx"),
            # fair share and the queue cap: WHERE organization_id=%s AND status=%s (count)
            models.Index(fields=["organization", "status"], name="generation_job_org_status_idx"),
            # retention: WHERE expired_at IS NULL AND status IN (...) AND created_at < cutoff
            models.Index(
                fields=["created_at"],
                condition=models.Q(expired_at__isnull=True),
                name="generation_job_unexpired_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def samples(self) -> int:
        return int(self.params["samples"])

    def output_path(self, index: int) -> str:
        """Storage name of the index-th image; deterministic, so a rerun overwrites, never adds.

        The extension follows the request's output_format (jobs from before it are png), and
        the content type served or uploaded is derived from it.
        """
        extension = OUTPUT_FORMATS.get(self.params.get("output_format") or "png", "png")
        return f"generations/{self.organization_id}/{self.pk}/{index}.{extension}"

    def lease_deadline(self) -> datetime:
        return timezone.now() + timedelta(seconds=settings.PICTOR_JOB_LEASE)


class DailyImages(models.Model):
    """The images a tenant's jobs of one UTC day asked for, failed and canceled ones left out.

    A running total of the jobs table, so that a submit checks the plan's daily cap by reading
    one row instead of summing the day's jobs (generation/quotas.py): each submit adds its job's
    images in its own transaction, and finish() takes them off again when a job fails or is
    canceled. tests/test_rows.py holds it equal to the sum over the jobs.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="daily_images"
    )
    day = models.DateField(help_text="UTC, the day its jobs were created")
    images = models.IntegerField(default=0)

    class Meta:
        verbose_name_plural = "daily images"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "day"], name="generation_dailyimages_unique_org_day"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day}: {self.images}"


class OutputImage(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outputs")
    index = models.PositiveSmallIntegerField()
    path = models.CharField(max_length=500)
    seed = models.BigIntegerField()
    nsfw = models.BooleanField(default=False)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["index"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "index"], name="generation_outputimage_unique_job_index"
            )
        ]

    def __str__(self) -> str:
        return self.path


class WebhookDelivery(models.Model):
    """One webhook call of a job (an event): the payload frozen when it happened, and its fate.

    Every attempt sends the same `webhook_id`, so a receiver can drop the duplicates that
    retries make.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "Failed (gave up)"

    # No job for a test ping sent from the settings page; the organization is set either way.
    job = models.ForeignKey(
        Job,
        on_delete=models.CASCADE,
        related_name="webhook_deliveries",
        null=True,
        blank=True,
    )
    organization = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        related_name="webhook_deliveries",
        null=True,
        blank=True,
        help_text="Whose secret signs it and whose settings page lists it",
    )
    url = models.URLField(max_length=2000)
    event = models.CharField(max_length=10, choices=DELIVERY_EVENTS, default=WebhookEvent.COMPLETED)
    progress = models.PositiveSmallIntegerField(
        default=0, help_text="Percent of the steps, for a progress event (25, 50 or 75)"
    )
    webhook_id = models.CharField(max_length=40, unique=True)
    payload = models.JSONField(help_text="The body sent on every attempt")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Attempts started so far")
    earlier_attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="Attempts made before the last redelivery; its retries count from here",
    )
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the next attempt is due; while one runs, when it counts as lost",
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # finish() may run twice for one job (a retried worker, a reaper race), and a requeued
            # job starts and passes 25 % again: one call per event (and per quarter) all the same.
            models.UniqueConstraint(
                fields=["job", "event", "progress"], name="generation_webhookdelivery_unique_event"
            )
        ]
        indexes = [
            # admin list filtered by state: WHERE status=%s ORDER BY created_at DESC
            models.Index(fields=["status", "-created_at"], name="generation_webhook_status_idx"),
            # the settings page's log: WHERE organization_id=%s ORDER BY created_at DESC
            models.Index(fields=["organization", "-created_at"], name="generation_webhook_org_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} {self.event} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a webhook delivery, as the receiver answered it (or why it could not)."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="generation_webhookattempt_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"


class WorkerHeartbeat(models.Model):
    """A worker process saying it is alive and which models it holds (the ops dashboard)."""

    name = models.CharField(max_length=200, unique=True, help_text="host:pid")
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    models_loaded = models.JSONField(default=list, help_text="Model ids in its pipeline cache")
    cache_bytes = models.BigIntegerField(default=0)
    jobs_done = models.PositiveIntegerField(default=0)
    current_job = models.PositiveIntegerField(null=True, blank=True)
    engine = models.JSONField(
        default=dict, blank=True, help_text="Device, dtype, threads and other engine settings"
    )

    class Meta:
        indexes = [
            # the ops dashboard: WHERE last_seen > now - interval ORDER BY name
            models.Index(fields=["last_seen"], name="generation_worker_seen_idx"),
        ]

    def __str__(self) -> str:
        return self.name
