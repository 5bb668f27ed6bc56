"""The ModelsLab answers other than a job's body (that one is generation/answers.py's).

Each serializer renders its view's answer and is what the OpenAPI schema names for it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from generation.answers import Answer, Number
from generation.models import AIModel


class SystemLoad(Answer):
    """The queue: how many jobs wait and for how long."""

    status = serializers.CharField(help_text='Always "ok"')
    queue_num = serializers.IntegerField()
    queue_time = Number(help_text="Seconds a new job would wait")


class ModelsLabModel(Answer):
    """One model the tenant may use."""

    model_id = serializers.CharField()
    model_name = serializers.CharField()
    model_category = serializers.CharField(help_text="The family: sd15, sdxl, lora, …")
    status = serializers.CharField(help_text='Always "model_ready"')
    is_default = serializers.BooleanField()
    is_private = serializers.BooleanField(help_text="The tenant's own model")
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


def model_entry(model: AIModel) -> dict[str, Any]:
    """A model's entry in model_list, before `ModelsLabModel` renders it."""
    return {
        "model_id": model.model_id,
        "model_name": model.name,
        "model_category": model.family,
        "status": "model_ready",
        "is_default": model.is_default,
        "is_private": model.organization_id is not None,
        "description": model.description,
        # Text already: the serializer passes it through as Python wrote it (+00:00, not Z).
        "created_at": model.created_at.isoformat(),
    }
