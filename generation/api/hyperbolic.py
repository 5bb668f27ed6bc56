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

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Organization
from billing.models import Plan
from generation import answers, submission
from generation.api import base
from generation.api.base import (
    MAX_IMAGE_FIELD,
    MAX_PROMPT_LENGTH,
    MAX_SEED,
    FormatView,
    clean_body,
)
from generation.api.errors import Problem
from generation.engine.pipelines import has_second_prompt, pipeline_family
from generation.engine.styles import STYLE_PRESETS
from generation.models import AIModel, Job

DEFAULT_SIDE = 1024
MIN_SIDE = 64
MAX_SIDE = 2048
DEFAULT_STEPS = 30
DEFAULT_CFG_SCALE = 5.0
MAX_CFG_SCALE = 30
DEFAULT_STRENGTH = 0.8
MAX_LORA_WEIGHT = 2.0
BACKENDS = ("auto", "torch", "tvm")
SECOND_PROMPTS = ("prompt_2", "negative_prompt_2")
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
    param = None
    if isinstance(problem.message, dict) and len(problem.message) == 1:
        param = next(iter(problem.message))
    return {
        "object": "error",
        "message": problem.text,
        "type": ERROR_TYPES.get(problem.status, "invalid_request_error"),
        "param": param,
        "code": problem.status,
    }


@extend_schema_field({"type": "object", "additionalProperties": {"type": "number"}})
class LorasField(serializers.Field):
    """{"lora name": weight}: a JSON object of registered LoRA ids to weights."""

    def to_internal_value(self, data: Any) -> list[tuple[str, float]]:
        if not isinstance(data, dict):
            raise ValidationError('Must be an object of LoRA names to weights: {"name": 0.8}.')
        loras = []
        for name, weight in data.items():
            base.storable(name)
            # Finite and in range: "nan" passes no comparison, 10**400 overflows float().
            number = base.bounded_float(weight, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT)
            if number is None:
                raise ValidationError(
                    f"The weight of {name!r} must be a number between {-MAX_LORA_WEIGHT:g} "
                    f"and {MAX_LORA_WEIGHT:g}."
                )
            loras.append((str(name).strip(), number))
        base.check_loras(loras, "loras")
        return loras


