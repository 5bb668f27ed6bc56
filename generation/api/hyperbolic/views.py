"""The Hyperbolic wire format (docs/architecture.md): POST /v1/image/generation, Bearer, blocking.

Answers {"images": [{"index", "image", "random_seed"}], "inference_time"}; errors are
OpenAI-style {"object": "error", "message", "type", "param", "code"}.

Defaults and ranges (Hyperbolic's where it documents them, bounded by the caller's plan):
width/height 64-2048 in multiples of 8, default min(1024, plan's largest side), or the input
image's size fitted to the plan when `image` or `controlnet_image` is sent without them; steps
1 to the plan's largest step count, default min(30, that); cfg_scale 1-30, default 5; strength
0-1, default 0.8 (only with `image`); seed absent or -1 = random; sampler an AUTOMATIC1111 name
or a diffusers class name, default UniPC; backend auto or torch (tvm is a 400); enable_refiner
false only; style_preset one of generation/engine/styles.py; loras {"name": weight}, weights
-2 to 2 (`lora` is accepted as the same field); prompt_2/negative_prompt_2 on SDXL models only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from generation import submission
from generation.api.base import FormatView
from generation.api.errors import Problem
from generation.api.hyperbolic.answers import HyperbolicImages, images_body
from generation.api.hyperbolic.serializers import HyperbolicSerializer

if TYPE_CHECKING:
    from accounts.requests import OrgRequest

ERROR_TYPES = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",  # the queue is down: the request was fine, retry it later
    504: "timeout_error",
}


def error_body(problem: Problem) -> dict[str, Any]:
    """The OpenAI-style error object; `param` names the field when exactly one is at fault."""
    param = problem.field
    if isinstance(problem.message, dict) and len(problem.message) == 1:
        param = next(iter(problem.message))
    return {
        "object": "error",
        "message": problem.text,
        "type": ERROR_TYPES.get(problem.status, "invalid_request_error"),
        "param": param,
        "code": problem.status,
    }


HyperbolicError = inline_serializer(
    "HyperbolicError",
    {
        "object": serializers.CharField(default="error"),
        "message": serializers.CharField(help_text="What went wrong, naming the fields"),
        "type": serializers.CharField(help_text="invalid_request_error, authentication_error, …"),
        "param": serializers.CharField(allow_null=True, help_text="The one field at fault"),
        "code": serializers.IntegerField(help_text="The HTTP status"),
    },
)


class GenerationView(FormatView):
    """POST /v1/image/generation: text2img, img2img (image) or ControlNet; waits for the image."""

    error_body = staticmethod(error_body)

    @extend_schema(
        tags=["Hyperbolic"],
        summary="Generate an image (waits for it)",
        request=HyperbolicSerializer,
        responses={
            200: HyperbolicImages,
            **{
                code: HyperbolicError for code in (400, 401, 402, 403, 404, 413, 429, 500, 503, 504)
            },
        },
    )
    def post(self, request: OrgRequest) -> Response:
        job = self.submit_body(request, HyperbolicSerializer)
        job = submission.wait_until_done(job, request)
        return Response(HyperbolicImages(images_body(job)).data)
