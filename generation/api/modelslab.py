"""The ModelsLab wire format (docs/architecture.md): key in the body, lenient types, its answers."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import Plan
from generation import addons, inputs, media, service
from generation.api import adapter, schema
from generation.api.adapter import MAX_SEED
from generation.api.parsers import AnyContentTypeJSONParser
from generation.engine import control
from generation.engine.pipelines import kind_error, pipeline_family
from generation.engine.prompts import PromptError, enhance, extract_lora_tags, with_tokens
from generation.engine.request import DEFAULT_SCHEDULER, SAFETY_MODES, GenerationRequest
from generation.engine.schedulers import (
    A1111_SAMPLERS,
    WIRE_ALGORITHM_TYPES,
    usable_scheduler_error,
)
from generation.models import AIModel, Job

MAX_PROMPT_LENGTH = 2000
DEFAULT_SIDE = 512
MIN_SIDE = 64
# An image field holds a URL or base64 text; 30 MB of base64 is more than the fetch cap allows.
MAX_IMAGE_FIELD = 30_000_000

# Known ModelsLab fields whose features this server does not offer. A non-default value is a
# 400 naming the field: accepting it and ignoring it would hand back a different image than asked.
NOT_SUPPORTED = (
    "ip_adapter_id",
    "ip_adapter_scale",
    "ip_adapter_image",
    "enhance_style",
    "panorama",
    "self_attention",
    "multi_lingual",
    "face_enhance",
    "guess_mode",
    "clip_skip_2",
)
# Fields of other endpoints: sent here with a value, they would be silently dropped, so a 400
# says where they belong.
ENDPOINT_FIELDS = {
    "init_image": "img2img, inpaint, controlnet and super_resolution",
    "mask_image": "inpaint",
    "strength": "img2img and inpaint",
    "control_image": "controlnet",
    "controlnet_model": "controlnet",
    "controlnet_type": "controlnet",
    "scale": "super_resolution",
}
OFF_WORDS = ("", "0", "no", "false", "none", "null", "off")
ON_WORDS = ("1", "yes", "true", "on")
# Values that mean "off" for one field only: an upscale factor of 1 changes nothing.
ALSO_OFF = {"upscale": ("1", 1)}
MAX_UPSCALE = 4
# Super resolution: the largest output side, whatever the plan (the input is small anyway).
MAX_SUPER_RESOLUTION_SIDE = 2048
MIN_SUPER_RESOLUTION_INPUT = 8
UPSCALER_STEPS = 21


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


def clean_body(data: Any) -> dict[str, Any]:
    """The body as a dict with `null` (and empty strings, except the prompt) meaning default."""
    if not isinstance(data, dict):
        raise ValidationError({"body": ["The request body must be a JSON object."]})
    return {k: v for k, v in data.items() if v is not None and (v != "" or k == "prompt")}


def comma_list(value: Any) -> list[str]:
    """A ModelsLab comma list ("a, b" or a JSON list) as stripped, non-empty names."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


