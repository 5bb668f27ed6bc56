"""The ModelsLab wire format's bodies (docs/architecture.md): key in the body, lenient types.

Each endpoint's serializer with ModelsLab's wording of errors, and `parse`, which refuses the
fields this server does not offer and the fields of other endpoints before validating.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from billing.models import Plan
from generation import fewstep, safe_http
from generation.api import base
from generation.api.base import MAX_IMAGE_FIELD, MAX_PROMPT_LENGTH, MAX_SEED, clean_body, comma_list
from generation.engine.request import (
    DEFAULT_OUTPUT_QUALITY,
    DEFAULT_SCHEDULER,
    MAX_CONTROLNETS,
    MAX_OUTPUT_QUALITY,
    MIN_OUTPUT_QUALITY,
    SAFETY_MODES,
    GenerationRequest,
)
from generation.engine.schedulers import (
    A1111_SAMPLERS,
    WIRE_ALGORITHM_TYPES,
    diffusers_algorithm_type,
    usable_scheduler_error,
)
from generation.engine.variations import DEFAULT_PAG_SCALE
from generation.engine.weighting import MAX_CLIP_SKIP_2
from generation.submission import DEFAULT_SIDE

# Known ModelsLab fields whose features this server does not offer. A non-default value is a
# 400 naming the field: accepting it and ignoring it would hand back a different image than asked.
NOT_SUPPORTED = (
    "enhance_style",
    "multi_lingual",
    "face_enhance",
)
# Fields of other endpoints: sent here with a value, they would be silently dropped, so a 400
# says where they belong.
ENDPOINT_FIELDS = {
    "init_image": "img2img, inpaint, controlnet and super_resolution",
    "mask_image": "inpaint and controlnet",
    "strength": "img2img, inpaint and controlnet",
    "control_image": "controlnet",
    "controlnet_model": "controlnet",
    "controlnet_type": "controlnet",
    "scale": "super_resolution",
    "panorama": "text2img",
    "self_attention": "text2img, img2img, inpaint and controlnet",
    "ip_adapter_id": "text2img, img2img, inpaint and controlnet",
    "ip_adapter_scale": "text2img, img2img, inpaint and controlnet",
    "ip_adapter_image": "text2img, img2img, inpaint and controlnet",
}
# The generating endpoints' fields that an upscale has no use for: the upscaler runs its own
# steps without a prompt, once, and its output is `scale` times the input's size.
UPSCALE_REFUSES = (
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "samples",
    "num_inference_steps",
    "steps",
    "guidance_scale",
    "scheduler",
    "use_karras_sigmas",
    "algorithm_type",
    "clip_skip",
    "lora_model",
    "lora_strength",
    "embeddings_model",
    "vae",
    "enhance_prompt",
    "tomesd",
    "highres_fix",
    "upscale",
    "instant_response",
)
OFF_WORDS = ("", "0", "no", "false", "none", "null", "off")
ON_WORDS = ("1", "yes", "true", "on")
# Values that mean "off" for one field only: an upscale factor of 1 changes nothing, and one
# sample is what an endpoint without `samples` makes anyway.
ALSO_OFF = {"upscale": ("1", 1), "samples": ("1", 1)}
MAX_UPSCALE = 4


def sent_steps(attrs: dict[str, Any]) -> int | None:
    """The steps sent as num_inference_steps or its alias steps (popped); None when neither.

    Both with different values is a 400 naming `steps`: either one would be ignored.
    """
    steps = attrs.pop("num_inference_steps", None)
    alias = attrs.pop("steps", None)
    if steps is not None and alias is not None and steps != alias:
        raise ValidationError(
            {"steps": ["num_inference_steps and steps differ; send one of them."]}
        )
    return steps if steps is not None else alias


def is_default_value(name: str, value: Any) -> bool:
    """True for the values clients send to mean "leave this feature off"."""
    if value in ALSO_OFF.get(name, ()) and not isinstance(value, bool):
        return True
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str):
        return value.strip().lower() in OFF_WORDS
    if isinstance(value, list | dict):
        return not value
    return value is None


class ModelsLabSerializer(base.CopiedFields):
    """Gives every field ModelsLab's "The x field is required." wording."""

    # Fields this endpoint refuses (a 400 naming the field, when sent with a value) besides
    # ENDPOINT_FIELDS, each with the sentence that says why; `parse` checks them.
    refused: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            field.error_messages["required"] = f"The {name} field is required."
            field.error_messages["blank"] = f"The {name} field is required."


