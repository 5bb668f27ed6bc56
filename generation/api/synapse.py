"""The Synapse wire format (docs/architecture.md): Bearer key, the model in the path, one PNG back.

    GET  /sd/list, /sd/sampler, /sd/loras, /sd/embeddings   JSON arrays of names
    POST /sd/<model>   {"prompt", "negative_prompt", "steps", "cfg_scale", "sampler",
                        "width", "height", "seed"}  ->  {"data": "<base64 png>"}

The POST waits for the image (PICTOR_BLOCKING_WAIT). Errors are {"error": ...}: a 400 or 401
is exactly "Invalid request" with the reason in "details"; a 500 (only when the generation
itself failed) is "Error during generation (SD)". LoRAs go in the prompt as
`<lora:name:weight>`, and an embedding is used by writing its name in either prompt, as in
AUTOMATIC1111.
"""

from __future__ import annotations

import re
from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import Plan
from generation import answers, submission
from generation.api import base
from generation.api.base import MAX_PROMPT_LENGTH, MAX_SEED, FormatView, clean_body
from generation.api.errors import Problem
from generation.engine.prompts import PromptError, extract_lora_tags
from generation.engine.schedulers import A1111_SAMPLERS, usable_scheduler_error
from generation.models import AIModel

INVALID_REQUEST = "Invalid request"
GENERATION_ERROR = "Error during generation (SD)"
DEFAULT_SAMPLER = "DPM++ 2M Karras"
DEFAULT_STEPS = 20
DEFAULT_CFG_SCALE = 7.0
DEFAULT_SIDE = 512
MIN_SIDE = 64
MAX_SIDE = 1024
MAX_CFG_SCALE = 30
# GenerationRequest's names for the fields Synapse calls otherwise (errors are renamed back).
WIRE_NAMES = {
    "model_id": "model",
    "guidance_scale": "cfg_scale",
    "scheduler": "sampler",
    "lora_model": "prompt",
    "embeddings_model": "prompt",
}


def error_body(problem: Problem) -> dict[str, Any]:
    """Synapse's {"error": ...}, with the reason in "details" where the error is generic."""
    if problem.status in (400, 401):
        return {"error": INVALID_REQUEST, "details": problem.text}
    if problem.kind == "generation_failed":
        return {"error": GENERATION_ERROR, "details": problem.text}
    body: dict[str, Any] = {"error": problem.text}
    if problem.tips:
        body["details"] = problem.tips
    return body


class SynapseSerializer(serializers.Serializer):
    """The body of POST /sd/<model>, with Synapse's defaults; the plan narrows the bounds."""

    prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH)
    negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, required=False, default="", allow_blank=True
    )
    steps = serializers.IntegerField(
        min_value=1, default=DEFAULT_STEPS, help_text="1 to the plan's largest step count"
    )
    cfg_scale = serializers.FloatField(
        min_value=1, max_value=MAX_CFG_SCALE, default=DEFAULT_CFG_SCALE
    )
    sampler = serializers.CharField(
        max_length=100,
        default=DEFAULT_SAMPLER,
        help_text="An AUTOMATIC1111 sampler name (GET /sd/sampler) or a diffusers class name",
    )
    width = serializers.IntegerField(
        min_value=MIN_SIDE,
        max_value=MAX_SIDE,
        default=DEFAULT_SIDE,
        help_text="A multiple of 8, up to the plan's largest side",
    )
    height = serializers.IntegerField(
        min_value=MIN_SIDE,
        max_value=MAX_SIDE,
        default=DEFAULT_SIDE,
        help_text="A multiple of 8, up to the plan's largest side",
    )
    seed = serializers.IntegerField(
        min_value=-1, max_value=MAX_SEED, required=False, help_text="-1 or absent: random"
    )

    def validate_width(self, value: int) -> int:
        return base.check_multiple_of_8("width", value)

    def validate_height(self, value: int) -> int:
        return base.check_multiple_of_8("height", value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        plan: Plan = self.context["plan"]
        base.check_side(plan, "width", attrs["width"])
        base.check_side(plan, "height", attrs["height"])
        base.check_steps(plan, "steps", attrs["steps"])
        return attrs


def request_fields(data: Any, plan: Plan, embedding_ids: list[str]) -> dict[str, Any]:
    """GenerationRequest fields for a Synapse body; raises ValidationError naming the field."""
    serializer = SynapseSerializer(data=clean_body(data), context={"plan": plan})
    serializer.is_valid(raise_exception=True)
    body = serializer.validated_data
    try:
        prompt, loras = extract_lora_tags(body["prompt"])
    except PromptError as exc:
        raise ValidationError({"prompt": [str(exc)]}) from None
    if not prompt:
        raise ValidationError({"prompt": ["The prompt is empty once its LoRA tags are taken out."]})
    base.check_loras(loras, "prompt")
    return base.defaults(
        prompt=prompt,
        negative_prompt=body["negative_prompt"],
        steps=body["steps"],
        guidance_scale=body["cfg_scale"],
        width=body["width"],
        height=body["height"],
        seed=base.random_seed(body.get("seed")),
        loras=loras,
        embeddings_model=named_in(embedding_ids, prompt, body["negative_prompt"]),
        **base.sampler_fields(body["sampler"], "sampler"),
    )


def named_in(names: list[str], *texts: str) -> list[str]:
    """The names that appear as whole words in any of the texts (A1111 embedding use)."""
    return [
        name
        for name in names
        if any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) for text in texts)
    ]