class ModelsLabSerializer(serializers.Serializer):
    """Gives every field ModelsLab's "The x field is required." wording."""

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
            adapter.storable(name)
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
        read = [adapter.bounded_float(item, -math.inf, math.inf) for item in items]
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
        factor = adapter.bounded_int(text, 1, MAX_UPSCALE)
        if factor is None:
            raise ValidationError(f"Must be yes, no or a factor from 1 to {MAX_UPSCALE}.")
        return factor


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
    guidance_scale = serializers.FloatField(min_value=1, max_value=20, default=7.5)
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, required=False)
    scheduler = serializers.CharField(max_length=100, default=DEFAULT_SCHEDULER)
    use_karras_sigmas = serializers.BooleanField(default=False)
    algorithm_type = serializers.ChoiceField(choices=WIRE_ALGORITHM_TYPES, default="none")
    clip_skip = serializers.IntegerField(min_value=1, max_value=8, required=False)
    safety_checker = serializers.BooleanField(default=True)
    safety_checker_type = serializers.ChoiceField(
        choices=SAFETY_MODES, default="sensitive_content_text"
    )
    lora_model = NamesField(required=False)
    lora_strength = NumbersField(min_value=-2, max_value=2, required=False)
    embeddings_model = NamesField(required=False)
    vae = serializers.CharField(max_length=100, required=False)
    tomesd = serializers.BooleanField(default=False)
    enhance_prompt = serializers.BooleanField(default=False)
    highres_fix = serializers.BooleanField(default=False)
    upscale = SwitchOrFactorField(required=False)
    track_id = serializers.CharField(max_length=255, required=False)
    webhook = serializers.URLField(max_length=2000, required=False)
    base64 = serializers.BooleanField(default=False)
    # Image links that expire sooner (PICTOR_MEDIA_TEMP_URL_EXPIRE, generation/media.py).
    temp = serializers.BooleanField(default=False)
    # Answer at once with `processing` and future_links instead of waiting for the image.
    instant_response = serializers.BooleanField(default=False)

    kind = "text2img"

    def validate_webhook(self, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValidationError("The webhook must be an http or https URL.")
        return value

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
        steps = attrs.pop("num_inference_steps", None) or attrs.pop("steps", None) or 21
        attrs.pop("steps", None)
        if steps not in plan.steps_list:
            allowed = ", ".join(str(s) for s in plan.steps_list)
            raise ValidationError(
                {
                    "num_inference_steps": [
                        f"The num_inference_steps must be one of {allowed} on the {plan.name} plan."
                    ]
                }
            )
        attrs["steps"] = steps

        name = attrs["scheduler"]
        if name in A1111_SAMPLERS:
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

        attrs["seed"] = adapter.random_seed(attrs.get("seed"))
        attrs["loras"] = self._loras(attrs)
        self._hires(attrs, plan)
        return attrs

    def _loras(self, attrs: dict[str, Any]) -> list[tuple[str, float]]:
        """lora_model + lora_strength and the prompt's <lora:name:weight> tags, as one list."""
        try:
            attrs["prompt"], tagged = extract_lora_tags(attrs["prompt"])
        except PromptError as exc:
            raise ValidationError({"prompt": [str(exc)]}) from None
        if not attrs["prompt"]:
            raise ValidationError({"prompt": ["The prompt field is required."]})
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
        adapter.check_loras(loras, "lora_model")
        return loras

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
        adapter.check_upscaled(plan, field, width, height, factor)


class Text2ImgSerializer(GenerationSerializer):
    kind = "text2img"


class Img2ImgSerializer(GenerationSerializer):
    kind = "img2img"
    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD)
    strength = serializers.FloatField(min_value=0, max_value=1, default=0.7)

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


