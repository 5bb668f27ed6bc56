"""The AUTOMATIC1111 lists: checkpoints, samplers, schedulers, LoRAs and embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from generation.api import base
from generation.api.a1111.answers import DetailAnswer
from generation.api.a1111.checkpoints import (
    default_model,
    embedding_shape,
    model_sha256,
    model_title,
    short_hash,
)
from generation.api.a1111.errors import A1111View
from generation.api.a1111.tables import SAMPLER_ALIASES, SCHEDULERS, TAG
from generation.engine.schedulers import A1111_SAMPLERS
from generation.models import AIModel

if TYPE_CHECKING:
    from accounts.requests import KeyRequest


class SdModelsView(A1111View):
    """GET /sdapi/v1/sd-models: the checkpoints this tenant may use."""

    @extend_schema(
        tags=[TAG],
        summary="Checkpoints",
        request=None,
        responses={
            200: inline_serializer(
                "A1111SdModel",
                {
                    "title": serializers.CharField(),
                    "model_name": serializers.CharField(),
                    "hash": serializers.CharField(help_text="The first 10 hex digits of sha256"),
                    "sha256": serializers.CharField(help_text="SHA-256 of the model id"),
                    "filename": serializers.CharField(),
                    "config": serializers.CharField(allow_null=True),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        models = (
            AIModel.objects.visible_to(request.user.organization)
            .filter(family__in=AIModel.CHECKPOINTS)
            .order_by("model_id")
        )
        return Response(
            [
                {
                    "title": model_title(m),
                    "model_name": m.model_id,
                    "hash": short_hash(m),
                    "sha256": model_sha256(m),
                    "filename": m.path,
                    "config": m.config_path or None,
                }
                for m in models
            ]
        )


class SamplersView(A1111View):
    """GET /sdapi/v1/samplers: the webui samplers this server runs."""

    @extend_schema(
        tags=[TAG],
        summary="Samplers",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Sampler",
                {
                    "name": serializers.CharField(),
                    "aliases": serializers.ListField(child=serializers.CharField()),
                    "options": serializers.DictField(),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(
            [
                {
                    "name": name,
                    "aliases": SAMPLER_ALIASES.get(name, []),
                    "options": {"scheduler": "karras"}
                    if A1111_SAMPLERS[name].use_karras_sigmas
                    else {},
                }
                for name in base.usable_samplers()
            ]
        )


class SchedulersView(A1111View):
    """GET /sdapi/v1/schedulers: webui 1.9+'s sigma schedules this server offers."""

    @extend_schema(
        tags=[TAG],
        summary="Schedulers (sigma schedules)",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Scheduler",
                {
                    "name": serializers.CharField(),
                    "label": serializers.CharField(),
                    "aliases": serializers.ListField(
                        child=serializers.CharField(), allow_null=True
                    ),
                    "default_rho": serializers.FloatField(),
                    "need_inner_model": serializers.BooleanField(),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(SCHEDULERS)


class LorasView(A1111View):
    """GET /sdapi/v1/loras: the LoRAs this tenant may name as <lora:name:weight>."""

    @extend_schema(
        tags=[TAG],
        summary="LoRAs",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Lora",
                {
                    "name": serializers.CharField(),
                    "alias": serializers.CharField(),
                    "path": serializers.CharField(),
                    "metadata": serializers.DictField(),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        loras = (
            AIModel.objects.visible_to(request.user.organization)
            .filter(family=AIModel.Family.LORA)
            .order_by("model_id")
        )
        return Response(
            [
                {"name": m.model_id, "alias": m.model_id, "path": m.path, "metadata": {}}
                for m in loras
            ]
        )


class EmbeddingsView(A1111View):
    """GET /sdapi/v1/embeddings: loaded = usable with the key's current model, else skipped."""

    @extend_schema(
        tags=[TAG],
        summary="Textual-inversion embeddings",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Embeddings",
                {"loaded": serializers.DictField(), "skipped": serializers.DictField()},
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        org = request.user.organization
        current = default_model(org, request.auth)
        embeddings = (
            AIModel.objects.visible_to(org)
            .filter(family=AIModel.Family.EMBEDDING)
            .order_by("model_id")
        )
        answer: dict[str, dict[str, Any]] = {"loaded": {}, "skipped": {}}
        for m in embeddings:
            vectors, shape = embedding_shape(m)
            fits = (
                current is not None and current.base == m.base and current.base != AIModel.Base.SDXL
            )
            answer["loaded" if fits else "skipped"][m.model_id] = {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": shape,
                "vectors": vectors,
            }
        return Response(answer)
