"""What the OpenAI format answers: images (links or base64), models, and its error object.

The `*_body` functions build each answer; the serializers render it and are what the OpenAPI
schema names, so the two cannot drift apart. `usage` counts credits, not tokens: the images
are the output (output_tokens = total_tokens = the credits the job cost) and inputs are not
charged apart (input_tokens = 0).
"""

from __future__ import annotations

import base64
from typing import Any

from rest_framework import serializers

from accounts.models import Organization
from generation import answers, media
from generation.answers import Answer
from generation.models import AIModel, Job

# OpenAI's model names: they stand for the organization's default model.
OPENAI_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")


class OpenAIErrorDetail(Answer):
    message = serializers.CharField()
    type = serializers.CharField(
        help_text="invalid_request_error, insufficient_quota, requests or server_error"
    )
    param = serializers.CharField(allow_null=True, help_text="The parameter at fault")
    code = serializers.CharField(
        allow_null=True,
        help_text="invalid_value, unknown_parameter, missing_required_parameter, "
        "invalid_api_key, model_not_found, insufficient_quota, rate_limit_exceeded, …",
    )


class OpenAIError(Answer):
    """OpenAI's error object."""

    error = OpenAIErrorDetail()


class OpenAIImage(Answer):
    url = serializers.URLField(required=False, help_text="A signed link that expires")
    b64_json = serializers.CharField(required=False, help_text="The image, base64")
    revised_prompt = serializers.CharField(
        required=False, help_text="The prompt the model ran (with a style's words)"
    )


class OpenAITokens(Answer):
    text_tokens = serializers.IntegerField()
    image_tokens = serializers.IntegerField()


class OpenAIUsage(Answer):
    """Credits in OpenAI's token fields."""

    input_tokens = serializers.IntegerField(help_text="0: inputs are not charged apart")
    input_tokens_details = OpenAITokens()
    output_tokens = serializers.IntegerField(help_text="The credits the images cost")
    output_tokens_details = OpenAITokens()
    total_tokens = serializers.IntegerField(help_text="The credits charged")


class OpenAIImages(Answer):
    """The images made, and how."""

    created = serializers.IntegerField(help_text="Unix time the request was queued")
    # DRF's metaclass moves declared fields off the class: `.data` stays the property.
    # The wire field `data`: DRF's metaclass moves declared fields off the class, so the
    # serializer's `.data` property stays; mypy sees only the name clash.
    data = OpenAIImage(many=True)  # type: ignore[assignment]
    background = serializers.CharField(help_text="opaque")
    output_format = serializers.CharField()
    quality = serializers.CharField(help_text="low, medium or high")
    size = serializers.CharField(help_text="WIDTHxHEIGHT")
    usage = OpenAIUsage()


class OpenAIModel(Answer):
    id = serializers.CharField()
    object = serializers.CharField(help_text="model")
    created = serializers.IntegerField(help_text="Unix time")
    owned_by = serializers.CharField(help_text="pictor, or your organization's slug")


class OpenAIModelList(Answer):
    object = serializers.CharField(help_text="list")
    # DRF's metaclass moves declared fields off the class: `.data` stays the property.
    # The wire field `data`: DRF's metaclass moves declared fields off the class, so the
    # serializer's `.data` property stays; mypy sees only the name clash.
    data = OpenAIModel(many=True)  # type: ignore[assignment]


def usage(job: Job) -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
        "output_tokens": job.cost,
        "output_tokens_details": {"text_tokens": 0, "image_tokens": job.cost},
        "total_tokens": job.cost,
    }


def images_body(job: Job, found: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The body of a finished job; `found` is what the serializer read (format, quality)."""
    rows = list(job.outputs.order_by("index"))
    items: list[dict[str, Any]]
    if found["response_format"] == "url":
        seconds = media.job_lifetime(job)
        items = [
            {"url": answers.absolute(base_url, media.signed_url(row.path, seconds))} for row in rows
        ]
    else:
        # The engine stored the images in the asked format: send the bytes as they are.
        items = [
            {"b64_json": base64.b64encode(data).decode()}
            for _row, data in answers.output_files(job, rows)
        ]
    prompt = job.params["prompt"]
    if prompt:
        # Variations run without a prompt: nothing to report there.
        for item in items:
            item["revised_prompt"] = prompt
    return {
        "created": int(job.created_at.timestamp()),
        "data": items,
        "background": "opaque",
        "output_format": found["output_format"],
        "quality": found["quality"],
        "size": f"{job.params['width']}x{job.params['height']}",
        "usage": usage(job),
    }


def model_entries(org: Organization) -> list[dict[str, Any]]:
    """The checkpoints the organization may use, then OpenAI's names for its default one."""
    visible = AIModel.objects.visible_to(org).filter(family__in=AIModel.CHECKPOINTS)
    entries = [
        {
            "id": model.model_id,
            "object": "model",
            "created": int(model.created_at.timestamp()),
            "owned_by": org.slug if model.organization_id else "pictor",
        }
        for model in visible.order_by("model_id")
    ]
    default = visible.filter(is_default=True).first()
    if default is not None:
        created = int(default.created_at.timestamp())
        entries += [
            {"id": name, "object": "model", "created": created, "owned_by": "pictor"}
            for name in OPENAI_MODELS
        ]
    return entries