class HyperbolicSerializer(serializers.Serializer):
    """The body of POST /v1/image/generation; the plan narrows the bounds."""

    model_name = serializers.CharField(max_length=100, help_text="A checkpoint id from the models")
    prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH)
    negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, required=False, default="", allow_blank=True
    )
    prompt_2 = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH,
        required=False,
        default="",
        allow_blank=True,
        help_text="SDXL models only: the prompt for the second text encoder",
    )
    negative_prompt_2 = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH,
        required=False,
        default="",
        allow_blank=True,
        help_text="SDXL models only",
    )
    width = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, required=False)
    height = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, required=False)
    backend = serializers.ChoiceField(choices=BACKENDS, default="auto")
    image = serializers.CharField(
        max_length=MAX_IMAGE_FIELD, required=False, help_text="Base64 init image: img2img"
    )
    strength = serializers.FloatField(min_value=0, max_value=1, required=False)
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, required=False)
    cfg_scale = serializers.FloatField(
        min_value=1, max_value=MAX_CFG_SCALE, default=DEFAULT_CFG_SCALE
    )
    sampler = serializers.CharField(max_length=100, required=False)
    steps = serializers.IntegerField(min_value=1, required=False)
    style_preset = serializers.CharField(
        max_length=100, required=False, help_text=", ".join(STYLE_PRESETS)
    )
    enable_refiner = serializers.BooleanField(default=False, help_text="Only false")
    controlnet_name = serializers.CharField(
        max_length=100, required=False, help_text="A ControlNet model id, or a type such as canny"
    )
    controlnet_image = serializers.CharField(
        max_length=MAX_IMAGE_FIELD,
        required=False,
        help_text="Base64; canny edges are computed from it here",
    )
    loras = LorasField(required=False)
    lora = LorasField(required=False, help_text="The same as loras")

    def validate_width(self, value: int) -> int:
        return base.check_multiple_of_8("width", value)

    def validate_height(self, value: int) -> int:
        return base.check_multiple_of_8("height", value)

    def validate_backend(self, value: str) -> str:
        if value == "tvm":
            raise ValidationError("The tvm backend is not available here; use auto or torch.")
        return value

    def validate_style_preset(self, value: str) -> str:
        if value not in STYLE_PRESETS:
            raise ValidationError(
                f"Unknown style_preset {value!r}; choose one of: {', '.join(STYLE_PRESETS)}."
            )
        return value

    def validate_enable_refiner(self, value: bool) -> bool:
        if value:
            raise ValidationError("This server has no refiner model; send false or leave it out.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        plan: Plan = self.context["plan"]
        for side in ("width", "height"):
            if side in attrs:
                base.check_side(plan, side, attrs[side])
        if "steps" in attrs:
            base.check_steps(plan, "steps", attrs["steps"])
        if "lora" in attrs and "loras" in attrs:
            raise ValidationError({"lora": ["Send loras or lora, not both."]})
        if "lora" in attrs:
            attrs["loras"] = attrs.pop("lora")
        name, image = attrs.get("controlnet_name"), attrs.get("controlnet_image")
        if name and not image:
            raise ValidationError({"controlnet_image": ["controlnet_name needs controlnet_image."]})
        if image and not name:
            raise ValidationError({"controlnet_name": ["controlnet_image needs controlnet_name."]})
        if image and attrs.get("image"):
            raise ValidationError(
                {"image": ["image (img2img) and controlnet_image cannot be combined; send one."]}
            )
        if "strength" in attrs and not attrs.get("image"):
            raise ValidationError({"strength": ["strength applies to img2img: send image too."]})
        return attrs


def checkpoint(organization: Organization, model_name: str) -> AIModel | None:
    """The named model if the caller may see it (submission.submit answers the 404 otherwise)."""
    return AIModel.objects.visible_to(organization).filter(model_id=model_name).first()


def controlnet_id(organization: Organization, model: AIModel | None, name: str) -> str:
    """A ControlNet model id for `name`: an id itself, or a type (canny) in a fitting model's id."""
    visible = AIModel.objects.visible_to(organization).filter(family=AIModel.Family.CONTROLNET)
    if visible.filter(model_id=name).exists() or model is None:
        return name
    match = visible.filter(base=model.base, model_id__icontains=name).order_by("model_id").first()
    return match.model_id if match else name


def request_fields(
    body: dict[str, Any], plan: Plan, organization: Organization
) -> tuple[str, dict[str, Any]]:
    """(kind, GenerationRequest fields) for a validated Hyperbolic body."""
    model = checkpoint(organization, body["model_name"])
    sent = [name for name in SECOND_PROMPTS if body[name]]
    if (
        sent
        and model is not None
        and not has_second_prompt(pipeline_family(model.family, model.base))
    ):
        raise ValidationError(
            {
                name: [
                    f"The {name} applies to SDXL models only; {model.model_id} is a "
                    f"{model.get_family_display()} model."
                ]
                for name in sent
            }
        )
    prompt, negative = body["prompt"], body["negative_prompt"]
    if body.get("style_preset"):
        prompt, negative = STYLE_PRESETS[body["style_preset"]].apply(prompt, negative)
    fields = base.defaults(
        prompt=prompt,
        negative_prompt=negative,
        prompt_2=body["prompt_2"],
        negative_prompt_2=body["negative_prompt_2"],
        steps=body.get("steps") or min(DEFAULT_STEPS, plan.max_steps),
        guidance_scale=body["cfg_scale"],
        seed=base.random_seed(body.get("seed")),
        loras=body.get("loras", []),
    )
    if body.get("sampler"):
        fields.update(base.sampler_fields(body["sampler"], "sampler"))
    for side in ("width", "height"):
        if side in body:
            fields[side] = body[side]
    if body.get("image"):
        fields.update(init_image=body["image"], strength=body.get("strength", DEFAULT_STRENGTH))
        return "img2img", fields
    if body.get("controlnet_name"):
        fields.update(
            init_image=body["controlnet_image"],
            controlnet_model=controlnet_id(organization, model, body["controlnet_name"]),
            controlnet_type="",
            # canny is computed from controlnet_image; other types take it as the control map.
            auto_hint=True,
        )
        return "controlnet", fields
    for side in ("width", "height"):
        fields.setdefault(side, min(DEFAULT_SIDE, plan.max_side))
    return "text2img", fields


def wire_names(kind: str) -> dict[str, str]:
    """GenerationRequest field names -> Hyperbolic's, for renaming a 400."""
    return {
        "model_id": "model_name",
        "guidance_scale": "cfg_scale",
        "scheduler": "sampler",
        "lora_model": "loras",
        "controlnet_model": "controlnet_name",
        "init_image": "controlnet_image" if kind == "controlnet" else "image",
    }


def answer(job: Job) -> dict[str, Any]:
    """The Hyperbolic body of a finished job."""
    seed = job.params["seed"]
    return {
        "images": [
            {"index": index, "image": image, "random_seed": seed + index}
            for index, image in enumerate(answers.images_base64(job))
        ],
        "inference_time": job.generation_time or 0.0,
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
HyperbolicImages = inline_serializer(
    "HyperbolicImages",
    {
        "images": inline_serializer(
            "HyperbolicImage",
            {
                "index": serializers.IntegerField(),
                "image": serializers.CharField(help_text="The PNG, base64"),
                "random_seed": serializers.IntegerField(),
            },
            many=True,
        ),
        "inference_time": serializers.FloatField(help_text="Seconds"),
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
    def post(self, request: Request) -> Response:
        org = request.user.organization
        serializer = HyperbolicSerializer(data=clean_body(request.data), context={"plan": org.plan})
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        kind = "text2img"
        try:
            kind, fields = request_fields(body, org.plan, org)
            job = submission.submit(
                request, fields, kind, model_id=body["model_name"], model_required=True
            )
        except ValidationError as exc:
            raise base.renamed(exc, wire_names(kind)) from None
        return Response(answer(submission.wait_until_done(job)))


urlpatterns = [
    path("v1/image/generation", GenerationView.as_view(), name="hyperbolic-generation"),
]
