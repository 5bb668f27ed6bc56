"""The ModelsLab wire format (DESIGN section 4): key in the body, lenient types, its answers."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.urls import reverse
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import Plan
from generation import service
from generation.api.parsers import AnyContentTypeJSONParser
from generation.engine.request import DEFAULT_SCHEDULER, SAFETY_MODES, GenerationRequest
from generation.engine.schedulers import (
    A1111_SAMPLERS,
    WIRE_ALGORITHM_TYPES,
    usable_scheduler_error,
)
from generation.models import AIModel, Job

MAX_SEED = 2**32 - 1
MAX_PROMPT_LENGTH = 2000

# Known ModelsLab fields whose features this server does not offer yet. A non-default value is a
# 400 naming the field: accepting it and ignoring it would hand back a different image than asked.
NOT_YET_SUPPORTED = (
    "init_image",
    "mask_image",
    "strength_init_image",
    "lora_model",
    "embeddings_model",
    "vae",
    "controlnet_model",
    "controlnet_type",
    "controlnet_image",
    "ip_adapter_id",
    "enhance_prompt",
    "enhance_style",
    "tomesd",
    "highres_fix",
    "upscale",
    "panorama",
    "self_attention",
    "multi_lingual",
    "temp",
)
OFF_WORDS = ("", "0", "no", "false", "none", "null", "off")
# Values that mean "off" for one field only: an upscale factor of 1 changes nothing.
ALSO_OFF = {"upscale": ("1", 1)}


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


class ModelsLabSerializer(serializers.Serializer):
    """Gives every field ModelsLab's "The x field is required." wording."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            field.error_messages["required"] = f"The {name} field is required."
            field.error_messages["blank"] = f"The {name} field is required."


class Text2ImgSerializer(ModelsLabSerializer):
    """The text2img fields with their bounds; the plan (in context) narrows some of them."""

    prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH, trim_whitespace=True)
    negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, required=False, default="", allow_blank=True
    )
    model_id = serializers.CharField(max_length=100, required=False)
    width = serializers.IntegerField(min_value=64, max_value=1024, default=512)
    height = serializers.IntegerField(min_value=64, max_value=1024, default=512)
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
    track_id = serializers.CharField(max_length=255, required=False)
    webhook = serializers.URLField(max_length=2000, required=False)
    base64 = serializers.BooleanField(default=False)

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

        seed = attrs.get("seed", -1)
        attrs["seed"] = secrets.randbelow(MAX_SEED - 3) if seed == -1 else seed
        return attrs


def parse_text2img(data: Any, plan: Plan) -> dict[str, Any]:
    """Validate a text2img body; raises ValidationError (a 400) naming every bad field."""
    body = clean_body(data)
    unsupported = {
        name: [f"The {name} option is not supported by this server yet."]
        for name in NOT_YET_SUPPORTED
        if name in body and not is_default_value(name, body[name])
    }
    if unsupported:
        raise ValidationError(unsupported)
    serializer = Text2ImgSerializer(data=body, context={"plan": plan})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def base_url_for(request: Request) -> str:
    """Scheme and host for absolute URLs: PICTOR_BASE_URL, else the host the client called."""
    return settings.PICTOR_BASE_URL or request.build_absolute_uri("/").rstrip("/")


def absolute(base_url: str, url: str) -> str:
    """An absolute URL for a path served by this host (storage URLs may already be absolute)."""
    if url.startswith(("http://", "https://")):
        return url
    return base_url + url


def output_links(base_url: str, job: Job) -> list[str]:
    """Where the job's images are (or will be) served, absolute."""
    return [absolute(base_url, default_storage.url(job.output_path(i))) for i in range(job.samples)]


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
    return meta


def job_answer(job: Job, base_url: str, fetch_url_name: str = "api-v3-fetch") -> dict[str, Any]:
    """The ModelsLab body for a job in any state (also the webhook payload)."""
    base: dict[str, Any] = {"id": job.pk}
    if job.track_id:
        base["track_id"] = job.track_id
    if job.status == Job.Status.SUCCESS:
        outputs = list(job.outputs.all())
        if job.output_base64:
            output = [
                base64.b64encode(default_storage.open(o.path).read()).decode() for o in outputs
            ]
        else:
            output = [absolute(base_url, default_storage.url(o.path)) for o in outputs]
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


def resolve_model(request: Request, model_id: str | None) -> AIModel:
    """The requested model (or the default one), among those the caller may see."""
    visible = AIModel.objects.visible_to(request.user.organization)
    model = (
        visible.filter(model_id=model_id).first()
        if model_id
        else visible.filter(is_default=True).first()
    )
    if model is None:
        raise NotFound("Model id not found")
    return model


class ModelsLabView(APIView):
    parser_classes = [AnyContentTypeJSONParser]
    fetch_url_name = "api-v3-fetch"


class Text2ImgView(ModelsLabView):
    """POST /api/v3/text2img: generate, waiting up to PICTOR_SYNC_WAIT seconds for the images."""

    model_required = False

    def post(self, request: Request) -> Response:
        org = request.user.organization
        fields = parse_text2img(request.data, org.plan)
        model_id = fields.pop("model_id", None)
        if self.model_required and not model_id:
            raise ValidationError({"model_id": ["The model_id field is required."]})
        model = resolve_model(request, model_id)
        track_id = fields.pop("track_id", "")
        webhook = fields.pop("webhook", "")
        output_base64 = fields.pop("base64")
        req = GenerationRequest(model_id=model.model_id, **fields)
        job = service.submit(
            req,
            org,
            model,
            api_key=request.auth,
            track_id=track_id,
            webhook=webhook,
            base_url=base_url_for(request),
            output_base64=output_base64,
        )
        job = service.wait_for(job, settings.PICTOR_SYNC_WAIT)
        return Response(job_answer(job, base_url_for(request), self.fetch_url_name))


class DreamboothView(Text2ImgView):
    """POST /api/v4/dreambooth: text2img with a required model_id."""

    model_required = True
    fetch_url_name = "api-v4-fetch"


class FetchView(ModelsLabView):
    """POST (or GET) /api/v3/fetch/<id>: a job's state; another tenant's id is a 404."""

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


class DreamboothFetchView(FetchView):
    fetch_url_name = "api-v4-fetch"


class SystemLoadView(ModelsLabView):
    """POST /api/v3/system_load: queue length and expected wait."""

    def post(self, request: Request) -> Response:
        return Response(service.system_load())

    get = post


class ModelListView(ModelsLabView):
    """POST /api/v4/dreambooth/model_list: the models this tenant may use."""

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
