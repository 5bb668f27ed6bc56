"""What every wire format shares once it has parsed a body: the checks, submit, wait, images.

A format module (modelslab, synapse, hyperbolic, dan, a1111) turns its own field names into the
`fields` dict below (GenerationRequest's names, plus `loras` and `embeddings_model` as lists)
and calls `submit`. Errors raised here name GenerationRequest's fields; a format renames them
into its own with `renamed`.
"""

from __future__ import annotations

import base64
import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from billing import limits
from billing.models import Plan
from generation import service
from generation.api.errors import Problem, handler_for
from generation.api.parsers import AnyContentTypeJSONParser
from generation.engine.prompts import MAX_LORA_WEIGHT, has_unstorable
from generation.engine.request import DEFAULT_SCHEDULER, GenerationRequest
from generation.engine.schedulers import A1111_SAMPLERS, usable_scheduler_error
from generation.models import AIModel, Job

MAX_SEED = 2**32 - 1
MAX_LORAS = 5
# A number sent as text (or an integer) longer than this is refused before any conversion:
# int() of thousands of digits is slow, and past 4,300 Python refuses it (a 500).
MAX_NUMBER_CHARS = 32
INTEGER_TEXT = re.compile(r"[+-]?\d+")
MAX_INT_BITS = 106  # about MAX_NUMBER_CHARS decimal digits
UNSTORABLE_TEXT = "holds a NUL character or an unpaired surrogate"


class GenerationTimedOut(APIException):
    """A blocking format waited PICTOR_BLOCKING_WAIT seconds; the job was canceled and refunded."""

    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_code = "timed_out"
    default_detail = "The image was not ready in time; the job was canceled and not charged."


class GenerationFailed(APIException):
    """The job itself failed in the worker (the only 5xx a format answers for its own input)."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "generation_failed"
    default_detail = "Generation failed; the credits were refunded."


def defaults(**fields: Any) -> dict[str, Any]:
    """GenerationRequest fields with Pictor's defaults, overridden by `fields`."""
    base: dict[str, Any] = {
        "negative_prompt": "",
        "samples": 1,
        "steps": 21,
        "guidance_scale": 7.5,
        "scheduler": DEFAULT_SCHEDULER,
        "use_karras_sigmas": False,
        "algorithm_type": "none",
        "safety_checker": True,
        "safety_checker_type": "sensitive_content_text",
        "loras": [],
        "embeddings_model": [],
        "tomesd": False,
        "enhance_prompt": False,
        "hires_scale": 1,
    }
    base.update(fields)
    return base


def random_seed(seed: int | None) -> int:
    """The seed to use: `seed`, or a random one for None and -1."""
    return secrets.randbelow(MAX_SEED - 3) if seed is None or seed == -1 else seed


def sampler_fields(name: str, field: str = "sampler") -> dict[str, Any]:
    """scheduler/use_karras_sigmas/algorithm_type for an A1111 sampler or diffusers class name."""
    by_lower = {n.lower(): choice for n, choice in A1111_SAMPLERS.items()}
    choice = A1111_SAMPLERS.get(name) or by_lower.get(name.strip().lower())
    if choice is not None:
        problem = usable_scheduler_error(
            choice.scheduler, choice.use_karras_sigmas, choice.algorithm_type
        )
        if problem:
            raise ValidationError({field: [f"{name}: {problem}"]})
        return {
            "scheduler": choice.scheduler,
            "use_karras_sigmas": choice.use_karras_sigmas,
            "algorithm_type": choice.algorithm_type,
        }
    if usable_scheduler_error(name):
        known = ", ".join(A1111_SAMPLERS)
        raise ValidationError({field: [f"Unknown sampler {name!r}; choose one of: {known}."]})
    return {"scheduler": name, "use_karras_sigmas": False, "algorithm_type": "none"}


def check_side(plan: Plan, field: str, value: int) -> None:
    """A width or height the plan allows (the format has checked its own range)."""
    if value > plan.max_side:
        limit = f"{plan.max_side} on the {plan.name} plan"
        raise ValidationError({field: [f"The {field} may not be greater than {limit}."]})


def check_multiple_of_8(field: str, value: int) -> int:
    """A side the VAE can encode: a multiple of 8 (a serializer's validate_<side>)."""
    if value % 8:
        raise ValidationError(f"The {field} must be a multiple of 8.")
    return value


def check_upscaled(plan: Plan, field: str, width: int, height: int, factor: int) -> None:
    """A hires-fix result the plan allows: both sides times `factor` within its max side."""
    for side, value in (("width", width), ("height", height)):
        final = value * factor
        if final > plan.max_side:
            limit = f"{plan.max_side} on the {plan.name} plan"
            raise ValidationError(
                {field: [f"The upscaled {side} ({final}) may not be greater than {limit}."]}
            )


def check_samples(plan: Plan, field: str, value: int) -> None:
    if value > plan.max_samples:
        raise ValidationError(
            {
                field: [
                    f"The {field} may not be greater than {plan.max_samples} "
                    f"on the {plan.name} plan."
                ]
            }
        )


def check_steps(plan: Plan, field: str, value: int) -> None:
    """Formats other than ModelsLab take any step count up to the plan's largest listed one."""
    if value > plan.max_steps:
        limit = f"{plan.max_steps} on the {plan.name} plan"
        raise ValidationError({field: [f"The {field} may not be greater than {limit}."]})