@extend_schema_field(OpenApiTypes.STR)
class NamesField(serializers.Field):
    """A comma list of model names (or a JSON list of them)."""

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, str | list):
            raise ValidationError("Must be a comma-separated list of names.")
        names = comma_list(data)
        if any(len(name) > 100 for name in names):
            raise ValidationError("A name may be at most 100 characters.")
        for name in names:
            base.storable(name)
        return names


@extend_schema_field(OpenApiTypes.STR)
class NumbersField(serializers.Field):
    """A comma list of numbers within bounds (or a single number)."""

    def __init__(self, *, min_value: float, max_value: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_value = min_value
        self.max_value = max_value

    def to_internal_value(self, data: Any) -> list[float]:
        items = data if isinstance(data, list) else comma_list(data)
        # Finite numbers of sane length only: NaN passes no range check, 1e400 overflows.
        read = [base.bounded_float(item, -math.inf, math.inf) for item in items]
        numbers = [n for n in read if n is not None]
        if len(numbers) != len(read):
            raise ValidationError("Must be a number or a comma-separated list of numbers.")
        if any(not (self.min_value <= n <= self.max_value) for n in numbers):
            raise ValidationError(
                f"Each value must be between {self.min_value} and {self.max_value}."
            )
        return numbers


@extend_schema_field(OpenApiTypes.STR)
class SwitchOrFactorField(serializers.Field):
    """ModelsLab's `upscale`: yes/no, or an integer factor (1 = off)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool):
            return 2 if data else 1
        text = str(data).strip().lower()
        if text in ON_WORDS[1:]:
            return 2
        if text in OFF_WORDS:
            return 1
        factor = base.bounded_int(text, 1, MAX_UPSCALE)
        if factor is None:
            raise ValidationError(f"Must be yes, no or a factor from 1 to {MAX_UPSCALE}.")
        return factor


@extend_schema_field(OpenApiTypes.STR)
class SwitchField(serializers.Field):
    """A ModelsLab yes/no switch, read as leniently as its clients write it."""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        text = str(data).strip().lower()
        if text in ON_WORDS:
            return True
        if text in OFF_WORDS:
            return False
        raise ValidationError("Must be yes or no.")


class GenerationSerializer(ModelsLabSerializer):
    """The fields every generating endpoint takes, with their bounds; the plan narrows some."""

    prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH, trim_whitespace=True)
    negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, required=False, default="", allow_blank=True
    )
    model_id = serializers.CharField(max_length=100, required=False)
    width = serializers.IntegerField(min_value=64, max_value=1024, required=False)
    height = serializers.IntegerField(min_value=64, max_value=1024, required=False)
    samples = serializers.IntegerField(min_value=1, max_value=4, default=1)
    num_inference_steps = serializers.IntegerField(min_value=1, max_value=150, required=False)
    steps = serializers.IntegerField(min_value=1, max_value=150, required=False)
    guidance_scale = base.FiniteFloatField(min_value=1, max_value=20, default=7.5)
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, required=False)
    scheduler = serializers.CharField(max_length=100, default=DEFAULT_SCHEDULER)
    use_karras_sigmas = serializers.BooleanField(default=False)
    algorithm_type = serializers.ChoiceField(choices=WIRE_ALGORITHM_TYPES, default="none")
    clip_skip = serializers.IntegerField(min_value=1, max_value=8, required=False)
    # SDXL only (a 400 on other models at submit): the layer of its second text encoder.
    clip_skip_2 = serializers.IntegerField(min_value=1, max_value=MAX_CLIP_SKIP_2, required=False)
    safety_checker = serializers.BooleanField(default=True)
    safety_checker_type = serializers.ChoiceField(
        choices=SAFETY_MODES, default="sensitive_content_text"
    )
    lora_model = NamesField(required=False)
    lora_strength = NumbersField(min_value=-2, max_value=2, required=False)
    embeddings_model = NamesField(required=False)
    vae = serializers.CharField(max_length=100, required=False)
    tomesd = serializers.BooleanField(default=False)
    # Perturbed-attention guidance at diffusers' usual scale (generation/engine/variations.py).
    self_attention = SwitchField(default=False)
    enhance_prompt = serializers.BooleanField(default=False)
    highres_fix = serializers.BooleanField(default=False)
    upscale = SwitchOrFactorField(required=False)
    track_id = serializers.CharField(max_length=255, required=False)
    webhook = serializers.URLField(max_length=2000, required=False)
    # Which events call the webhook: start, progress, completed (the default, alone).
    webhook_events = base.WebhookEventsField(required=False)
    base64 = serializers.BooleanField(default=False)
    # Image links that expire sooner (PICTOR_MEDIA_TEMP_URL_EXPIRE, generation/media.py).
    temp = serializers.BooleanField(default=False)
    # Answer at once with `processing` and future_links instead of waiting for the image.
    instant_response = serializers.BooleanField(default=False)
    # Pictor's own: how the images are encoded (jpg is jpeg); quality is for jpeg and webp.
    # Text, not a choice field: OpenAI's output_format enum has other values (one schema name).
    output_format = serializers.CharField(
        max_length=10, default="png", help_text="png, jpeg (or jpg) or webp"
    )
    quality = serializers.IntegerField(
        min_value=MIN_OUTPUT_QUALITY, max_value=MAX_OUTPUT_QUALITY, default=DEFAULT_OUTPUT_QUALITY
    )
    # IP-Adapter (image prompt): a registered ip_adapter model, its scale, its image (URL or
    # base64). ModelsLab takes lists for several adapters; one is offered here.
    ip_adapter_id = NamesField(required=False)
    ip_adapter_scale = NumbersField(min_value=0, max_value=2, required=False)
    ip_adapter_image = serializers.CharField(max_length=MAX_IMAGE_FIELD, required=False)

    kind = "text2img"

    def validate_webhook(self, value: str) -> str:
        # What delivery would refuse whatever DNS says (another scheme too) is refused now, not
        # after the job ran.
        try:
            safe_http.check_url(value, safe_http.policy_from_settings())
        except safe_http.UnsafeURL as exc:
            raise ValidationError(f"The webhook cannot be called: {exc}") from None
        return value

    def validate_output_format(self, value: str) -> str:
        wanted = value.strip().lower()
        if wanted not in ("png", "jpeg", "jpg", "webp"):
            raise ValidationError("The output_format must be one of png, jpeg, webp.")
        return "jpeg" if wanted == "jpg" else wanted

    def validate_width(self, value: int) -> int:
        return self._check_side("width", value)

    def validate_height(self, value: int) -> int:
        return self._check_side("height", value)

    def _check_side(self, name: str, value: int) -> int:
        plan: Plan = self.context["plan"]
        if value % 8:
            raise ValidationError(f"The {name} must be a multiple of 8.")
        if value > plan.max_side:
            raise ValidationError(
                f"The {name} may not be greater than {plan.max_side} on the {plan.name} plan."
            )
        return value

    def validate_samples(self, value: int) -> int:
        plan: Plan = self.context["plan"]
        if value > plan.max_samples:
            raise ValidationError(
                f"The samples may not be greater than {plan.max_samples} on the {plan.name} plan."
            )
        return value

    def validate_guidance_scale(self, value: float) -> float:
        if value != value:  # NaN passes min/max comparisons
            raise ValidationError("The guidance_scale must be a number between 1 and 20.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        plan: Plan = self.context["plan"]
        sent = sent_steps(attrs)
        steps = sent or 21
        # Steps off the plan's list wait for the model (fewstep.apply): a few-step one takes 1
        # to 8 and answers its own range, a plain one the plan's list.
        attrs["steps"] = steps
        attrs[fewstep.STEPS_RULE] = fewstep.StepsRule(
            "num_inference_steps",
            listed=steps in plan.steps_list,
            sent=sent is not None,
            scheduler_sent="scheduler" in self.initial_data,
        )

        name = attrs["scheduler"]
        if name in A1111_SAMPLERS:
            self._sampler_options(name, attrs)
            choice = A1111_SAMPLERS[name]
            attrs["scheduler"] = choice.scheduler
            attrs["use_karras_sigmas"] = attrs["use_karras_sigmas"] or choice.use_karras_sigmas
            if choice.algorithm_type != "none":
                attrs["algorithm_type"] = choice.algorithm_type
        problem = usable_scheduler_error(
            attrs["scheduler"], attrs["use_karras_sigmas"], attrs["algorithm_type"]
        )
        if problem:
            raise ValidationError({"scheduler": [problem]})

        attrs["seed"] = base.random_seed(attrs.get("seed"))
        attrs["output_quality"] = attrs.pop("quality")
        attrs["loras"] = self._loras(attrs)
        attrs["pag_scale"] = DEFAULT_PAG_SCALE if attrs.pop("self_attention") else 0.0
        self._hires(attrs, plan)
        self._ip_adapter(attrs)
        return attrs

    def _sampler_options(self, name: str, attrs: dict[str, Any]) -> None:
        """A 400 when the body's algorithm_type or use_karras_sigmas contradicts sampler `name`.

        An A1111 sampler name fixes both; a different value sent beside it would be overridden,
        and the image would not be what the body asked for.
        """
        choice = A1111_SAMPLERS[name]
        sent = attrs["algorithm_type"]
        wanted = diffusers_algorithm_type(choice.algorithm_type)
        if sent != "none" and wanted is not None and diffusers_algorithm_type(sent) != wanted:
            fitting = [
                other
                for other, c in A1111_SAMPLERS.items()
                if replace(c, algorithm_type="none") == replace(choice, algorithm_type="none")
                and diffusers_algorithm_type(c.algorithm_type) == diffusers_algorithm_type(sent)
            ]
            instead = f"the scheduler {fitting[0]!r}" if fitting else "another scheduler"
            raise ValidationError(
                {
                    "algorithm_type": [
                        f"The scheduler {name!r} runs diffusers' {wanted}, not algorithm_type "
                        f"{sent}; leave algorithm_type out (or none), or send {instead}."
                    ]
                }
            )
        if (
            choice.use_karras_sigmas
            and "use_karras_sigmas" in self.initial_data
            and not attrs["use_karras_sigmas"]
        ):
            raise ValidationError(
                {
                    "use_karras_sigmas": [
                        f"The scheduler {name!r} uses Karras sigmas; leave use_karras_sigmas "
                        "out (or yes), or name the sampler without Karras."
                    ]
                }
            )

    def _loras(self, attrs: dict[str, Any]) -> list[tuple[str, float]]:
        """lora_model + lora_strength and the prompt's <lora:name:weight> tags, as one list."""
        attrs["prompt"], tagged = base.prompt_loras(
            attrs["prompt"], empty="The prompt field is required."
        )
        names = attrs.pop("lora_model", [])
        strengths = attrs.pop("lora_strength", None)
        if strengths is None:
            strengths = [1.0] * len(names)
        elif len(strengths) == 1:
            strengths = strengths * len(names)
        elif len(strengths) != len(names):
            raise ValidationError(
                {"lora_strength": ["Give one strength, or one per name in lora_model."]}
            )
        loras = list(zip(names, strengths, strict=True)) + tagged
        base.check_loras(loras, "lora_model")
        return loras

    def _ip_adapter(self, attrs: dict[str, Any]) -> None:
        """ip_adapter_id, ip_adapter_scale and ip_adapter_image as the request's fields."""
        names = attrs.pop("ip_adapter_id", [])
        scales = attrs.pop("ip_adapter_scale", None)
        image = attrs.get("ip_adapter_image", "")
        if len(names) > 1:
            raise ValidationError(
                {"ip_adapter_id": ["One IP-Adapter per request is supported; give one id."]}
            )
        if scales is not None and len(scales) != 1:
            raise ValidationError({"ip_adapter_scale": ["Give one scale for the IP-Adapter."]})
        if not names:
            stray = "ip_adapter_image" if image else "ip_adapter_scale" if scales else ""
            if stray:
                raise ValidationError({stray: [f"The {stray} needs an ip_adapter_id."]})
            return
        if not image:
            raise ValidationError(
                {"ip_adapter_image": ["The ip_adapter_image field is required with ip_adapter_id."]}
            )
        attrs["ip_adapter"] = names[0]
        if scales is not None:
            attrs["ip_adapter_scale"] = scales[0]

    def _hires(self, attrs: dict[str, Any], plan: Plan) -> None:
        """highres_fix / upscale: a latent upscale pass whose result must fit the plan."""
        factor = attrs.pop("upscale", 1)
        if attrs.pop("highres_fix") and factor == 1:
            factor = 2
        attrs["hires_scale"] = factor
        if factor == 1:
            return
        field = "upscale" if "upscale" in self.initial_data else "highres_fix"
        if self.kind != "text2img":
            raise ValidationError({field: [f"The {field} option works on text2img only."]})
        # The second pass denoises int(steps × its strength) steps; with none the worker fails.
        strength = GenerationRequest.hires_strength
        if int(attrs["steps"] * strength) < 1:
            least = math.ceil(1 / strength)
            raise ValidationError(
                {field: [f"The {field} option needs at least {least} inference steps."]}
            )
        width, height = attrs.get("width", DEFAULT_SIDE), attrs.get("height", DEFAULT_SIDE)
        base.check_upscaled(plan, field, width, height, factor)


class Text2ImgSerializer(GenerationSerializer):
    kind = "text2img"
    # A wide image denoised in overlapping windows (SD 1.x/2.x; width > height).
    panorama = SwitchField(default=False)


class Img2ImgSerializer(GenerationSerializer):
    kind = "img2img"
    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD)
    strength = base.FiniteFloatField(min_value=0, max_value=1, default=0.7)

    def validate_strength(self, value: float) -> float:
        if value != value:
            raise ValidationError("The strength must be a number between 0 and 1.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        # diffusers runs int(steps * strength) steps; none at all is an error in the worker.
        if int(attrs["steps"] * attrs["strength"]) < 1:
            least = 1 / attrs["steps"]
            raise ValidationError(
                {
                    "strength": [
                        f"The strength is too small to run a step at {attrs['steps']} steps; "
                        f"use at least {least:.3f}."
                    ]
                }
            )
        return attrs


class InpaintSerializer(Img2ImgSerializer):
    kind = "inpaint"
    mask_image = serializers.CharField(max_length=MAX_IMAGE_FIELD)


@extend_schema_field(OpenApiTypes.STR)
class ControlImagesField(serializers.Field):
    """control_image: one image for every ControlNet, or a list (or comma list of links)."""

    def to_internal_value(self, data: Any) -> list[str]:
        if isinstance(data, list):
            items = data
        elif isinstance(data, str):
            parts = [part.strip() for part in data.split(",")]
            urls = len(parts) > 1 and all(
                p.lower().startswith(("http://", "https://")) for p in parts
            )
            # A data: URL holds a comma too: only a list of links is split.
            items = parts if urls else [data]
        else:
            raise ValidationError("Must be an image (URL or base64), or a list of them.")
        if not items or len(items) > MAX_CONTROLNETS:
            raise ValidationError(f"Give 1 to {MAX_CONTROLNETS} control images.")
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise ValidationError("Each control image must be a URL or base64 text.")
            if len(item) > MAX_IMAGE_FIELD:
                raise ValidationError(f"An image may be at most {MAX_IMAGE_FIELD} characters.")
        return items


class ControlNetSerializer(GenerationSerializer):
    """ControlNet: several models as a comma list, each with its type and scale; with
    `strength` it starts from init_image (img2img), with mask_image it inpaints."""

    kind = "controlnet"
    controlnet_model = NamesField()
    controlnet_type = NamesField(required=False)
    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD, required=False)
    control_image = ControlImagesField(required=False)
    mask_image = serializers.CharField(max_length=MAX_IMAGE_FIELD, required=False)
    strength = base.FiniteFloatField(min_value=0, max_value=1, required=False)
    auto_hint = serializers.BooleanField(default=True)
    guess_mode = serializers.BooleanField(default=False)
    controlnet_conditioning_scale = NumbersField(min_value=0, max_value=2, required=False)
    control_guidance_start = base.FiniteFloatField(min_value=0, max_value=1, default=0.0)
    control_guidance_end = base.FiniteFloatField(min_value=0, max_value=1, default=1.0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        models = attrs["controlnet_model"]
        if not models:
            raise ValidationError({"controlnet_model": ["The controlnet_model field is required."]})
        if len(models) > MAX_CONTROLNETS:
            raise ValidationError(
                {"controlnet_model": [f"Give at most {MAX_CONTROLNETS} ControlNet models."]}
            )
        if len(set(models)) != len(models):
            # All share one image and window here: a repeated model is one ControlNet twice.
            raise ValidationError({"controlnet_model": ["Name each ControlNet model once."]})
        types = self._per_model(
            "controlnet_type", [t.lower() for t in attrs.get("controlnet_type") or []], models, ""
        )
        scales = self._per_model(
            "controlnet_conditioning_scale",
            attrs.pop("controlnet_conditioning_scale", None) or [],
            models,
            1.0,
        )
        images = attrs.pop("control_image", None) or []
        if len(images) not in (0, 1, len(models)):
            raise ValidationError(
                {"control_image": ["Give one control image, or one per name in controlnet_model."]}
            )
        start, end = attrs["control_guidance_start"], attrs["control_guidance_end"]
        if start >= end:
            raise ValidationError(
                {"control_guidance_end": ["Must be greater than control_guidance_start."]}
            )
        if not attrs.get("init_image") and not images:
            raise ValidationError({"init_image": ["The init_image field is required."]})
        attrs.update(
            controlnet_model=models[0],
            controlnet_type=types[0],
            controlnet_conditioning_scale=scales[0],
        )
        if images:
            attrs["control_image"] = images[0]
        attrs["controlnet_units"] = [
            {
                "model": model,
                "type": kind,
                "scale": scale,
                "start": start,
                "end": end,
                "image": images[index + 1] if len(images) > 1 else None,
                "field": "control_image",
                "image_field": f"control_image[{index + 1}]",
            }
            for index, (model, kind, scale) in enumerate(
                zip(models[1:], types[1:], scales[1:], strict=True)
            )
        ]
        attrs["job_kind"] = self._job_kind(attrs)
        return attrs

    @staticmethod
    def _per_model(name: str, values: list[Any], models: list[str], default: Any) -> list[Any]:
        """One value per model: none (the default), one for all, or one each."""
        if not values:
            return [default] * len(models)
        if len(values) == 1:
            return values * len(models)
        if len(values) != len(models):
            raise ValidationError({name: ["Give one value, or one per name in controlnet_model."]})
        return values

    @staticmethod
    def _job_kind(attrs: dict[str, Any]) -> str:
        """controlnet, or with a mask controlnet-inpaint, or with a strength controlnet-img2img."""
        strength = attrs.get("strength")
        if strength != strength:  # NaN passes min/max comparisons
            raise ValidationError({"strength": ["The strength must be a number between 0 and 1."]})
        if not attrs.get("mask_image") and strength is None:
            return "controlnet"
        field = "mask_image" if attrs.get("mask_image") else "strength"
        if not attrs.get("init_image"):
            raise ValidationError(
                {"init_image": [f"The init_image field is required with {field}."]}
            )
        # ControlNet inpainting repaints the masked area from noise unless told otherwise.
        attrs["strength"] = strength if strength is not None else 1.0
        if int(attrs["steps"] * attrs["strength"]) < 1:
            raise ValidationError(
                {
                    "strength": [
                        f"The strength is too small to run a step at {attrs['steps']} steps; "
                        f"use at least {1 / attrs['steps']:.3f}."
                    ]
                }
            )
        return "controlnet-inpaint" if field == "mask_image" else "controlnet-img2img"


class SuperResolutionSerializer(ModelsLabSerializer):
    refused = {
        **{
            name: f"The {name} field belongs to the generating endpoints, not super_resolution: "
            "the upscaler runs without a prompt, and its output is scale times the input's size."
            for name in UPSCALE_REFUSES
        },
        "url": "The url field is the image of the legacy /api/v3/super_resolution; send the "
        "image as init_image here.",
    }

    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD)
    scale = serializers.ChoiceField(choices=[2, 4], default=4)
    model_id = serializers.CharField(max_length=100, required=False)
    track_id = serializers.CharField(max_length=255, required=False)
    webhook = serializers.URLField(max_length=2000, required=False)
    webhook_events = base.WebhookEventsField(required=False)
    base64 = serializers.BooleanField(default=False)
    temp = serializers.BooleanField(default=False)
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, required=False)

    validate_webhook = GenerationSerializer.validate_webhook

    def validate_scale(self, value: Any) -> int:
        return int(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["seed"] = base.random_seed(attrs.get("seed"))
        return attrs


class LegacySuperResolutionSerializer(SuperResolutionSerializer):
    """/api/v3/super_resolution: the image arrives as `url` (a URL, or base64 as elsewhere)."""

    refused = {
        **{name: why for name, why in SuperResolutionSerializer.refused.items() if name != "url"},
        "init_image": "This route takes the image as url; send it as url, not init_image.",
    }

    init_image = None  # type: ignore[assignment]  # this endpoint names the image `url`
    url = serializers.CharField(max_length=MAX_IMAGE_FIELD)


class ModelReloadSerializer(ModelsLabSerializer):
    model_id = serializers.CharField(max_length=100)


def parse(serializer_class: type[ModelsLabSerializer], data: Any, plan: Plan) -> dict[str, Any]:
    """Validate a body; raises ValidationError (a 400) naming every bad field."""
    body = clean_body(data)
    unsupported = {
        name: [f"The {name} option is not supported by this server."]
        for name in NOT_SUPPORTED
        if name in body and not is_default_value(name, body[name])
    }
    serializer = serializer_class(data=body, context={"plan": plan})
    # Only the names the body holds: a submit should not write every message it could send.
    refused = {
        name: f"The {name} field belongs to the {where} endpoints, not this one."
        for name, where in ENDPOINT_FIELDS.items()
        if name in body and name not in serializer.fields
    }
    refused.update({name: why for name, why in serializer_class.refused.items() if name in body})
    unsupported.update(
        {name: [why] for name, why in refused.items() if not is_default_value(name, body[name])}
    )
    if unsupported:
        raise ValidationError(unsupported)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def request_id_from(data: Any) -> int:
    """The `request_id` of a fetch body, as a job id."""
    value = data.get("request_id") if isinstance(data, dict) else None
    if value is None or value == "":
        raise ValidationError({"request_id": ["The request_id field is required."]})
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValidationError({"request_id": ["The request_id must be a request's numeric id."]})
    return int(text)
