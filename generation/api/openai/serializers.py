"""The bodies of OpenAI's image routes, read into GenerationRequest's fields.

OpenAI refuses a parameter it does not know, so these serializers do too (400 naming it). Every
parameter accepted acts: `quality` picks the step count, `style` a prompt style, `moderation`
the safety checker, `user` the job's track id; a value Pictor cannot honour (a transparent
background, streaming) is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, NotFound, ValidationError

from billing.models import Plan
from generation import fewstep, submission
from generation.api import base
from generation.api.base import MAX_PROMPT_LENGTH
from generation.api.openai.answers import OPENAI_MODELS
from generation.engine.request import DEFAULT_OUTPUT_QUALITY, FEW_STEPS
from generation.engine.styles import STYLE_PRESETS
from generation.models import AIModel

DEFAULT_SIDE = 1024
MIN_SIDE = 64
SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")
# What each quality reports back: OpenAI's answers name low, medium or high.
QUALITY_LEVELS = {
    "auto": "medium",
    "standard": "medium",
    "medium": "medium",
    "low": "low",
    "high": "high",
    "hd": "high",
}
# A few-step model's steps per level, within its 1-8 (fewstep.FEW_STEPS): medium is the steps
# it runs when no quality is sent, low half of them, high the most it takes.
FEW_STEP_QUALITY = {"low": 2, "medium": fewstep.DEFAULT_FEW_STEPS, "high": FEW_STEPS[1]}
# OpenAI's styles as Pictor's prompt styles (generation/engine/styles.py).
STYLES = {"vivid": "enhance", "natural": "photographic"}
# Edits without a mask keep this much of the input; a masked area is repainted whole.
EDIT_STRENGTH = 0.75
INPAINT_STRENGTH = 1.0
# Variations: the same picture, redrawn freely but recognisably, with no prompt.
VARIATION_STRENGTH = 0.6
MAX_USER_LENGTH = 255


class ModelNotFound(NotFound):
    """OpenAI's 404 for a model the caller cannot use."""

    default_code = "model_not_found"


