"""The AUTOMATIC1111 lists: checkpoints, samplers, schedulers, add-ons, upscalers and styles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response

from generation.answers import Answer, Number
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
from generation.api.a1111.tables import HIRES_UPSCALERS, SAMPLER_ALIASES, SCHEDULERS, TAG
from generation.engine.schedulers import A1111_SAMPLERS
from generation.engine.styles import STYLE_PRESETS
from generation.models import AIModel

if TYPE_CHECKING:
    from accounts.models import Organization
    from accounts.requests import KeyRequest


@extend_schema_serializer(component_name="A1111SdModel")
class SdModelAnswer(Answer):
    """One checkpoint, as webui lists it."""

    title = serializers.CharField()
    model_name = serializers.CharField()
    hash = serializers.CharField(help_text="The first 10 hex digits of sha256")
    sha256 = serializers.CharField(help_text="SHA-256 of the model id")
    filename = serializers.CharField()
    config = serializers.CharField(allow_null=True)


@extend_schema_serializer(component_name="A1111Sampler")
class SamplerAnswer(Answer):
    """One webui sampler."""

    name = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField())
    options = serializers.DictField()


@extend_schema_serializer(component_name="A1111Scheduler")
class SchedulerAnswer(Answer):
    """One sigma schedule."""

    name = serializers.CharField()
    # webui's key; the serializer metaclass takes it off the class, so Field.label is untouched.
    label = serializers.CharField()  # type: ignore[assignment]
    aliases = serializers.ListField(child=serializers.CharField(), allow_null=True)
    default_rho = Number()
    need_inner_model = serializers.BooleanField()


@extend_schema_serializer(component_name="A1111Lora")
class LoraAnswer(Answer):
    """One LoRA."""

    name = serializers.CharField()
    alias = serializers.CharField()
    path = serializers.CharField()
    metadata = serializers.DictField()


@extend_schema_serializer(component_name="A1111Embeddings")
class EmbeddingsAnswer(Answer):
    """The embeddings by name: usable with the key's current model, or not."""

    loaded = serializers.DictField()
    skipped = serializers.DictField()


@extend_schema_serializer(component_name="A1111Upscaler")
class UpscalerAnswer(Answer):
    """One upscaler: a built-in resizer or an upscaler model."""

    name = serializers.CharField()
    model_name = serializers.CharField(allow_null=True)
    model_path = serializers.CharField(allow_null=True)
    model_url = serializers.CharField(allow_null=True)
    scale = Number(allow_null=True)


@extend_schema_serializer(component_name="A1111LatentUpscaleMode")
class LatentUpscaleModeAnswer(Answer):
    """One hr_upscaler name."""

    name = serializers.CharField()


@extend_schema_serializer(component_name="A1111SdVae")
class SdVaeAnswer(Answer):
    """One VAE."""

    model_name = serializers.CharField()
    filename = serializers.CharField()


@extend_schema_serializer(component_name="A1111PromptStyle")
class PromptStyleAnswer(Answer):
    """One style preset, in webui's style shape."""

    name = serializers.CharField()
    prompt = serializers.CharField(
        allow_null=True, help_text="{prompt} stands for the caller's prompt"
    )
    negative_prompt = serializers.CharField(allow_null=True)


@extend_schema_serializer(component_name="A1111FaceRestorer")
class FaceRestorerAnswer(Answer):
    """One face restorer (this server lists none)."""

    name = serializers.CharField()
    cmd_dir = serializers.CharField(allow_null=True)


@extend_schema_serializer(component_name="A1111Scripts")
class ScriptsAnswer(Answer):
    """The script names per tab (this server lists none)."""

    txt2img = serializers.ListField(child=serializers.CharField())
    img2img = serializers.ListField(child=serializers.CharField())


@extend_schema_serializer(component_name="A1111ScriptInfo")
class ScriptInfoAnswer(Answer):
    """One script's arguments (this server lists none)."""

    name = serializers.CharField(allow_null=True)
    is_alwayson = serializers.BooleanField(allow_null=True)
    is_img2img = serializers.BooleanField(allow_null=True)
    args = serializers.ListField(child=serializers.DictField())


