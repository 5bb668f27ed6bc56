"""The Dan wire format (docs/architecture.md): Bearer key, `{"code", "data", "message"}` answers.

POST /api/sd/txt2img queues a text2img (or ControlNet) task, waits up to PICTOR_SYNC_WAIT like
the ModelsLab endpoints, then answers the task's state; GET /api/sd/txt2img/<taskId> (or Dan's
POST /api/sd/task/status) polls it. The public anonymous key works here and nowhere else.

Sizes: width and height take Dan's range 8..1024. Pictor's engine works in multiples of 8 and
needs at least 64 pixels a side, so a side is rounded to the nearest multiple of 8 (4 rounds
up) and a side under 64 is raised to 64; a rounded side above the plan's max side is a 400.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q
from django.urls import URLPattern, path
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.auth import AnonymousKeyAuthentication
from billing.models import Plan
from generation import answers, jobs, media, service, submission
from generation.api import base
from generation.api.errors import Problem
from generation.engine.prompts import PromptError, extract_lora_tags
from generation.models import Job

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
MAX_LORA_WEIGHT = 2.0
MAX_CONTROL_WEIGHT = 2.0
MAX_UPSCALE = 4
# Preprocessors: "canny" is computed here from the image; "none" means the image already is
# the control map. Other A1111 preprocessors (depth, openpose, ...) would need models Pictor
# does not run, so they are refused rather than silently skipped.
CONTROL_MODULES = ("canny", "none")

QUEUED, RUNNING, DONE, FAILED = 0, 1, 2, 3
TASK_STATUS = {
    Job.Status.QUEUED: QUEUED,
    Job.Status.PROCESSING: RUNNING,
    Job.Status.SUCCESS: DONE,
    Job.Status.FAILED: FAILED,
    Job.Status.CANCELED: FAILED,
}
TASK_NOT_FOUND = "Task not found"

# GenerationRequest's field names (as the shared layer names them in a 400) -> Dan's.
DAN_NAMES = {
    "samples": "batch_size",
    "hires_scale": "upscale",
    "hires_strength": "upscale",
    "guidance_scale": "cfg_scale",
    "scheduler": "sampler_name",
    "lora_model": "loras",
    "controlnet_model": "control_net",
    "controlnet_type": "control_net",
    "init_image": "control_net",
    "control_image": "control_net",
}
# Words inside the shared layer's messages that a Dan caller never sent.
DAN_WORDS = {"init_image": "control_net image", "control_image": "control_net image"}


def error_body(problem: Problem) -> dict[str, Any]:
    """Dan's error: {"code": <HTTP status>, "data": null, "message": "<one line>"}."""
    message = problem.text
    if problem.tips and problem.kind != "auth":
        message = f"{message}. {problem.tips}"
    return {"code": problem.status, "data": None, "message": message}


def dan_error(exc: ValidationError, model_field: str) -> ValidationError:
    """A 400 from the shared layer with Dan's field names, in its keys and in its messages."""
    if not isinstance(exc.detail, dict):
        return exc
    names = {**DAN_NAMES, "model_id": model_field}
    detail: dict[str, list[str]] = {}
    for name, messages in exc.detail.items():
        texts = messages if isinstance(messages, list) else [messages]
        for before, after in DAN_WORDS.items():
            texts = [str(text).replace(before, after) for text in texts]
        detail.setdefault(names.get(str(name), str(name)), []).extend(texts)
    return ValidationError(detail)


def bounds(name: str, low: float, high: float, kind: str = "an integer") -> dict[str, Any]:
    """Field arguments for a number in [low, high] whose messages name the field."""
    low_text, high_text = (str(int(n)) if float(n).is_integer() else str(n) for n in (low, high))
    text = f"The {name} must be {kind} between {low_text} and {high_text}."
    return {
        "min_value": low,
        "max_value": high,
        "error_messages": {"min_value": text, "max_value": text, "invalid": text},
    }


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


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
class LorasField(serializers.Field):
    """Dan's `loras`: a list of [name, weight] pairs."""

    def to_internal_value(self, data: Any) -> list[tuple[str, float]]:
        shape = "The loras must be a list of [name, weight] pairs."
        if not isinstance(data, list):
            raise ValidationError(shape)
        loras = []
        for item in data:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise ValidationError(shape)
            name, weight = item[0].strip(), item[1]
            if not name or len(name) > 100:
                raise ValidationError("A LoRA name must be 1 to 100 characters.")
            base.storable(name)
            if not is_number(weight) or abs(weight) > MAX_LORA_WEIGHT:
                raise ValidationError(
                    f"The weight of LoRA {name!r} must be a number between "
                    f"{-MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}."
                )
            loras.append((name, float(weight)))
        return loras


