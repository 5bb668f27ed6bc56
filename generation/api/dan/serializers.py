"""The body of Dan's POST /api/sd/txt2img, read into GenerationRequest's fields.

Sizes: width and height take Dan's range 8..1024. Pictor's engine works in multiples of 8 and
needs at least 64 pixels a side, so a side is rounded to the nearest multiple of 8 (4 rounds
up) and a side under 64 is raised to 64; a rounded side above the plan's max side is a 400.

The serializer resolves the checkpoint and its add-ons and decodes the control image itself, so
every 400 names the field the client sent (model or model_name, loras, control_net).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from billing.models import Plan
from generation import submission
from generation.api import base

MIN_SIDE = 8
MAX_SIDE = 1024
# The engine's smallest side (a latent of 8x8); Dan allows smaller sizes, they are raised.
ENGINE_MIN_SIDE = 64
DEFAULT_SIDE = 512
MIN_STEPS = 20
MAX_STEPS = 60
DEFAULT_STEPS = 20
MAX_CFG = 30
DEFAULT_CFG = 7.0
DEFAULT_SAMPLER = "Euler a"
MAX_BATCH = 4
MAX_CONTROL_WEIGHT = 2.0
MAX_UPSCALE = 4
# Preprocessors: "canny" is computed here from the image; "none" means the image already is
# the control map. Other A1111 preprocessors (depth, openpose, ...) would need models Pictor
# does not run, so they are refused rather than silently skipped.
CONTROL_MODULES = ("canny", "none")

# Words inside the shared layer's image messages that a Dan caller never sent: its image is
# the control_net's (message text only; the field is named `control_net`).
DAN_WORDS = {"init_image": "control_net image", "control_image": "control_net image"}


def bounds(name: str, low: float, high: float, kind: str = "an integer") -> dict[str, Any]:
    """Field arguments for a number in [low, high] whose messages name the field."""
    low_text, high_text = (str(int(n)) if float(n).is_integer() else str(n) for n in (low, high))
    text = f"The {name} must be {kind} between {low_text} and {high_text}."
    return {
        "min_value": low,
        "max_value": high,
        "error_messages": {"min_value": text, "max_value": text, "invalid": text},
    }


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "array",
            "items": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            "minItems": 2,
            "maxItems": 2,
        },
        "example": [["demo-lora-a", 0.8]],
    }
)
class LorasField(base.LorasField):
    """Dan's `loras`: a list of [name, weight] pairs (a weight as text is refused)."""

    def to_internal_value(self, data: Any) -> list[tuple[str, float]]:
        shape = "The loras must be a list of [name, weight] pairs."
        if not isinstance(data, list):
            raise ValidationError(shape)
        loras = []
        for item in data:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise ValidationError(shape)
            name = item[0].strip()
            if not name or len(name) > 100:
                raise ValidationError("A LoRA name must be 1 to 100 characters.")
            base.storable(name)
            loras.append((name, self.weight(name, item[1])))
        return loras


class DanControlNetUnitSerializer(base.CopiedFields):
    """One `control_net` unit; its errors are reported under `control_net`."""

    model = serializers.CharField(max_length=100)
    image = serializers.CharField(max_length=base.MAX_IMAGE_FIELD, required=False)
    input_image = serializers.CharField(max_length=base.MAX_IMAGE_FIELD, required=False)
    module = serializers.CharField(max_length=50, required=False)
    weight = base.FiniteFloatField(
        default=1.0, **bounds("weight", 0, MAX_CONTROL_WEIGHT, "a number")
    )
    guidance_start = base.FiniteFloatField(
        default=0.0, **bounds("guidance_start", 0, 1, "a number")
    )
    guidance_end = base.FiniteFloatField(default=1.0, **bounds("guidance_end", 0, 1, "a number"))


CONTROL_NET_UNIT_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string", "description": "A ControlNet model id"},
        "image": {"type": "string", "description": "http(s) URL or base64 image"},
        "module": {"type": "string", "enum": list(CONTROL_MODULES)},
        "weight": {"type": "number", "minimum": 0, "maximum": MAX_CONTROL_WEIGHT, "default": 1},
        "guidance_start": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
        "guidance_end": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
    },
    "required": ["model", "image"],
}