def steps_for(plan: Plan, level: str, model: AIModel | None = None) -> int:
    """The step count of a quality level: the plan's smallest, middle or largest listed count.

    A few-step `model` takes FEW_STEP_QUALITY's count instead (the plan's list is over its range).
    """
    if model is not None and model.distillation:
        return FEW_STEP_QUALITY[level]
    steps = sorted(plan.steps_list)
    if level == "low":
        return steps[0]
    if level == "high":
        return steps[-1]
    return steps[(len(steps) - 1) // 2]


def checkpoint(request: Any, name: str | None, kind: str) -> AIModel:
    """The model named by `model` (OpenAI's names mean the default one), else OpenAI's 404."""
    model_id = None if name is None or name in OPENAI_MODELS else name
    try:
        return submission.resolve_model(request, model_id, kind, "model")
    except NotFound:
        shown = name or "default"
        raise ModelNotFound(
            f"The model '{shown}' does not exist or you do not have access to it."
        ) from None


class OpenAISerializer(base.CopiedFields):
    """What every image route takes; subclasses add theirs. Unknown parameters are a 400."""

    # (Comments, not the docstring: that is the schema's description.) Context: "org", "plan",
    # "request" and "files" (the names of the files sent, which are parameters too).
    files: tuple[str, ...] = ()

    model = serializers.CharField(
        max_length=100,
        required=False,
        help_text="A model id from GET /v1/models; dall-e-2, dall-e-3 and gpt-image-1 mean the "
        "default model",
    )
    n = serializers.IntegerField(min_value=1, max_value=10, default=1)
    size = serializers.CharField(
        max_length=20,
        required=False,
        help_text="WIDTHxHEIGHT in multiples of 8 within the plan's largest side, or auto",
    )
    response_format = serializers.ChoiceField(choices=("url", "b64_json"), default="url")
    user = serializers.CharField(
        max_length=MAX_USER_LENGTH, required=False, help_text="Kept as the job's track id"
    )
    safety_identifier = serializers.CharField(
        max_length=MAX_USER_LENGTH, required=False, help_text="The same as user"
    )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(self.fields) | set(self.files)
            unknown = [name for name in data if name not in known]
            if unknown:
                name = str(unknown[0])
                message = f"Unknown parameter: '{name[:100]}'."
                raise ValidationError({name: [ErrorDetail(message, "unknown_parameter")]})
        return super().to_internal_value(data)

    def validate_n(self, value: int) -> int:
        # A field's own validator raises the sentence alone: DRF files it under the field.
        plan = self.context["plan"]
        if value > plan.max_samples:
            raise ValidationError(base.samples_limit(plan, "n"))
        return value

    def validate_size(self, value: str) -> str:
        if value == "auto":
            return value
        match = SIZE.fullmatch(value.strip())
        if match is None:
            raise ValidationError(
                "The size must be WIDTHxHEIGHT (such as 1024x1024 or 1536x1024) or auto."
            )
        plan: Plan = self.context["plan"]
        for name, side in zip(("width", "height"), match.groups(), strict=True):
            number = int(side)
            if number < MIN_SIDE or number % 8:
                raise ValidationError(
                    f"The {name} ({number}) must be at least {MIN_SIDE} and a multiple of 8."
                )
            if number > plan.max_side:
                raise ValidationError(
                    f"The {name} ({number}) may not be greater than {plan.max_side} "
                    f"on the {plan.name} plan."
                )
        return value

    def validate_user(self, value: str) -> str:
        return base.storable(value)

    def validate_safety_identifier(self, value: str) -> str:
        return base.storable(value)

    def common(self, attrs: dict[str, Any], kind: str, prompt: str) -> dict[str, Any]:
        """GenerationRequest fields shared by the routes, plus "track_id" and the model."""
        fields = base.defaults(
            prompt=prompt,
            samples=attrs["n"],
            steps=steps_for(self.context["plan"], "medium"),
            seed=base.random_seed(None),
        )
        # The quality picks the steps (output); without one a few-step model runs its own
        # default. An LCM model runs its own scheduler either way (OpenAI names none).
        sent = "quality" in self.initial_data
        fields[fewstep.STEPS_RULE] = fewstep.StepsRule("quality", sent=sent, scheduler_sent=False)
        size = attrs.get("size", "auto")
        if size != "auto":
            width, height = (int(side) for side in SIZE.fullmatch(size.strip()).groups())  # type: ignore[union-attr]  # validate_size matched it
            fields.update(width=width, height=height)
        model = checkpoint(self.context["request"], attrs.get("model"), kind)
        submission.resolve_addons(self.context["request"], model, fields)
        return {
            "fields": fields,
            "kind": kind,
            "checkpoint": model,
            "track_id": attrs.get("safety_identifier") or attrs.get("user") or "",
            "response_format": attrs["response_format"],
        }


class OutputSerializer(OpenAISerializer):
    """Generations and edits: a prompt, a quality and an output format."""

    prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH)
    quality = serializers.ChoiceField(
        choices=QUALITIES,
        default="auto",
        help_text="Steps from the plan's list: low the fewest, high/hd the most, else the middle "
        "(a few-step model: 2, 8, else 4)",
    )
    output_format = serializers.ChoiceField(
        choices=tuple(("png", "jpeg", "webp")),
        default="png",
        help_text="How the images are stored and sent: png, jpeg or webp",
    )
    output_compression = serializers.IntegerField(
        min_value=0,
        max_value=100,
        required=False,
        help_text=(
            "JPEG/WebP compression: the encoder's quality is 100 minus it (at least 1), "
            f"default {100 - DEFAULT_OUTPUT_QUALITY}"
        ),
    )
    background = serializers.ChoiceField(
        choices=("auto", "opaque", "transparent"),
        default="auto",
        help_text="auto or opaque: images are opaque",
    )
    stream = serializers.BooleanField(default=False, help_text="Only false")

    def validate_prompt(self, value: str) -> str:
        return base.storable(value)

    def validate_background(self, value: str) -> str:
        if value == "transparent":
            raise ValidationError(
                "Transparent backgrounds are not available here; send opaque or auto."
            )
        return value

    def validate_stream(self, value: bool) -> bool:
        if value:
            raise ValidationError("Streaming is not available here; send false or leave it out.")
        return value

    def output(self, attrs: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
        """`found` with the quality's steps and the output format and quality for the engine."""
        if "output_compression" in attrs and attrs["output_format"] == "png":
            raise ValidationError(
                {"output_compression": ["output_compression applies to jpeg and webp only."]}
            )
        level = QUALITY_LEVELS[attrs["quality"]]
        found["fields"]["steps"] = steps_for(self.context["plan"], level, found["checkpoint"])
        found["fields"]["output_format"] = attrs["output_format"]
        if "output_compression" in attrs:
            # OpenAI's compression runs the other way from the encoder's quality (1-100).
            found["fields"]["output_quality"] = max(1, 100 - attrs["output_compression"])
        found.update(quality=level, output_format=attrs["output_format"])
        return found


class GenerationsSerializer(OutputSerializer):
    """The JSON body of POST /v1/images/generations."""

    # DRF's metaclass moves declared fields off the class: `.style` stays the attribute.
    style = serializers.ChoiceField(  # type: ignore[assignment]
        choices=tuple(STYLES),
        required=False,
        help_text="vivid: the enhance prompt style; natural: the photographic one",
    )
    moderation = serializers.ChoiceField(
        choices=("auto", "low"),
        default="auto",
        help_text="auto runs the safety checker; low turns it off",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        prompt, negative = attrs["prompt"], ""
        if "style" in attrs:
            prompt, negative = STYLE_PRESETS[STYLES[attrs["style"]]].apply(prompt, negative)
        found = self.common(attrs, "text2img", prompt)
        fields = found["fields"]
        plan: Plan = self.context["plan"]
        for side in ("width", "height"):
            fields.setdefault(side, min(DEFAULT_SIDE, plan.max_side))
        fields.update(negative_prompt=negative, safety_checker=attrs["moderation"] == "auto")
        return self.output(attrs, found)


class EditsSerializer(OutputSerializer):
    """The multipart form of POST /v1/images/edits (image and mask are files)."""

    files = ("image", "image[]", "mask")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        masked = self.context["mask"] is not None
        found = self.common(attrs, "inpaint" if masked else "img2img", attrs["prompt"])
        found["fields"].update(
            init_image=self.context["image"],
            strength=INPAINT_STRENGTH if masked else EDIT_STRENGTH,
        )
        if masked:
            found["fields"]["mask_image"] = self.context["mask"]
        return self.output(attrs, found)


class VariationsSerializer(OpenAISerializer):
    """The multipart form of POST /v1/images/variations (image is a file)."""

    files = ("image", "image[]")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        found = self.common(attrs, "img2img", "")
        found["fields"].update(init_image=self.context["image"], strength=VARIATION_STRENGTH)
        found.update(quality="medium", output_format="png")
        return found
