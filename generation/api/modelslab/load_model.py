"""ModelsLab's load_model (POST /api/v3/load_model): a tenant's own model from a URL.

The same service as the job API's POST /api/v1/models (generation/own_models.py): the file is
downloaded through the SSRF-safe client, must be a .safetensors file within the plan's limits,
and is private to the organization. It is usable once a worker has validated it; until then
model_list leaves it out and requests naming it get "not found".
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts.auth import require_manager
from accounts.requests import KeyRequest
from generation import own_models
from generation.api import schema
from generation.api.base import clean_body, storable
from generation.api.modelslab.views import ModelsLabView

# ModelsLab's model_category -> Pictor's category (a checkpoint's base is read from the file).
CATEGORIES = {
    "stable_diffusion": "checkpoint",
    "stable_diffusion_xl": "checkpoint",
    "lora": "lora",
    "embeddings": "embedding",
    "vae": "vae",
}
LOAD_MODEL_ANSWER = inline_serializer(
    "ModelsLabLoadModel",
    {
        "status": serializers.CharField(default="success"),
        "message": serializers.CharField(default="model load started"),
        "model_id": serializers.CharField(),
        "model_status": serializers.CharField(help_text="validating, ready or failed"),
    },
)


class LoadModelSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="http(s) URL of a .safetensors file")
    model_id = serializers.CharField(max_length=80)
    model_category = serializers.ChoiceField(choices=list(CATEGORIES))
    model_format = serializers.ChoiceField(
        choices=["safetensors"], default="safetensors", help_text="ckpt and diffusers are refused"
    )
    model_name = serializers.CharField(max_length=200, required=False)
    model_visibility = serializers.ChoiceField(
        choices=["private"], default="private", help_text="Own models are private"
    )
    revision = serializers.ChoiceField(
        choices=["fp16", "fp32"],
        required=False,
        help_text="Accepted; workers load weights in their own precision (fp16 on CUDA)",
    )
    force_load = serializers.ChoiceField(choices=["yes", "no"], required=False)
    hf_upload = serializers.ChoiceField(choices=["no"], required=False)

    def validate_url(self, value: str) -> str:
        return storable(value)

    def validate_model_id(self, value: str) -> str:
        return storable(value)

    def validate_model_name(self, value: str) -> str:
        return storable(value)


class LoadModelView(ModelsLabView):
    """POST /api/v3/load_model: download a .safetensors model and queue its validation."""

    @extend_schema(
        tags=["ModelsLab"],
        summary="Add an own model from a URL (ModelsLab's load_model)",
        request=LoadModelSerializer,
        responses={
            200: LOAD_MODEL_ANSWER,
            402: OpenApiResponse(
                schema.ModelsLabError,
                description="The plan has no own models, or no room left",
            ),
            **schema.modelslab_errors(413, 503),
        },
    )
    def post(self, request: KeyRequest) -> Response:
        require_manager(request, "add models")
        org = request.user.organization
        body: dict[str, Any] = clean_body(request.data)
        body.pop("key", None)
        # A picture for ModelsLab's gallery; Pictor has none to show it in.
        if not isinstance(body.pop("model_image", ""), str):
            raise ValidationError({"model_image": ["Send the image's URL as text."]})
        shape = LoadModelSerializer(data=body)
        shape.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(shape.validated_data)
        own_models.check_plan(org, None)
        own_models.check_model_id(fields["model_id"])
        path = own_models.fetch_url(org, fields["url"])
        try:
            model = own_models.add_model(
                org,
                path,
                model_id=fields["model_id"],
                category=CATEGORIES[fields["model_category"]],
                name=fields.get("model_name", ""),
                fields={"file": "url", "category": "model_category"},
            )
        finally:
            path.unlink(missing_ok=True)
        model.refresh_from_db()
        return Response(
            {
                "status": "success",
                "message": "model load started",
                "model_id": model.model_id,
                "model_status": model.status,
            }
        )