@extend_schema_field(
    {
        "oneOf": [
            CONTROL_NET_UNIT_SCHEMA,
            {"type": "array", "items": CONTROL_NET_UNIT_SCHEMA, "maxItems": 1},
        ]
    }
)
class ControlNetField(serializers.Field):
    """Dan's `control_net`: one unit, or a list of at most one."""

    def to_internal_value(self, data: Any) -> dict[str, Any] | None:
        units = data if isinstance(data, list) else [data]
        if not units:
            return None
        if len(units) > 1:
            raise ValidationError("Only one control_net unit is supported.")
        unit = base.clean_body(units[0]) if isinstance(units[0], dict) else None
        if unit is None:
            raise ValidationError("The control_net must be an object (or a list of one).")
        serializer = DanControlNetUnitSerializer(data=unit)
        if not serializer.is_valid():
            name, messages = next(iter(serializer.errors.items()))
            raise ValidationError(f"control_net.{name}: {' '.join(str(m) for m in messages)}")
        fields = dict(serializer.validated_data)
        if fields.get("image") and fields.get("input_image"):
            raise ValidationError("control_net.input_image: Send image or input_image, not both.")
        image = fields.get("image") or fields.get("input_image")
        if not image:
            raise ValidationError("control_net.image: The control_net image is required.")
        module = fields.get("module", "").strip().lower()
        if module and module not in CONTROL_MODULES:
            raise ValidationError(
                f"control_net.module: {module!r} is not supported; use canny (computed from "
                "the image here) or none (the image is a ready control map)."
            )
        if fields["guidance_start"] >= fields["guidance_end"]:
            raise ValidationError("control_net.guidance_end: Must be greater than guidance_start.")
        # The shared layer's ControlNet rules: an image with a computed type (or, without a
        # module, a canny model) is the source of the edges; otherwise it is the control map.
        if module == "none":
            images = {"control_image": image, "controlnet_type": ""}
        else:
            images = {"init_image": image, "controlnet_type": module}
        return {
            "controlnet_model": fields["model"],
            "controlnet_conditioning_scale": fields["weight"],
            "control_guidance_start": fields["guidance_start"],
            "control_guidance_end": fields["guidance_end"],
            "auto_hint": True,
            **images,
        }


