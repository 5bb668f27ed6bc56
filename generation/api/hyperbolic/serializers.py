"""The body of Hyperbolic's POST /v1/image/generation, read into GenerationRequest's fields.

The serializer resolves the checkpoint and its add-ons itself, so their 400s name the field the
client sent (model_name, loras, controlnet_name).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from accounts.models import Organization
from billing.models import Plan
from generation import refiners, submission
from generation.api import base
from generation.api.base import MAX_IMAGE_FIELD, MAX_PROMPT_LENGTH, MAX_SEED
from generation.engine.pipelines import has_second_prompt, pipeline_family
from generation.engine.styles import STYLE_PRESETS
from generation.models import AIModel

DEFAULT_SIDE = 1024
MIN_SIDE = 64
MAX_SIDE = 2048
DEFAULT_STEPS = 30
DEFAULT_CFG_SCALE = 5.0
MAX_CFG_SCALE = 30
DEFAULT_STRENGTH = 0.8
BACKENDS = ("auto", "torch", "tvm")
SECOND_PROMPTS = ("prompt_2", "negative_prompt_2")


@extend_schema_field({"type": "object", "additionalProperties": {"type": "number"}})
class LorasField(base.LorasField):
    """{"lora name": weight}: a JSON object of registered LoRA ids to weights."""

    weight_message = "The weight of {name!r} must be a number between {low:g} and {high:g}."
    weight_as_text = True

    def to_internal_value(self, data: Any) -> list[tuple[str, float]]:
        if not isinstance(data, dict):
            raise ValidationError('Must be an object of LoRA names to weights: {"name": 0.8}.')
        loras = []
        for name, weight in data.items():
            base.storable(name)
            loras.append((str(name).strip(), self.weight(name, weight)))
        base.check_loras(loras, "loras")
        return loras


def checkpoint(organization: Organization, model_name: str) -> AIModel | None:
    """The named model if the caller may see it (resolve_model answers the 404 otherwise)."""
    return AIModel.objects.visible_to(organization).filter(model_id=model_name).first()


def controlnet_id(organization: Organization, model: AIModel | None, name: str) -> str:
    """A ControlNet model id for `name`: an id itself, or a type (canny) in a fitting model's id."""
    visible = AIModel.objects.visible_to(organization).filter(family=AIModel.Family.CONTROLNET)
    if visible.filter(model_id=name).exists() or model is None:
        return name
    match = visible.filter(base=model.base, model_id__icontains=name).order_by("model_id").first()
    return match.model_id if match else name


class HyperbolicSerializer(base.CopiedFields):
    """The body of POST /v1/image/generation; the plan narrows the bounds."""

    # (Comments, not the docstring: that is the schema's description.) Context: "org", "plan"
    # and "request". The validated data is GenerationRequest's fields plus "kind" (text2img,
    # img2img or controlnet) and "checkpoint", the resolved model.

    model_name = serializers.CharField(
        source="model_id", max_length=100, help_text="A checkpoint id from the models"
    )
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
        source="init_image",
        max_length=MAX_IMAGE_FIELD,
        required=False,
        help_text="Base64 init image: img2img",
    )
    strength = base.FiniteFloatField(min_value=0, max_value=1, required=False)
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, required=False)
    cfg_scale = base.FiniteFloatField(
        source="guidance_scale", min_value=1, max_value=MAX_CFG_SCALE, default=DEFAULT_CFG_SCALE
    )
    sampler = serializers.CharField(source="scheduler", max_length=100, required=False)
    steps = serializers.IntegerField(min_value=1, required=False)
    style_preset = serializers.CharField(
        max_length=100, required=False, help_text=", ".join(STYLE_PRESETS)
    )
    enable_refiner = serializers.BooleanField(
        default=False,
        help_text="SDXL text2img: the server's refiner model finishes the last 20% of the steps",
    )
    controlnet_name = serializers.CharField(
        source="controlnet_model",
        max_length=100,
        required=False,
        help_text="A ControlNet model id, or a type such as canny",
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

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        plan: Plan = self.context["plan"]
        base.check_sides(plan, attrs)
        if "steps" in attrs:
            base.check_steps(plan, "steps", attrs["steps"])
        if "lora" in attrs and "loras" in attrs:
            raise ValidationError({"lora": ["Send loras or lora, not both."]})
        if "lora" in attrs:
            attrs["loras"] = attrs.pop("lora")
        name, image = attrs.get("controlnet_model"), attrs.get("controlnet_image")
        if name and not image:
            raise ValidationError({"controlnet_image": ["controlnet_name needs controlnet_image."]})
        if image and not name:
            raise ValidationError({"controlnet_name": ["controlnet_image needs controlnet_name."]})
        if image and attrs.get("init_image"):
            raise ValidationError(
                {"image": ["image (img2img) and controlnet_image cannot be combined; send one."]}
            )
        if "strength" in attrs and not attrs.get("init_image"):
            raise ValidationError({"strength": ["strength applies to img2img: send image too."]})
        kind, fields = self.request_fields(attrs, plan, self.context["org"])
        request = self.context["request"]
        model = submission.resolve_model(request, attrs["model_id"], kind, "model_name")
        submission.resolve_addons(
            request, model, fields, {"lora_model": "loras", "controlnet_model": "controlnet_name"}
        )
        if attrs["enable_refiner"]:
            fields["refiner"] = refiners.resolve(
                self.context["org"], model, None, "enable_refiner", kind
            )
        if fields.get("init_image"):
            # The message and the key both name the field sent.
            field = "controlnet_image" if kind == "controlnet" else "image"
            images = submission.Inputs(self.context["org"].pk)
            fields["init_image"] = images.load(field, fields["init_image"])
        return {**fields, "kind": kind, "checkpoint": model}

    @staticmethod
    def request_fields(
        attrs: dict[str, Any], plan: Plan, organization: Organization
    ) -> tuple[str, dict[str, Any]]:
        """(kind, GenerationRequest fields) for a body whose fields passed their checks."""
        model = checkpoint(organization, attrs["model_id"])
        sent = [name for name in SECOND_PROMPTS if attrs[name]]
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
        prompt, negative = attrs["prompt"], attrs["negative_prompt"]
        if attrs.get("style_preset"):
            prompt, negative = STYLE_PRESETS[attrs["style_preset"]].apply(prompt, negative)
        fields = base.defaults(
            prompt=prompt,
            negative_prompt=negative,
            prompt_2=attrs["prompt_2"],
            negative_prompt_2=attrs["negative_prompt_2"],
            steps=attrs.get("steps") or min(DEFAULT_STEPS, plan.max_steps),
            guidance_scale=attrs["guidance_scale"],
            seed=base.random_seed(attrs.get("seed")),
            loras=attrs.get("loras", []),
        )
        if attrs.get("scheduler"):
            fields.update(base.sampler_fields(attrs["scheduler"], "sampler"))
        for side in ("width", "height"):
            if side in attrs:
                fields[side] = attrs[side]
        if attrs.get("init_image"):
            fields.update(
                init_image=attrs["init_image"], strength=attrs.get("strength", DEFAULT_STRENGTH)
            )
            return "img2img", fields
        if attrs.get("controlnet_model"):
            fields.update(
                init_image=attrs["controlnet_image"],
                controlnet_model=controlnet_id(organization, model, attrs["controlnet_model"]),
                controlnet_type="",
                # canny is computed from controlnet_image; other types take it as the control map.
                auto_hint=True,
            )
            return "controlnet", fields
        for side in ("width", "height"):
            fields.setdefault(side, min(DEFAULT_SIDE, plan.max_side))
        return "text2img", fields
