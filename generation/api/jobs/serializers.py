"""The job API's query filters, and the shapes of its answers for the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from generation.api.base import storable
from generation.engine.request import KINDS
from generation.models import Job

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class JobFilters(serializers.Serializer):
    """GET /api/v1/jobs's query string: every filter optional, a bad value a 400 naming it."""

    status = serializers.ChoiceField(choices=Job.Status.values, required=False)
    kind = serializers.ChoiceField(choices=KINDS, required=False)
    model = serializers.CharField(max_length=100, required=False, help_text="A model_id")
    created_after = serializers.DateTimeField(
        required=False, help_text="ISO 8601; jobs created at or after it"
    )
    created_before = serializers.DateTimeField(
        required=False, help_text="ISO 8601; jobs created before it"
    )
    page_size = serializers.IntegerField(
        min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE, required=False
    )
    cursor = serializers.CharField(
        required=False, help_text="Opaque: take it from a page's `next` or `previous` link"
    )

    def validate_model(self, value: str) -> str:
        return storable(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise serializers.ValidationError(
                {"created_before": ["The created_before must be later than created_after."]}
            )
        return attrs


# Answer bodies, for the schema only: views.py builds these dicts directly.
class JobsErrorDetail(serializers.Serializer):
    code = serializers.CharField(help_text="invalid_request, invalid_api_key, not_found, …")
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True, help_text="The one field or filter at fault")


class JobsError(serializers.Serializer):
    error = JobsErrorDetail()


class JobOutput(serializers.Serializer):
    index = serializers.IntegerField()
    url = serializers.URLField(help_text="Absolute, signed, expiring")
    seed = serializers.IntegerField()
    nsfw = serializers.BooleanField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class JobAnswer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Job.Status.values)
    kind = serializers.ChoiceField(choices=KINDS)
    model_id = serializers.CharField()
    track_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    progress = serializers.FloatField(help_text="0 to 1")
    eta = serializers.FloatField(allow_null=True, help_text="Seconds, while queued or processing")
    generation_time = serializers.FloatField(allow_null=True, help_text="Seconds")
    cost = serializers.IntegerField(help_text="Credits charged")
    refunded = serializers.BooleanField(help_text="The credits were given back")
    error = serializers.CharField(allow_null=True, help_text="Why it failed or was canceled")
    outputs = JobOutput(many=True)
    outputs_deleted_at = serializers.DateTimeField(
        allow_null=True, help_text="When the images were deleted (on request or by retention)"
    )
    meta = serializers.DictField(help_text="The parameters used, seed included")


class JobPage(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page")
    previous = serializers.URLField(allow_null=True, help_text="The previous (newer) page")
    results = JobAnswer(many=True)


class PlanLimits(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    requests_per_minute = serializers.IntegerField()
    concurrent_jobs = serializers.IntegerField()
    queued_jobs = serializers.IntegerField(help_text="Jobs that may wait in the queue at once")
    images_per_day = serializers.IntegerField(allow_null=True, help_text="null: no daily cap")
    max_samples = serializers.IntegerField()
    max_side = serializers.IntegerField()
    steps_list = serializers.ListField(child=serializers.IntegerField())
    retention_days = serializers.IntegerField()
    monthly_credits = serializers.IntegerField()
    model_max_bytes = serializers.IntegerField(help_text="The largest own model; 0: none")
    model_storage_bytes = serializers.IntegerField(help_text="Own models' storage quota")


class AccountOrganization(serializers.Serializer):
    name = serializers.CharField()
    slug = serializers.CharField()


class AccountToday(serializers.Serializer):
    since = serializers.DateTimeField(help_text="Midnight UTC")
    jobs = serializers.IntegerField()
    images = serializers.IntegerField(help_text="Not counting failed or canceled jobs")
    credits = serializers.IntegerField(help_text="Spent: charges less refunds")


class AccountRemaining(serializers.Serializer):
    images = serializers.IntegerField(allow_null=True, help_text="null: no daily cap")
    queued_jobs = serializers.IntegerField()
    credits = serializers.IntegerField()


class AccountJobs(serializers.Serializer):
    queued = serializers.IntegerField()
    processing = serializers.IntegerField()


class Account(serializers.Serializer):
    organization = AccountOrganization()
    plan = PlanLimits()
    credits = serializers.IntegerField(help_text="The balance")
    today = AccountToday()
    remaining_today = AccountRemaining()
    jobs = AccountJobs()


class WalletBalanceData(serializers.Serializer):
    balance = serializers.IntegerField()
    currency = serializers.CharField(default="credits")


# `data` as a field name would hide Serializer.data: these two are built from a dict.
WalletBalance = inline_serializer(
    "WalletBalance",
    {"status": serializers.CharField(default="success"), "data": WalletBalanceData()},
)
SubscribedPlan = inline_serializer(
    "SubscribedPlan",
    {"status": serializers.CharField(default="success"), "data": Account()},
)