def visible_names(request: Request, *families: str) -> list[str]:
    """Model ids of these families that the caller's organization may use, sorted."""
    return list(
        AIModel.objects.visible_to(request.user.organization)
        .filter(family__in=families)
        .order_by("model_id")
        .values_list("model_id", flat=True)
    )


def usable_samplers() -> list[str]:
    """The AUTOMATIC1111 sampler names this server can run."""
    return [
        name
        for name, choice in A1111_SAMPLERS.items()
        if usable_scheduler_error(choice.scheduler, choice.use_karras_sigmas, choice.algorithm_type)
        is None
    ]


SynapseError = inline_serializer(
    "SynapseError",
    {
        "error": serializers.CharField(help_text='"Invalid request" for every 400 and 401'),
        "details": serializers.CharField(required=False, help_text="The reason, naming fields"),
    },
)
SynapseImage = inline_serializer(
    "SynapseImage", {"data": serializers.CharField(help_text="The PNG, base64")}
)
ERRORS = {code: SynapseError for code in (400, 401, 402, 403, 404, 413, 429, 500, 503, 504)}
NAMES = {"type": "array", "items": {"type": "string"}}


class SynapseView(FormatView):
    error_body = staticmethod(error_body)


class GenerateView(SynapseView):
    """POST /sd/<model>: generate one image with the named checkpoint and answer it as base64."""

    @extend_schema(
        tags=["Synapse"],
        summary="Generate one image (waits for it)",
        request=SynapseSerializer,
        responses={200: SynapseImage, **ERRORS},
    )
    def post(self, request: Request, model: str) -> Response:
        org = request.user.organization
        try:
            fields = request_fields(
                request.data, org.plan, visible_names(request, AIModel.Family.EMBEDDING)
            )
            job = submission.submit(
                request, fields, "text2img", model_id=model, model_required=True
            )
        except ValidationError as exc:
            raise base.renamed(exc, WIRE_NAMES) from None
        job = submission.wait_until_done(job)
        return Response({"data": answers.images_base64(job)[0]})


class ListView(SynapseView):
    """GET a JSON array of names (checkpoints, samplers, LoRAs or embeddings)."""

    families: tuple[str, ...] = ()

    @extend_schema(
        tags=["Synapse"],
        summary="Names the caller may use",
        responses={200: NAMES, 401: SynapseError},
    )
    def get(self, request: Request) -> Response:
        return Response(visible_names(request, *self.families))


class SamplerListView(SynapseView):
    """GET /sd/sampler: the AUTOMATIC1111 sampler names `sampler` accepts."""

    @extend_schema(
        tags=["Synapse"],
        summary="Sampler names",
        responses={200: NAMES, 401: SynapseError},
    )
    def get(self, request: Request) -> Response:
        return Response(usable_samplers())


urlpatterns = [
    path(
        "sd/list",
        ListView.as_view(families=tuple(AIModel.CHECKPOINTS)),
        name="synapse-list",
    ),
    path("sd/sampler", SamplerListView.as_view(), name="synapse-sampler"),
    path("sd/loras", ListView.as_view(families=(AIModel.Family.LORA,)), name="synapse-loras"),
    path(
        "sd/embeddings",
        ListView.as_view(families=(AIModel.Family.EMBEDDING,)),
        name="synapse-embeddings",
    ),
    path("sd/<str:model>", GenerateView.as_view(), name="synapse-generate"),
]