class DanControlNetUnitSerializer(serializers.Serializer):
    """One `control_net` unit; its errors are reported under `control_net`."""

    model = serializers.CharField(max_length=100)
    image = serializers.CharField(max_length=base.MAX_IMAGE_FIELD, required=False)
    input_image = serializers.CharField(max_length=base.MAX_IMAGE_FIELD, required=False)
    module = serializers.CharField(max_length=50, required=False)
    weight = serializers.FloatField(
        default=1.0, **bounds("weight", 0, MAX_CONTROL_WEIGHT, "a number")
    )
    guidance_start = serializers.FloatField(
        default=0.0, **bounds("guidance_start", 0, 1, "a number")
    )
    guidance_end = serializers.FloatField(default=1.0, **bounds("guidance_end", 0, 1, "a number"))


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


class DanTxt2ImgSerializer(serializers.Serializer):
    """POST /api/sd/txt2img: Dan's fields and ranges; the plan narrows sizes, steps and batch."""

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
    cfg_scale = serializers.FloatField(
        default=DEFAULT_CFG, **bounds("cfg_scale", 1, MAX_CFG, "a number")
    )
    sampler_name = serializers.CharField(
        max_length=100, required=False, help_text=f'AUTOMATIC1111 name, default "{DEFAULT_SAMPLER}"'
    )
    sampler = serializers.CharField(
        max_length=100, required=False, help_text="Alias of sampler_name"
    )
    batch_size = serializers.IntegerField(default=1, **bounds("batch_size", 1, MAX_BATCH))
    loras = LorasField(required=False)
    seed = serializers.IntegerField(
        default=-1, help_text="-1: random", **bounds("seed", -1, base.MAX_SEED)
    )
    control_net = ControlNetField(required=False)
    upscale = UpscaleField(required=False, help_text="Hires fix factor 1..4, or true (2)")

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
        for side in ("width", "height"):
            if side in attrs:
                base.check_side(plan, side, attrs[side])
        base.check_steps(plan, "steps", attrs["steps"])
        base.check_samples(plan, "batch_size", attrs["batch_size"])
        sampler_field = (
            "sampler" if "sampler" in attrs and "sampler_name" not in attrs else "sampler_name"
        )
        sampler = attrs.get(sampler_field, DEFAULT_SAMPLER)
        try:
            prompt, tagged = extract_lora_tags(attrs["prompt"])
        except PromptError as exc:
            raise ValidationError({"prompt": [str(exc)]}) from None
        if not prompt:
            raise ValidationError({"prompt": ["The prompt field is required."]})
        loras = attrs.get("loras", []) + tagged
        base.check_loras(loras, "loras")
        fields = base.defaults(
            prompt=prompt,
            negative_prompt=attrs["negative_prompt"],
            model_id=attrs.get("model") or attrs.get("model_name"),
            samples=attrs["batch_size"],
            steps=attrs["steps"],
            guidance_scale=attrs["cfg_scale"],
            seed=base.random_seed(attrs["seed"]),
            loras=loras,
            hires_scale=attrs.get("upscale", 1),
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
        return fields

    def _check_upscale(self, fields: dict[str, Any], plan: Plan) -> None:
        factor = fields["hires_scale"]
        if factor == 1:
            return
        if "controlnet_model" in fields:
            raise ValidationError(
                {"upscale": ["The upscale option does not combine with control_net."]}
            )
        base.check_upscaled(plan, "upscale", fields["width"], fields["height"], factor)


class DanTaskSerializer(serializers.Serializer):
    taskId = serializers.CharField()
    queuePosition = serializers.IntegerField(help_text="Queued jobs ahead of this one")
    status = serializers.ChoiceField(
        choices=[QUEUED, RUNNING, DONE, FAILED], help_text="0 queued, 1 running, 2 done, 3 failed"
    )
    images = serializers.ListField(child=serializers.URLField(), help_text="PNG URLs when done")
    seed = serializers.IntegerField(help_text="The seed used (of the first image)")
    error = serializers.CharField(required=False, help_text="Why, when status is 3")


ANSWER = inline_serializer(
    "DanTaskAnswer",
    {
        "code": serializers.IntegerField(default=200),
        "data": DanTaskSerializer(),
        "message": serializers.CharField(default="success"),
    },
)
ERROR = inline_serializer(
    "DanError",
    {
        "code": serializers.IntegerField(help_text="The HTTP status"),
        "data": serializers.JSONField(allow_null=True, help_text="Always null"),
        "message": serializers.CharField(),
    },
)
ERRORS = {status: ERROR for status in (400, 401, 402, 403, 404, 429, 503)}
POLL_ERRORS = {status: ERROR for status in (401, 403, 404, 429)}


def queue_position(job: Job) -> int:
    """How many queued jobs the worker claims before this one (0 once it runs or ends)."""
    if job.status != Job.Status.QUEUED:
        return 0
    # The claim order: priority first, then age (generation/tasks.py claim_next_job).
    ahead = Q(priority__gt=job.priority) | Q(priority=job.priority, created_at__lt=job.created_at)
    ahead |= Q(priority=job.priority, created_at=job.created_at, pk__lt=job.pk)
    return Job.objects.filter(ahead, status=Job.Status.QUEUED).count()


def task_answer(job: Job, base_url: str) -> dict[str, Any]:
    """Dan's body for a task in any state."""
    status = TASK_STATUS[job.status]
    images: list[str] = []
    if status == DONE and not job.expired_at:
        seconds = media.job_lifetime(job)
        images = [
            answers.absolute(base_url, media.signed_url(output.path, seconds))
            for output in job.outputs.order_by("index")
        ]
    data: dict[str, Any] = {
        "taskId": str(job.pk),
        "queuePosition": queue_position(job),
        "status": status,
        "images": images,
        "seed": job.params["seed"],
    }
    if status == FAILED:
        data["error"] = (
            "Canceled; the credits were refunded."
            if job.status == Job.Status.CANCELED
            else "Generation failed; the credits were refunded."
        )
    return {"code": 200, "data": data, "message": "success"}


class DanView(base.FormatView):
    """A Dan endpoint: Bearer or anonymous key, errors as {"code", "data": null, "message"}."""

    # The only views that take the public anonymous key (when it is switched on).
    authentication_classes = [AnonymousKeyAuthentication]
    error_body = staticmethod(error_body)

    def task(self, request: Request, task_id: Any) -> Response:
        """The caller's task by id; another tenant's or a malformed id is "not found" too."""
        text = str(task_id).strip()
        job = None
        if text.isdigit() and len(text) < 19:
            job = Job.objects.for_org(request.user.organization).filter(pk=int(text)).first()
        if job is None:
            raise NotFound(TASK_NOT_FOUND)
        job = jobs.refresh_lease_state(job)
        return Response(task_answer(job, answers.base_url_for(request)))


class Txt2ImgView(DanView):
    """POST /api/sd/txt2img: queue a task, wait PICTOR_SYNC_WAIT, answer its state."""

    @extend_schema(
        tags=["Dan"],
        summary="Generate an image from text (Dan)",
        description=(
            "Queues the task and waits a few seconds for it; answers its state (status 2 with "
            "image URLs when it finished in time, else poll GET /api/sd/txt2img/{taskId}). "
            "width/height: 8..1024, rounded to the nearest multiple of 8 and at least 64."
        ),
        request=DanTxt2ImgSerializer,
        responses={200: ANSWER, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = DanTxt2ImgSerializer(
            data=base.clean_body(request.data),
            context={"plan": request.user.organization.plan},
        )
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        # `model` wins over its alias (as in the serializer); a 400 names the one sent.
        sent = request.data
        model_field = "model_name" if "model_name" in sent and "model" not in sent else "model"
        model_id = fields.pop("model_id")
        kind = "controlnet" if "controlnet_model" in fields else "text2img"
        try:
            job = submission.submit(request, fields, kind, model_id=model_id)
        except ValidationError as exc:
            raise dan_error(exc, model_field) from None
        job = service.wait_for(job, settings.PICTOR_SYNC_WAIT)
        return Response(task_answer(job, answers.base_url_for(request)))


class TaskView(DanView):
    """GET /api/sd/txt2img/<taskId>: the caller's task."""

    @extend_schema(
        tags=["Dan"],
        summary="A text2img task's state (Dan)",
        responses={200: ANSWER, **POLL_ERRORS},
    )
    def get(self, request: Request, task_id: str) -> Response:
        return self.task(request, task_id)


class TaskStatusView(DanView):
    """POST /api/sd/task/status with {"taskId": ...}: Dan's own poll, for its clients."""

    @extend_schema(
        tags=["Dan"],
        summary="A task's state, by taskId in the body (Dan)",
        request=inline_serializer("DanTaskStatusRequest", {"taskId": serializers.CharField()}),
        responses={200: ANSWER, 400: ERROR, **POLL_ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        task_id = data.get("taskId")
        if task_id is None or task_id == "":
            raise ValidationError({"taskId": ["The taskId field is required."]})
        return self.task(request, task_id)


urlpatterns: list[URLPattern] = [
    path("api/sd/txt2img", Txt2ImgView.as_view(), name="dan-txt2img"),
    path("api/sd/txt2img/<str:task_id>", TaskView.as_view(), name="dan-task"),
    path("api/sd/task/status", TaskStatusView.as_view(), name="dan-task-status"),
]