class ControlNetSerializer(GenerationSerializer):
    kind = "controlnet"
    controlnet_model = NamesField()
    controlnet_type = NamesField(required=False)
    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD, required=False)
    control_image = serializers.CharField(max_length=MAX_IMAGE_FIELD, required=False)
    auto_hint = serializers.BooleanField(default=True)
    controlnet_conditioning_scale = NumbersField(min_value=0, max_value=2, required=False)
    control_guidance_start = serializers.FloatField(min_value=0, max_value=1, default=0.0)
    control_guidance_end = serializers.FloatField(min_value=0, max_value=1, default=1.0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if len(attrs["controlnet_model"]) != 1:
            raise ValidationError({"controlnet_model": ["Give exactly one ControlNet model."]})
        attrs["controlnet_model"] = attrs["controlnet_model"][0]
        types = attrs.get("controlnet_type") or []
        if len(types) > 1:
            raise ValidationError({"controlnet_type": ["Give exactly one ControlNet type."]})
        attrs["controlnet_type"] = types[0].lower() if types else ""
        scales = attrs.pop("controlnet_conditioning_scale", None) or [1.0]
        if len(scales) != 1:
            raise ValidationError({"controlnet_conditioning_scale": ["Give one number."]})
        attrs["controlnet_conditioning_scale"] = scales[0]
        if attrs["control_guidance_start"] >= attrs["control_guidance_end"]:
            raise ValidationError(
                {"control_guidance_end": ["Must be greater than control_guidance_start."]}
            )
        if not attrs.get("init_image") and not attrs.get("control_image"):
            raise ValidationError({"init_image": ["The init_image field is required."]})
        return attrs


class SuperResolutionSerializer(ModelsLabSerializer):
    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD)
    scale = serializers.ChoiceField(choices=[2, 4], default=4)
    model_id = serializers.CharField(max_length=100, required=False)
    track_id = serializers.CharField(max_length=255, required=False)
    webhook = serializers.URLField(max_length=2000, required=False)
    base64 = serializers.BooleanField(default=False)
    temp = serializers.BooleanField(default=False)
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, required=False)

    validate_webhook = GenerationSerializer.validate_webhook

    def validate_scale(self, value: Any) -> int:
        return int(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["seed"] = adapter.random_seed(attrs.get("seed"))
        return attrs


def parse(serializer_class: type[ModelsLabSerializer], data: Any, plan: Plan) -> dict[str, Any]:
    """Validate a body; raises ValidationError (a 400) naming every bad field."""
    body = clean_body(data)
    unsupported = {
        name: [f"The {name} option is not supported by this server."]
        for name in NOT_SUPPORTED
        if name in body and not is_default_value(name, body[name])
    }
    serializer = serializer_class(data=body, context={"plan": plan})
    unsupported.update(
        {
            name: [f"The {name} field belongs to the {where} endpoints, not this one."]
            for name, where in ENDPOINT_FIELDS.items()
            if name in body
            and name not in serializer.fields
            and not is_default_value(name, body[name])
        }
    )
    if unsupported:
        raise ValidationError(unsupported)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def base_url_for(request: Request) -> str:
    """Scheme and host for absolute URLs: PICTOR_BASE_URL, else the host the client called."""
    from sdplatform import hosts

    return hosts.base_url(request)


def absolute(base_url: str, url: str) -> str:
    """An absolute URL for a path served by this host (storage URLs may already be absolute)."""
    if url.startswith(("http://", "https://")):
        return url
    return base_url + url


def output_links(base_url: str, job: Job) -> list[str]:
    """Fresh signed links to where the job's images are (or will be), absolute."""
    seconds = media.job_lifetime(job)
    return [
        absolute(base_url, media.signed_url(job.output_path(i), seconds))
        for i in range(job.samples)
    ]


def job_meta(job: Job) -> dict[str, Any]:
    p = job.params
    meta = {
        "prompt": p["prompt"],
        "negative_prompt": p["negative_prompt"],
        "model_id": job.model.model_id,
        "seed": p["seed"],
        "seeds": [p["seed"] + i for i in range(p["samples"])],
        "W": p["width"],
        "H": p["height"],
        "steps": p["steps"],
        "guidance_scale": p["guidance_scale"],
        "scheduler": p["scheduler"],
        "use_karras_sigmas": "yes" if p["use_karras_sigmas"] else "no",
        "algorithm_type": p["algorithm_type"],
        "clip_skip": p["clip_skip"] or 1,
        "safety_checker": "yes" if p["safety_checker"] else "no",
        "safety_checker_type": p["safety_checker_type"],
        "n_samples": p["samples"],
        "credits": job.cost,
    }
    kind = p.get("kind", "text2img")
    if kind in ("img2img", "inpaint"):
        meta["strength"] = p["strength"]
    if p.get("loras"):
        meta["lora_model"] = ",".join(name for name, _weight in p["loras"])
        meta["lora_strength"] = ",".join(f"{weight:g}" for _name, weight in p["loras"])
    if p.get("embeddings"):
        meta["embeddings_model"] = ",".join(p["embeddings"])
    if p.get("vae"):
        meta["vae"] = p["vae"]
    if kind == "controlnet":
        meta.update(
            controlnet_model=p["controlnet_model"],
            controlnet_type=p["controlnet_type"],
            controlnet_conditioning_scale=p["controlnet_conditioning_scale"],
            control_guidance_start=p["control_guidance_start"],
            control_guidance_end=p["control_guidance_end"],
        )
    if kind == "upscale":
        meta["scale"] = p["scale"]
    meta.update(
        tomesd="yes" if p.get("tomesd") else "no",
        enhance_prompt="yes" if p.get("enhance_prompt") else "no",
        upscale=p.get("hires_scale", 1),
        W=p["width"] * p.get("hires_scale", 1),
        H=p["height"] * p.get("hires_scale", 1),
    )
    return meta


def job_answer(job: Job, base_url: str, fetch_url_name: str = "api-v3-fetch") -> dict[str, Any]:
    """The ModelsLab body for a job in any state (also the webhook payload)."""
    base: dict[str, Any] = {"id": job.pk}
    if job.track_id:
        base["track_id"] = job.track_id
    if job.status == Job.Status.SUCCESS and job.expired_at:
        # The plan's retention deleted the images (generation/retention.py): still a success,
        # but nothing to link to.
        return {
            "status": "success",
            "generationTime": job.generation_time,
            **base,
            "message": "Outputs expired",
            "tip": "Images are kept for the plan's retention period; generate again.",
            "output": [],
            "proxy_links": [],
            "nsfw_content_detected": [],
            "meta": job_meta(job),
        }
    if job.status == Job.Status.SUCCESS:
        outputs = list(job.outputs.all())
        if job.output_base64:
            output = [
                base64.b64encode(default_storage.open(o.path).read()).decode() for o in outputs
            ]
        else:
            # Signed now, so every fetch (and the webhook) hands out links that work for the
            # full lifetime from this answer on.
            seconds = media.job_lifetime(job)
            output = [absolute(base_url, media.signed_url(o.path, seconds)) for o in outputs]
        return {
            "status": "success",
            "generationTime": job.generation_time,
            **base,
            "output": output,
            "proxy_links": output if not job.output_base64 else [],
            "nsfw_content_detected": [o.nsfw for o in outputs],
            "meta": job_meta(job),
        }
    if job.status in (Job.Status.FAILED, Job.Status.CANCELED):
        message = "Failed, Try Again" if job.status == Job.Status.FAILED else "Job canceled"
        return {"status": "failed", **base, "message": message, "output": []}
    progress = job.progress_step / job.progress_total if job.progress_total else 0.0
    return {
        "status": "processing",
        **base,
        "eta": service.eta(job),
        "progress": round(progress, 3),
        "message": "Try to fetch request after seconds estimated",
        "tip": "Poll fetch_result until status is success.",
        "fetch_result": absolute(base_url, reverse(fetch_url_name, args=[job.pk])),
        "future_links": output_links(base_url, job),
        "output": [],
        "meta": job_meta(job),
    }


def resolve_model(request: Request, model_id: str | None, kind: str) -> AIModel:
    """The requested checkpoint (or the default one), among those the caller may see."""
    visible = AIModel.objects.visible_to(request.user.organization)
    model = (
        visible.filter(model_id=model_id).first()
        if model_id
        else visible.filter(is_default=True).first()
    )
    if model is None:
        raise NotFound("Model id not found")
    if not model.is_checkpoint:
        raise ValidationError(
            {
                "model_id": [
                    f"{model.model_id} is a {model.get_family_display()} model, not a checkpoint."
                ]
            }
        )
    problem = kind_error(pipeline_family(model.family, model.base), kind)
    if problem:
        raise ValidationError({"model_id": [problem]})
    return model


def fit_size(image: Any, max_side: int) -> tuple[int, int]:
    """The init image's size scaled to fit 64..max_side, aspect kept, in multiples of 8."""
    scale = min(max_side / max(image.size), max(1.0, MIN_SIDE / min(image.size)))
    width, height = (
        max(MIN_SIDE, min(max_side, int(side * scale) // 8 * 8)) for side in image.size
    )
    return width, height


class Inputs:
    """The request's input images: fetched, decoded and stored for the worker, or cleaned up."""

    def __init__(self, organization_id: int) -> None:
        self.organization_id = organization_id
        self.stored: list[str] = []

    def load(self, field: str, value: str) -> Any:
        # Base64 text has no "://"; anything with a scheme goes to the URL checks (which refuse
        # all but http and https). So the base64 switch need not be right for inputs to work.
        is_url = "://" in value.lstrip()[:12]
        try:
            return inputs.load_image(value, is_base64=not is_url, field=field)
        except inputs.InputImageError as exc:
            raise ValidationError({field: [str(exc)]}) from None

    def store(self, image: Any, name: str) -> str:
        stored = inputs.store_image(image, self.organization_id, name)
        self.stored.append(stored)
        return stored

    def discard(self) -> None:
        for name in self.stored:
            default_storage.delete(name)


def resolve_addons(request: Request, model: AIModel, fields: dict[str, Any]) -> None:
    """Check every add-on the fields name (raising a 400 naming it) and put ids in `fields`."""
    org = request.user.organization
    try:
        loras = fields.pop("loras")
        addons.resolve(org, model, "lora_model", [n for n, _w in loras], AIModel.Family.LORA)
        fields["loras"] = tuple(loras)
        embeddings = fields.pop("embeddings_model", [])
        addons.resolve(org, model, "embeddings_model", embeddings, AIModel.Family.EMBEDDING)
        if embeddings and model.base == AIModel.Base.SDXL:
            raise addons.AddonError(
                "embeddings_model", "Embeddings are supported on SD 1.x and 2.x models."
            )
        fields["embeddings"] = tuple(embeddings)
        if fields.get("vae"):
            addons.resolve(org, model, "vae", [fields["vae"]], AIModel.Family.VAE)
        if fields.get("controlnet_model"):
            addons.resolve(
                org,
                model,
                "controlnet_model",
                [fields["controlnet_model"]],
                AIModel.Family.CONTROLNET,
            )
    except addons.AddonError as exc:
        raise ValidationError({exc.field: [exc.message]}) from None


def text_encoder_layers(model: AIModel) -> int | None:
    """How deep the checkpoint's text encoder is, from its folder's config (None if unknown)."""
    config = Path(model.local_path) / "text_encoder" / "config.json"
    try:
        return int(json.loads(config.read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_clip_skip(model: AIModel, clip_skip: int | None) -> None:
    """A clip_skip the checkpoint's text encoder has layers for (else the worker would fail)."""
    layers = text_encoder_layers(model) if clip_skip and clip_skip > 1 else None
    if layers is not None and clip_skip is not None and clip_skip > layers:
        raise ValidationError(
            {
                "clip_skip": [
                    f"The text encoder of {model.model_id} has {layers} layers; "
                    f"clip_skip may be at most {layers}."
                ]
            }
        )


def build_request(
    request: Request, model: AIModel, fields: dict[str, Any], kind: str, images: Inputs
) -> GenerationRequest:
    """The GenerationRequest for validated ModelsLab fields: add-ons checked, inputs stored."""
    plan = request.user.organization.plan
    resolve_addons(request, model, fields)
    check_clip_skip(model, fields.get("clip_skip"))
    if fields["enhance_prompt"]:
        fields["prompt"] = enhance(fields["prompt"])
    fields["prompt"] = with_tokens(
        fields["prompt"], fields["negative_prompt"], list(fields["embeddings"])
    )
    init = images.load("init_image", fields["init_image"]) if fields.get("init_image") else None
    mask = images.load("mask_image", fields["mask_image"]) if fields.get("mask_image") else None
    ready = (
        images.load("control_image", fields["control_image"])
        if fields.get("control_image")
        else None
    )
    if kind == "controlnet":
        auto_hint = fields.pop("auto_hint")
        if not fields["controlnet_type"] and "canny" in fields["controlnet_model"].lower():
            fields["controlnet_type"] = "canny"
        computed = fields["controlnet_type"] in control.COMPUTED_TYPES
        if ready is None and not (auto_hint and computed):
            # Like ModelsLab: without auto_hint the init image is the control image itself.
            ready, init = init, None
    source = init if init is not None else ready
    if source is not None and ("width" not in fields or "height" not in fields):
        width, height = fit_size(source, plan.max_side)
        fields.setdefault("width", width)
        fields.setdefault("height", height)
    fields.setdefault("width", DEFAULT_SIDE)
    fields.setdefault("height", DEFAULT_SIDE)
    for name, image in (("init_image", init), ("mask_image", mask), ("control_image", ready)):
        fields[name] = images.store(image, name) if image is not None else ""
    for name in ("highres_fix", "upscale"):
        fields.pop(name, None)
    return GenerationRequest(model_id=model.model_id, kind=kind, **fields)


class ModelsLabView(APIView):
    parser_classes = [AnyContentTypeJSONParser]
    fetch_url_name = "api-v3-fetch"

    def answer(self, request: Request, job: Job, instant: bool = False) -> Response:
        """Wait up to PICTOR_SYNC_WAIT seconds (none if `instant`), then answer the job's state."""
        job = service.wait_for(job, 0 if instant else settings.PICTOR_SYNC_WAIT)
        return Response(job_answer(job, base_url_for(request), self.fetch_url_name))


class GenerateView(ModelsLabView):
    """POST a generation (text2img, img2img, inpaint or ControlNet), wait, answer its state."""

    serializer_class: type[GenerationSerializer] = Text2ImgSerializer
    model_required = False
    # The v6 realtime family always uses the default model.
    default_model_only = False

    @extend_schema(
        tags=["ModelsLab"],
        responses={200: schema.ModelsLabJob, **schema.modelslab_errors(402, 404, 503)},
    )
    def post(self, request: Request) -> Response:
        org = request.user.organization
        kind = self.serializer_class.kind
        fields = parse(self.serializer_class, request.data, org.plan)
        if self.default_model_only and fields.get("model_id"):
            raise ValidationError(
                {
                    "model_id": [
                        "The realtime endpoints use the default model; choose a model with "
                        "/api/v6/images/ instead."
                    ]
                }
            )
        instant = fields.pop("instant_response")
        job = adapter.submit(
            request,
            fields,
            kind,
            model_id=fields.pop("model_id", None),
            model_required=self.model_required,
            track_id=fields.pop("track_id", ""),
            webhook=fields.pop("webhook", ""),
            output_base64=fields.pop("base64"),
        )
        return self.answer(request, job, instant)


class Text2ImgView(GenerateView):
    """POST /api/v3/text2img."""


class Img2ImgView(GenerateView):
    """POST /api/v3/img2img: a new image from init_image, `strength` away from it."""

    serializer_class = Img2ImgSerializer


class InpaintView(GenerateView):
    """POST /api/v3/inpaint: repaint the white area of mask_image in init_image."""

    serializer_class = InpaintSerializer


class ControlNetView(GenerateView):
    """POST /api/v5/controlnet: generation guided by a control image (canny computed here)."""

    serializer_class = ControlNetSerializer


class SuperResolutionView(ModelsLabView):
    """POST /api/v6/image_editing/super_resolution: init_image upscaled exactly `scale` times."""

    @extend_schema(
        tags=["ModelsLab"],
        request=SuperResolutionSerializer,
        responses={200: schema.ModelsLabJob, **schema.modelslab_errors(402, 404, 503)},
    )
    def post(self, request: Request) -> Response:
        org = request.user.organization
        fields = parse(SuperResolutionSerializer, request.data, org.plan)
        model_id = fields.pop("model_id", None)
        visible = AIModel.objects.visible_to(org).filter(family=AIModel.Family.UPSCALER)
        model = (
            visible.filter(model_id=model_id).first() if model_id else addons.default_upscaler(org)
        )
        if model is None:
            raise NotFound("Model id not found")
        images = Inputs(org.pk)
        source = images.load("init_image", fields["init_image"])
        scale = fields["scale"]
        width, height = source.width * scale, source.height * scale
        if min(source.width, source.height) < MIN_SUPER_RESOLUTION_INPUT:
            raise ValidationError(
                {
                    "init_image": [
                        f"The init_image is {source.width}x{source.height}; its sides must be "
                        f"at least {MIN_SUPER_RESOLUTION_INPUT} px."
                    ]
                }
            )
        if max(width, height) > MAX_SUPER_RESOLUTION_SIDE:
            limit = MAX_SUPER_RESOLUTION_SIDE // scale
            raise ValidationError(
                {
                    "init_image": [
                        f"The init_image is {source.width}x{source.height}; to upscale it "
                        f"{scale}x its sides may be at most {limit} px."
                    ]
                }
            )
        try:
            req = GenerationRequest(
                prompt="",
                model_id=model.model_id,
                kind="upscale",
                init_image=images.store(source, "init_image"),
                width=width,
                height=height,
                scale=scale,
                steps=UPSCALER_STEPS,
                guidance_scale=1.0,
                seed=fields["seed"],
            )
            job = adapter.queue(
                request,
                req,
                model,
                track_id=fields.get("track_id", ""),
                webhook=fields.get("webhook", ""),
                output_base64=fields["base64"],
                temp=fields["temp"],
            )
        except BaseException:
            images.discard()
            raise
        return self.answer(request, job)


class FetchView(ModelsLabView):
    """POST (or GET) /api/v3/fetch/<id>: a job's state; another tenant's id is a 404."""

    @extend_schema(
        tags=["ModelsLab"],
        request=None,
        responses={200: schema.ModelsLabJob, **schema.modelslab_errors(404)},
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = (
            Job.objects.for_org(request.user.organization)
            .select_related("model")
            .filter(pk=job_id)
            .first()
        )
        if job is None:
            raise NotFound("Request not found")
        job = service.refresh_lease_state(job)
        return Response(job_answer(job, base_url_for(request), self.fetch_url_name))

    get = post


class FetchByRequestIdView(FetchView):
    """POST /api/v6/images/fetch with `request_id` in the body."""

    http_method_names = ["post", "options"]

    @extend_schema(
        tags=["ModelsLab"],
        operation_id="v6_images_fetch_by_request_id",
        request=schema.ModelsLabFetch,
        responses={200: schema.ModelsLabJob, **schema.modelslab_errors(404)},
    )
    def post(self, request: Request) -> Response:  # type: ignore[override]
        return super().post(request, request_id_from(request.data))


def request_id_from(data: Any) -> int:
    """The `request_id` of a fetch body, as a job id."""
    value = data.get("request_id") if isinstance(data, dict) else None
    if value is None or value == "":
        raise ValidationError({"request_id": ["The request_id field is required."]})
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or len(text) > 18:
        raise ValidationError({"request_id": ["The request_id must be a request's numeric id."]})
    return int(text)


class SystemLoadView(ModelsLabView):
    """POST /api/v3/system_load: queue length and expected wait."""

    @extend_schema(tags=["ModelsLab"], request=None, responses={200: schema.SystemLoad})
    def post(self, request: Request) -> Response:
        return Response(service.system_load())

    get = post


class ModelListView(ModelsLabView):
    """POST /api/v4/dreambooth/model_list: the models this tenant may use."""

    @extend_schema(
        tags=["ModelsLab"], request=None, responses={200: schema.ModelsLabModel(many=True)}
    )
    def post(self, request: Request) -> Response:
        models = AIModel.objects.visible_to(request.user.organization).order_by("model_id")
        return Response(
            [
                {
                    "model_id": m.model_id,
                    "model_name": m.name,
                    "model_category": m.family,
                    "status": "model_ready",
                    "is_default": m.is_default,
                    "is_private": m.organization_id is not None,
                    "description": m.description,
                    "created_at": m.created_at.isoformat(),
                }
                for m in models
            ]
        )

    get = post