def bounded_float(value: Any, low: float, high: float) -> float | None:
    """`value` (a number, or one as text) as a finite float in [low, high]; else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str) and len(value.strip()) > MAX_NUMBER_CHARS:
        return None
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    # NaN fails every comparison, so test finiteness first, not only the range.
    return number if math.isfinite(number) and low <= number <= high else None


def bounded_int(value: Any, low: int, high: int) -> int | None:
    """`value` (an integer, a whole float, or digits as text) in [low, high]; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        number = int(value) if value.is_integer() else None
    elif isinstance(value, int):
        number = value if value.bit_length() <= MAX_INT_BITS else None
    elif isinstance(value, str) and INTEGER_TEXT.fullmatch(text := value.strip()):
        # Counted before int(): a 5,000-digit string must not reach the conversion.
        number = int(text) if len(text) <= MAX_NUMBER_CHARS else None
    else:
        return None
    return number if number is not None and low <= number <= high else None


def is_storable(text: str) -> bool:
    """Whether text can be stored and encoded: no NUL character, no unpaired surrogate."""
    return not has_unstorable(text)


def storable(value: str) -> str:
    """A serializer field's check (also for text from form or query data, not only JSON)."""
    if not is_storable(value):
        raise ValidationError(f"The value {UNSTORABLE_TEXT}.")
    return value


def check_storable(field: str, names: list[str]) -> None:
    """A 400 naming `field` when one of its names cannot be stored."""
    if any(has_unstorable(name) for name in names):
        raise ValidationError({field: [f"The {field} {UNSTORABLE_TEXT}."]})


def check_lora_weights(loras: list[tuple[str, float]], field: str) -> None:
    """Every LoRA weight finite and within ±MAX_LORA_WEIGHT, as in every format."""
    for name, weight in loras:
        if bounded_float(weight, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT) is None:
            raise ValidationError(
                {
                    field: [
                        f"The weight of LoRA {name} must be a number between "
                        f"{-MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}."
                    ]
                }
            )


def check_loras(loras: list[tuple[str, float]], field: str) -> None:
    """No LoRA twice, at most MAX_LORAS, names that can be stored, weights within bounds."""
    names = [name for name, _weight in loras]
    check_storable(field, names)
    check_lora_weights(loras, field)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValidationError({field: [f"LoRA named more than once: {', '.join(twice)}."]})
    if len(loras) > MAX_LORAS:
        raise ValidationError({field: [f"At most {MAX_LORAS} LoRAs at once."]})


def renamed(exc: ValidationError, names: dict[str, str]) -> ValidationError:
    """The same 400 with GenerationRequest field names replaced by a format's own."""
    if not isinstance(exc.detail, dict):
        return exc
    return ValidationError({names.get(k, k): v for k, v in exc.detail.items()})


def submit(
    request: Request,
    fields: dict[str, Any],
    kind: str,
    *,
    model_id: str | None,
    model_required: bool = False,
    track_id: str = "",
    webhook: str = "",
    output_base64: bool = False,
) -> Job:
    """Resolve the model and add-ons, store the inputs, then queue and charge the job."""
    # The ModelsLab module holds the model and input rules every format follows.
    from generation.api import modelslab

    if model_required and not model_id:
        raise ValidationError({"model_id": ["The model_id field is required."]})
    model = modelslab.resolve_model(request, model_id, kind)
    images = modelslab.Inputs(request.user.organization.pk)
    # ModelsLab's `temp` (shorter-lived image links) belongs to the job, not the generation.
    temp = bool(fields.pop("temp", False))
    try:
        req = modelslab.build_request(request, model, fields, kind, images)
        return queue(
            request,
            req,
            model,
            track_id=track_id,
            webhook=webhook,
            output_base64=output_base64,
            temp=temp,
        )
    except BaseException:
        images.discard()
        raise


def queue(
    request: Request,
    req: GenerationRequest,
    model: AIModel,
    *,
    track_id: str = "",
    webhook: str = "",
    output_base64: bool = False,
    temp: bool = False,
) -> Job:
    """Queue and charge a ready request for the caller (the spam filter sees the body as sent)."""
    from generation.api.modelslab import base_url_for

    # The formats check their own fields; this catches what only the whole request shows (a
    # hires pass with no step), so an accepted job never fails for a reason its params show.
    problems = req.problems()
    if problems:
        raise ValidationError({name: [message] for name, message in problems.items()})
    return service.submit(
        req,
        request.user.organization,
        model,
        api_key=request.auth,
        kind=req.kind,
        track_id=track_id,
        webhook=webhook,
        base_url=base_url_for(request),
        output_base64=output_base64,
        fingerprint=limits.body_fingerprint(request.data, request.path),
        temp=temp,
    )


def wait_until_done(job: Job) -> Job:
    """Block like the hosted service: wait for the job; past PICTOR_BLOCKING_WAIT cancel it."""
    job = service.wait_for(job, settings.PICTOR_BLOCKING_WAIT)
    if not job.is_finished:
        if service.cancel(job):
            raise GenerationTimedOut()
        job.refresh_from_db()
    if job.status != Job.Status.SUCCESS:
        raise GenerationFailed()
    return job


def images_base64(job: Job) -> list[str]:
    """The job's PNGs as base64 strings, in order."""
    return [
        base64.b64encode(default_storage.open(output.path).read()).decode()
        for output in job.outputs.order_by("index")
    ]


class FormatView(APIView):
    """A view of one wire format: lenient JSON parsing, errors rendered by `error_body`."""

    parser_classes = [AnyContentTypeJSONParser]
    # Each format sets this to its error shape: staticmethod(a function of a Problem).
    error_body: Callable[[Problem], Any]

    def get_exception_handler(self) -> Callable[..., Any]:
        return handler_for(self.error_body)
