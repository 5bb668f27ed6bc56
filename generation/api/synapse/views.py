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

from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from generation import answers, submission
from generation.api import base
from generation.api.base import FormatView
from generation.api.errors import Problem
from generation.api.synapse.serializers import SynapseSerializer, visible_names

if TYPE_CHECKING:
    from accounts.requests import OrgRequest

INVALID_REQUEST = "Invalid request"
GENERATION_ERROR = "Error during generation (SD)"


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
    def post(self, request: OrgRequest, model: str) -> Response:
        job = self.submit_body(request, SynapseSerializer, model_id=model)
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
    def get(self, request: OrgRequest) -> Response:
        return Response(visible_names(request.user.organization, *self.families))


class SamplerListView(SynapseView):
    """GET /sd/sampler: the AUTOMATIC1111 sampler names `sampler` accepts."""

    @extend_schema(
        tags=["Synapse"],
        summary="Sampler names",
        responses={200: NAMES, 401: SynapseError},
    )
    def get(self, request: OrgRequest) -> Response:
        return Response(base.usable_samplers())