class SdModelsView(A1111View):
    """GET /sdapi/v1/sd-models: the checkpoints (and SDXL refiners) this tenant may use."""

    @extend_schema(
        tags=[TAG],
        summary="Checkpoints",
        request=None,
        responses={
            200: SdModelAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        # Refiners too, as webui lists them: a client picks refiner_checkpoint from this list.
        models = (
            AIModel.objects.visible_to(request.user.organization)
            .filter(family__in=(*AIModel.CHECKPOINTS, AIModel.Family.REFINER))
            .order_by("model_id")
        )
        return Response(
            SdModelAnswer(
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
                ],
                many=True,
            ).data
        )


class SamplersView(A1111View):
    """GET /sdapi/v1/samplers: the webui samplers this server runs."""

    @extend_schema(
        tags=[TAG],
        summary="Samplers",
        request=None,
        responses={
            200: SamplerAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(
            SamplerAnswer(
                [
                    {
                        "name": name,
                        "aliases": SAMPLER_ALIASES.get(name, []),
                        "options": {"scheduler": "karras"}
                        if A1111_SAMPLERS[name].use_karras_sigmas
                        else {},
                    }
                    for name in base.usable_samplers()
                ],
                many=True,
            ).data
        )


class SchedulersView(A1111View):
    """GET /sdapi/v1/schedulers: webui 1.9+'s sigma schedules this server offers."""

    @extend_schema(
        tags=[TAG],
        summary="Schedulers (sigma schedules)",
        request=None,
        responses={
            200: SchedulerAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(SchedulerAnswer(SCHEDULERS, many=True).data)


class LorasView(A1111View):
    """GET /sdapi/v1/loras: the LoRAs this tenant may name as <lora:name:weight>."""

    @extend_schema(
        tags=[TAG],
        summary="LoRAs",
        request=None,
        responses={
            200: LoraAnswer(many=True),
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
            LoraAnswer(
                [
                    {"name": m.model_id, "alias": m.model_id, "path": m.path, "metadata": {}}
                    for m in loras
                ],
                many=True,
            ).data
        )


class EmbeddingsView(A1111View):
    """GET /sdapi/v1/embeddings: loaded = usable with the key's current model, else skipped."""

    @extend_schema(
        tags=[TAG],
        summary="Textual-inversion embeddings",
        request=None,
        responses={
            200: EmbeddingsAnswer,
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
        return Response(EmbeddingsAnswer(answer).data)


# webui lists its built-in resizers with the upscaler models: "None" (no upscale) and the two
# PIL filters. Extras run these in the request; an upscaler model runs as a job.
PIL_UPSCALERS = ("Lanczos", "Nearest")
NO_UPSCALER = "None"
# The diffusers super-resolution pipeline upscales 4x in one pass.
UPSCALER_MODEL_SCALE = 4


def upscaler_models(organization: Organization) -> QuerySet[AIModel]:
    """The super-resolution models this tenant may name as an upscaler."""
    return (
        AIModel.objects.visible_to(organization)
        .filter(family=AIModel.Family.UPSCALER)
        .order_by("model_id")
    )


class UpscalersView(A1111View):
    """GET /sdapi/v1/upscalers: None, Lanczos, Nearest, then the tenant's upscaler models."""

    @extend_schema(
        tags=[TAG],
        summary="Upscalers (for extra-single-image and extra-batch-images)",
        request=None,
        responses={200: UpscalerAnswer(many=True), 401: DetailAnswer},
    )
    def get(self, request: KeyRequest) -> Response:
        builtin = [
            {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
            for name in (NO_UPSCALER, *PIL_UPSCALERS)
        ]
        return Response(
            UpscalerAnswer(
                builtin
                + [
                    {
                        "name": m.model_id,
                        "model_name": m.name or m.model_id,
                        "model_path": m.path,
                        "model_url": None,
                        "scale": UPSCALER_MODEL_SCALE,
                    }
                    for m in upscaler_models(request.user.organization)
                ],
                many=True,
            ).data
        )


class LatentUpscaleModesView(A1111View):
    """GET /sdapi/v1/latent-upscale-modes: the hr_upscaler names the hires fix takes."""

    @extend_schema(
        tags=[TAG],
        summary="Latent upscale modes (hr_upscaler of the hires fix)",
        request=None,
        responses={
            200: LatentUpscaleModeAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(
            LatentUpscaleModeAnswer([{"name": name} for name in HIRES_UPSCALERS], many=True).data
        )


class SdVaeView(A1111View):
    """GET /sdapi/v1/sd-vae: the VAEs this tenant may name (ModelsLab's `vae`)."""

    @extend_schema(
        tags=[TAG],
        summary="VAEs",
        request=None,
        responses={
            200: SdVaeAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        vaes = (
            AIModel.objects.visible_to(request.user.organization)
            .filter(family=AIModel.Family.VAE)
            .order_by("model_id")
        )
        return Response(
            SdVaeAnswer(
                [{"model_name": m.model_id, "filename": m.path} for m in vaes], many=True
            ).data
        )


class PromptStylesView(A1111View):
    """GET /sdapi/v1/prompt-styles: Pictor's style presets, in webui's style shape."""

    @extend_schema(
        tags=[TAG],
        summary="Prompt styles",
        request=None,
        responses={
            200: PromptStyleAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        # A preset's template holds "{prompt}" and its negative is appended to the caller's:
        # the same two rules as a webui style.
        return Response(
            PromptStyleAnswer(
                [
                    {"name": name, "prompt": style.template, "negative_prompt": style.negative}
                    for name, style in STYLE_PRESETS.items()
                ],
                many=True,
            ).data
        )


class FaceRestorersView(A1111View):
    """GET /sdapi/v1/face-restorers: none (this server offers no face restoration)."""

    @extend_schema(
        tags=[TAG],
        summary="Face restorers (none on this server)",
        request=None,
        responses={
            200: FaceRestorerAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(FaceRestorerAnswer([], many=True).data)


class ScriptsView(A1111View):
    """GET /sdapi/v1/scripts: none (this server runs no webui scripts)."""

    @extend_schema(
        tags=[TAG],
        summary="Scripts (none on this server)",
        request=None,
        responses={
            200: ScriptsAnswer,
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(ScriptsAnswer({"txt2img": [], "img2img": []}).data)


class ScriptInfoView(A1111View):
    """GET /sdapi/v1/script-info: none (this server runs no webui scripts)."""

    @extend_schema(
        tags=[TAG],
        summary="Script arguments (none on this server)",
        request=None,
        responses={
            200: ScriptInfoAnswer(many=True),
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(ScriptInfoAnswer([], many=True).data)
