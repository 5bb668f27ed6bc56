"""What every wire format shares before it submits: field checks, defaults and its view base.

A format module (modelslab, synapse, hyperbolic, dan, a1111) turns its own field names into the
`fields` dict of generation/submission.py (GenerationRequest's names, plus `loras` and
`embeddings_model` as lists) and calls its `submit`. Its serializer maps wire names with
`source=` and resolves the model and add-ons in validate(), passing the client's field names,
so those 400s name what the client sent; the few errors left that name GenerationRequest's
fields are renamed with `renamed` (and `wire_names`). No format imports another: what two
formats share lives here.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.views import APIView

from billing.models import Plan
from generation import submission, webhooks
from generation.api.errors import Problem, handler_for
from generation.api.parsers import AnyContentTypeJSONParser
from generation.engine.prompts import (
    MAX_LORA_WEIGHT,
    PromptError,
    extract_lora_tags,
    has_unstorable,
)
from generation.engine.request import DEFAULT_SCHEDULER
from generation.engine.schedulers import A1111_SAMPLERS, usable_scheduler_error
from generation.models import WebhookEvent

if TYPE_CHECKING:
    from accounts.requests import OrgRequest
    from generation.models import Job

MAX_PROMPT_LENGTH = 2000
# An image field holds a URL or base64 text; 30 MB of base64 is more than the fetch cap allows.
MAX_IMAGE_FIELD = 30_000_000
MAX_SEED = 2**32 - 1
MAX_LORAS = 5
# A number sent as text (or an integer) longer than this is refused before any conversion:
# int() of thousands of digits is slow, and past 4,300 Python refuses it (a 500).
MAX_NUMBER_CHARS = 32
INTEGER_TEXT = re.compile(r"[+-]?\d+")
MAX_INT_BITS = 106  # about MAX_NUMBER_CHARS decimal digits
UNSTORABLE_TEXT = "holds a NUL character or an unpaired surrogate"


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


def check_sides(plan: Plan, values: dict[str, Any]) -> None:
    """The width and height (those given) within the plan's largest side, width first."""
    for side in ("width", "height"):
        if side in values:
            check_side(plan, side, values[side])


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


def samples_limit(plan: Plan, field: str) -> str:
    """The sentence for an image count above the plan's."""
    return f"The {field} may not be greater than {plan.max_samples} on the {plan.name} plan."


def check_samples(plan: Plan, field: str, value: int) -> None:
    if value > plan.max_samples:
        raise ValidationError({field: [samples_limit(plan, field)]})


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