@extend_schema_field(
    {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 4}, {"type": "boolean"}]}
)
class UpscaleField(serializers.Field):
    """Dan's `upscale` (hires fix): a factor 1..4, or true (2) / false (1)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool):
            return 2 if data else 1
        if isinstance(data, str) and data.strip().lower() in ("true", "false"):
            return 2 if data.strip().lower() == "true" else 1
        # Bounded before any conversion: 5,000 digits or "nan" are refused, not a 500.
        factor = base.bounded_float(data, 1, MAX_UPSCALE)
        if factor is None or not factor.is_integer():
            raise ValidationError(
                f"The upscale must be a factor from 1 to {MAX_UPSCALE}, or true or false."
            )
        return int(factor)


def round_side(value: int) -> int:
    """A Dan side (8..1024) as the engine takes it: nearest multiple of 8, at least 64."""
    return max(ENGINE_MIN_SIDE, (value + 4) // 8 * 8)


class DanTxt2ImgSerializer(base.CopiedFields):
    """POST /api/sd/txt2img: Dan's fields and ranges; the plan narrows sizes, steps and batch."""

    # (Comments, not the docstring: that is the schema's description.) Context: "org", "plan"
    # and "request". The validated data is GenerationRequest's fields plus "kind" (text2img or
    # controlnet) and "checkpoint", the resolved model.

    prompt = serializers.CharField(
        max_length=base.MAX_PROMPT_LENGTH,
        error_messages={
            "required": "The prompt field is required.",
            "blank": "The prompt field is required.",
        },
    )
    negative_prompt = serializers.CharField(
        max_length=base.MAX_PROMPT_LENGTH, required=False, default="", allow_blank=True
    )
    model = serializers.CharField(
        max_length=100, required=False, help_text="Default model if absent"
    )
    model_name = serializers.CharField(max_length=100, required=False, help_text="Alias of model")
    width = serializers.IntegerField(
        required=False,
        help_text="8..1024, rounded to a multiple of 8, at least 64. Default 512.",
        **bounds("width", MIN_SIDE, MAX_SIDE),
    )
    height = serializers.IntegerField(
        required=False,
        help_text="8..1024, rounded to a multiple of 8, at least 64. Default 512.",
        **bounds("height", MIN_SIDE, MAX_SIDE),
    )
    steps = serializers.IntegerField(
        default=DEFAULT_STEPS,
        help_text="20..60, at most the plan's largest steps value.",
        **bounds("steps", MIN_STEPS, MAX_STEPS),
    )
    cfg_scale = base.FiniteFloatField(
        source="guidance_scale", default=DEFAULT_CFG, **bounds("cfg_scale", 1, MAX_CFG, "a number")
    )
    sampler_name = serializers.CharField(
        max_length=100, required=False, help_text=f'AUTOMATIC1111 name, default "{DEFAULT_SAMPLER}"'
    )
    sampler = serializers.CharField(
        max_length=100, required=False, help_text="Alias of sampler_name"
    )
    batch_size = serializers.IntegerField(
        source="samples", default=1, **bounds("batch_size", 1, MAX_BATCH)
    )
    loras = LorasField(required=False)
    seed = serializers.IntegerField(
        default=-1, help_text="-1: random", **bounds("seed", -1, base.MAX_SEED)
    )
    control_net = ControlNetField(required=False)
    upscale = UpscaleField(
        source="hires_scale", required=False, help_text="Hires fix factor 1..4, or true (2)"
    )

    def validate_width(self, value: int) -> int:
        return round_side(value)

    def validate_height(self, value: int) -> int:
        return round_side(value)

    def validate_cfg_scale(self, value: float) -> float:
        if value != value:  # NaN passes the min/max comparisons
            raise ValidationError(self.fields["cfg_scale"].error_messages["invalid"])
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The shared layer's fields (GenerationRequest names) for a valid body."""
        plan: Plan = self.context["plan"]
        # The plan's limits, after the rounding (515 becomes 512, which a 512 plan allows).
        base.check_sides(plan, attrs)
        base.check_steps(plan, "steps", attrs["steps"])
        base.check_samples(plan, "batch_size", attrs["samples"])
        for name, alias in (("model", "model_name"), ("sampler_name", "sampler")):
            if attrs.get(name, attrs.get(alias)) != attrs.get(alias, attrs.get(name)):
                raise ValidationError({alias: [f"{name} and {alias} differ; send one of them."]})
        sampler_field = (
            "sampler" if "sampler" in attrs and "sampler_name" not in attrs else "sampler_name"
        )
        sampler = attrs.get(sampler_field, DEFAULT_SAMPLER)
        prompt, tagged = base.prompt_loras(attrs["prompt"], empty="The prompt field is required.")
        loras = attrs.get("loras", []) + tagged
        base.check_loras(loras, "loras")
        fields = base.defaults(
            prompt=prompt,
            negative_prompt=attrs["negative_prompt"],
            samples=attrs["samples"],
            steps=attrs["steps"],
            guidance_scale=attrs["guidance_scale"],
            seed=base.random_seed(attrs["seed"]),
            loras=loras,
            hires_scale=attrs.get("hires_scale", 1),
            **base.sampler_fields(sampler, sampler_field),
        )
        control = attrs.get("control_net")
        if control is not None:
            # Without a size, ControlNet takes the control image's (fitted to the plan).
            fields.update({k: attrs[k] for k in ("width", "height") if k in attrs}, **control)
        else:
            fields["width"] = attrs.get("width", DEFAULT_SIDE)
            fields["height"] = attrs.get("height", DEFAULT_SIDE)
        self._check_upscale(fields, plan)
        return self._resolved(attrs.get("model") or attrs.get("model_name"), fields)

    def _resolved(self, model_id: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint, its add-ons and the control image, each 400 naming Dan's field."""
        request = self.context["request"]
        # `model` wins over its alias (as above); a 400 names the one sent, as sent.
        sent = request.data
        model_field = "model_name" if "model_name" in sent and "model" not in sent else "model"
        kind = "controlnet" if "controlnet_model" in fields else "text2img"
        model = submission.resolve_model(request, model_id, kind, model_field)
        submission.resolve_addons(
            request, model, fields, {"lora_model": "loras", "controlnet_model": "control_net"}
        )
        images = submission.Inputs(self.context["org"].pk)
        for name in ("init_image", "control_image"):
            if fields.get(name):
                try:
                    fields[name] = images.load(name, fields[name])
                except ValidationError as exc:
                    raise ValidationError({"control_net": dan_words(exc)}) from None
        return {**fields, "kind": kind, "checkpoint": model}

    def _check_upscale(self, fields: dict[str, Any], plan: Plan) -> None:
        factor = fields["hires_scale"]
        if factor == 1:
            return
        if "controlnet_model" in fields:
            raise ValidationError(
                {"upscale": ["The upscale option does not combine with control_net."]}
            )
        base.check_upscaled(plan, "upscale", fields["width"], fields["height"], factor)


def dan_words(exc: ValidationError) -> list[str]:
    """The messages of an input image's 400 in Dan's words (DAN_WORDS)."""
    detail = exc.detail
    messages = [m for ms in detail.values() for m in ms] if isinstance(detail, dict) else detail
    texts = [str(m) for m in (messages if isinstance(messages, list) else [messages])]
    for before, after in DAN_WORDS.items():
        texts = [text.replace(before, after) for text in texts]
    return texts
