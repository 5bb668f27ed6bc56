"""The Synapse wire format (docs/architecture.md): Bearer key, the model in the path, one PNG back.

    GET  /sd/list, /sd/sampler, /sd/loras, /sd/embeddings   JSON arrays of names (no key needed)
    POST /sd/<model>   {"prompt", "negative_prompt", "steps", "cfg_scale", "sampler",
                        "width", "height", "seed"}  ->  {"data": "<base64 png>"}

The POST waits for the image (PICTOR_BLOCKING_WAIT). Errors are {"error": ...}: a 400 or 401
is exactly "Invalid request" with the reason in "details"; a 500 (only when the generation
itself failed) is "Error during generation (SD)". LoRAs go in the prompt as
`<lora:name:weight>`, and an embedding is used by writing its name in either prompt, as in
AUTOMATIC1111.

The lists answer without a key (the public models and add-ons only); with a valid key they add
the organization's private ones, and a key that is sent but not valid is still a 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Organization
from generation import answers, submission
from generation.api import base
from generation.api.base import FormatView
from generation.api.errors import Problem
from generation.api.synapse.answers import Names, SynapseImage
from generation.api.synapse.serializers import SynapseSerializer, visible_names

if TYPE_CHECKING:
    from accounts.requests import Caller, OrgRequest

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
ERRORS = {code: SynapseError for code in (400, 401, 402, 403, 404, 413, 429, 500, 503, 504)}


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
        job = submission.wait_until_done(job, request)
        return Response(SynapseImage({"data": answers.images_base64(job)[0]}).data)


class PublicListView(SynapseView):
    """A list anyone may read: no key, the public names; a valid key adds its organization's."""

    # AllowAny also marks the key optional in the OpenAPI schema. A key that is sent is still
    # checked: ApiKeyAuthentication answers an unknown one 401 before the view runs.
    permission_classes = [AllowAny]

    def organization(self, request: Request) -> Organization | None:
        """The caller's organization; None without credentials, a 401 for unreadable ones."""
        # DRF types `user` as a Django user: here it is accounts.auth's caller, or None.
        caller: Caller | None = getattr(request, "user", None)
        if caller is not None:
            return caller.organization
        if request.headers.get("Authorization", "").strip():
            # Sent, but not as Bearer or Basic: a mistake to report, not an anonymous call.
            raise NotAuthenticated()
        return None


class ListView(PublicListView):
    """GET a JSON array of names (checkpoints, LoRAs or embeddings)."""

    families: tuple[str, ...] = ()

    @extend_schema(
        tags=["Synapse"],
        summary="Names the caller may use (public ones without a key)",
        responses={200: Names, 401: SynapseError},
    )
    def get(self, request: Request) -> Response:
        return Response(Names(visible_names(self.organization(request), *self.families)).data)


class SamplerListView(PublicListView):
    """GET /sd/sampler: the AUTOMATIC1111 sampler names `sampler` accepts."""

    @extend_schema(
        tags=["Synapse"],
        summary="Sampler names",
        responses={200: Names, 401: SynapseError},
    )
    def get(self, request: Request) -> Response:
        self.organization(request)  # the same for everyone, but a bad key is still a 401
        return Response(Names(base.usable_samplers()).data)