class FiniteFloatField(serializers.FloatField):
    """A float that is a number: not "nan" as text (it would pass min/max), and not a JSON
    boolean, which Python reads as 1.0 or 0.0 (integer fields refuse it already)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


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


def usable_samplers() -> list[str]:
    """The AUTOMATIC1111 sampler names this server can run (the lists Synapse and A1111 offer)."""
    return [
        name
        for name, choice in A1111_SAMPLERS.items()
        if usable_scheduler_error(choice.scheduler, choice.use_karras_sigmas, choice.algorithm_type)
        is None
    ]


def named_in(names: Iterable[str], *texts: str) -> list[str]:
    """The names that appear as whole words in any of the texts (how A1111 finds embeddings)."""
    return [
        name
        for name in names
        if any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) for text in texts)
    ]


def prompt_loras(
    prompt: str,
    field: str = "prompt",
    error: Callable[[dict[str, list[str]]], Exception] = ValidationError,
    empty: str | None = None,
) -> tuple[str, list[tuple[str, float]]]:
    """(prompt without its <lora:name:weight> tags, the tags' LoRAs); a bad tag names `field`.

    `error` is the exception class of the format's field errors (A1111 answers a 422);
    `empty`, when given, is the message for a prompt that holds nothing but tags.
    """
    try:
        text, loras = extract_lora_tags(prompt)
    except PromptError as exc:
        raise error({field: [str(exc)]}) from None
    if empty is not None and not text:
        raise error({field: [empty]})
    return text, loras


class LorasField(serializers.Field):
    """LoRAs sent as data rather than prompt tags; a subclass reads its format's shape.

    The weight check is shared; its wording and whether a weight may come as text ("0.8")
    are each format's own, so its messages stay the ones its clients know.
    """

    weight_message = "The weight of LoRA {name!r} must be a number between {low:g} and {high:g}."
    weight_as_text = False

    def weight(self, name: str, value: Any) -> float:
        """`value` as a finite weight within ±MAX_LORA_WEIGHT; else a 400 naming `name`."""
        number = (
            None
            if isinstance(value, str) and not self.weight_as_text
            else bounded_float(value, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT)
        )
        if number is None:
            raise ValidationError(
                self.weight_message.format(name=name, low=-MAX_LORA_WEIGHT, high=MAX_LORA_WEIGHT)
            )
        return number


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"type": "string", "enum": list(WebhookEvent.values)}},
            {"type": "string", "example": "start,completed"},
        ],
        "default": [WebhookEvent.COMPLETED.value],
    }
)
class WebhookEventsField(serializers.Field):
    """`webhook_events`: a list of event names or comma-separated text (generation/webhooks.py)."""

    def to_internal_value(self, data: Any) -> list[str]:
        try:
            return webhooks.parse_events(data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def to_representation(self, value: Any) -> Any:
        return value


class CopiedFields(serializers.Serializer):
    """A request serializer whose fields are copied for each body, not built again.

    DRF deep-copies the declared fields for every serializer instance, and a field's deep copy
    runs its __init__ again (its validators, its error messages merged along its classes): for
    ModelsLab's 38 text2img fields, 0.4 ms of a submit's 5 ms of CPU (docs/benchmarks.md). A
    field's attributes are copied instead, with its own error messages and validator list, so
    an instance that changes them changes only its copy, as with DRF's. A field that holds other
    fields (a list's child, a nested serializer) is deep-copied as DRF does, so that each copy
    has its own child bound to it.
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        deep = holding_fields(type(self))
        return {
            name: copy.deepcopy(field) if name in deep else copied(field)
            for name, field in self._declared_fields.items()
        }


@functools.cache
def holding_fields(cls: type[CopiedFields]) -> frozenset[str]:
    """The declared fields of `cls` that hold other fields (or are serializers): deep-copied."""
    return frozenset(
        name
        for name, field in cls._declared_fields.items()
        if isinstance(field, serializers.BaseSerializer)
        or any(isinstance(value, serializers.Field) for value in vars(field).values())
    )


def copied(field: serializers.Field) -> serializers.Field:
    """A copy of an unbound field that holds no other field, for one serializer instance."""
    twin = object.__new__(type(field))
    state = vars(field)
    vars(twin).update(state)
    twin.error_messages = dict(field.error_messages)
    if "_validators" in state:
        vars(twin)["_validators"] = list(state["_validators"])
    return twin


def clean_body(data: Any) -> dict[str, Any]:
    """The body as a dict with `null` (and empty strings, except the prompt) meaning default."""
    if not isinstance(data, dict):
        raise ValidationError({"body": ["The request body must be a JSON object."]})
    return {k: v for k, v in data.items() if v is not None and (v != "" or k == "prompt")}


def comma_list(value: Any) -> list[str]:
    """A ModelsLab comma list ("a, b" or a JSON list) as stripped, non-empty names."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def wire_names(serializer: serializers.Serializer) -> dict[str, str]:
    """GenerationRequest field name -> the client's, from the serializer's `source=` fields.

    For the few checks that only the whole request can run (GenerationRequest.problems()), whose
    400 names GenerationRequest's fields.
    """
    return {
        field.source: name
        for name, field in serializer.fields.items()
        if field.source and field.source not in (name, "*")
    }


def renamed(exc: ValidationError, names: dict[str, str]) -> ValidationError:
    """The same 400 with GenerationRequest field names replaced by a format's own."""
    if not isinstance(exc.detail, dict):
        return exc
    return ValidationError({names.get(k, k): v for k, v in exc.detail.items()})


class FormatView(APIView):
    """A view of one wire format: lenient JSON parsing, errors rendered by `error_body`."""

    parser_classes = [AnyContentTypeJSONParser]
    # Each format sets this to its error shape: staticmethod(a function of a Problem).
    error_body: Callable[[Problem], Any]

    def get_exception_handler(self) -> Callable[..., Any]:
        return handler_for(self.error_body)

    def submit_body(
        self, request: OrgRequest, serializer_class: type[serializers.Serializer], **context: Any
    ) -> Job:
        """Read the body with the format's serializer, then queue and charge its job.

        The serializer gets "org", "plan" and "request" (and `context`) in its context and
        answers GenerationRequest's fields plus "kind" and "checkpoint" (the model it resolved,
        with its add-ons, so those 400s name the client's fields).
        """
        org = request.user.organization
        serializer = serializer_class(
            data=clean_body(request.data),
            context={"org": org, "plan": org.plan, "request": request, **context},
        )
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        kind, checkpoint = fields.pop("kind"), fields.pop("checkpoint")
        try:
            return submission.submit(request, fields, kind, model=checkpoint)
        except ValidationError as exc:
            # Left to name: the whole request's checks (GenerationRequest.problems()).
            raise renamed(exc, wire_names(serializer)) from None
