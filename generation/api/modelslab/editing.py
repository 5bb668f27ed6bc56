"""ModelsLab's image_editing outpaint and object_removal: inpaint jobs on a prepared canvas.

Outpaint grows the canvas (to `width` × `height` with the image in the middle, as ModelsLab
does, or by Pictor's `left`, `right`, `top`, `bottom`) and repaints the new border
(generation/editing.py builds the canvas and mask). Object removal repaints the white area of
`mask_image` from the colours around it with a neutral prompt. Both queue an ordinary inpaint
job (generation/submission.py), so pricing, the ledger, webhooks and fetch are the same.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts.requests import KeyRequest
from billing.models import Plan
from generation import editing, fewstep, submission
from generation.answers import ModelsLabJob
from generation.api import base, schema
from generation.api.base import MAX_IMAGE_FIELD, MAX_PROMPT_LENGTH, MAX_SEED
from generation.api.modelslab.serializers import (
    GenerationSerializer,
    ModelsLabSerializer,
    parse,
    sent_steps,
)
from generation.api.modelslab.views import ModelsLabView, check_mask
from generation.models import Job
from generation.submission import MIN_SIDE

SIDES = ("left", "right", "top", "bottom")
# ModelsLab's bounds of the seam repainted inside the image.
DEFAULT_OVERLAP = 10
MAX_OVERLAP = 42
# The smallest image either endpoint takes (a side of fewer pixels holds nothing to extend).
MIN_INPUT_SIDE = 8
# Denoising strength over the prepared canvas: high enough to paint anew, low enough that the
# starting colours (edge pixels; the fill around a removed object) steer the result.
OUTPAINT_STRENGTH = 0.9
ERASE_STRENGTH = 0.8
# Object removal asks for what is behind the object, and against what it removes.
ERASE_PROMPT = "empty background, seamless, consistent texture and lighting"
ERASE_NEGATIVE_PROMPT = "object, person, text, watermark, logo, artifacts"
ERASE_GUIDANCE = 7.5


class EditingSerializer(ModelsLabSerializer):
    """What both editing endpoints take besides their images."""

    model_id = serializers.CharField(max_length=100, required=False)
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, required=False)
    track_id = serializers.CharField(max_length=255, required=False)
    webhook = serializers.URLField(max_length=2000, required=False)
    webhook_events = base.WebhookEventsField(required=False)
    base64 = serializers.BooleanField(default=False)
    temp = serializers.BooleanField(default=False)

    validate_webhook = GenerationSerializer.validate_webhook

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["seed"] = base.random_seed(attrs.get("seed"))
        return attrs


class OutpaintSerializer(EditingSerializer):
    prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, default="high quality", trim_whitespace=True
    )
    negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, default="low quality", allow_blank=True
    )
    image = serializers.CharField(
        max_length=MAX_IMAGE_FIELD, required=False, help_text="URL or base64; init_image too"
    )
    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD, required=False)
    width = serializers.IntegerField(
        min_value=MIN_SIDE,
        max_value=1024,
        required=False,
        help_text="The output's width, the image centred (default: the image's)",
    )
    height = serializers.IntegerField(
        min_value=MIN_SIDE,
        max_value=1024,
        required=False,
        help_text="The output's height, the image centred (default: the image's)",
    )
    left = serializers.IntegerField(
        min_value=0, max_value=1024, required=False, help_text="Pixels added on the left"
    )
    right = serializers.IntegerField(
        min_value=0, max_value=1024, required=False, help_text="Pixels added on the right"
    )
    top = serializers.IntegerField(
        min_value=0, max_value=1024, required=False, help_text="Pixels added at the top"
    )
    bottom = serializers.IntegerField(
        min_value=0, max_value=1024, required=False, help_text="Pixels added at the bottom"
    )
    overlap_width = serializers.IntegerField(
        min_value=0,
        max_value=MAX_OVERLAP,
        default=DEFAULT_OVERLAP,
        help_text="Pixels of the image along each grown side repainted with the border",
    )
    num_inference_steps = serializers.IntegerField(min_value=1, max_value=150, required=False)
    steps = serializers.IntegerField(min_value=1, max_value=150, required=False)
    guidance_scale = base.FiniteFloatField(min_value=1, max_value=20, default=8.0)

    validate_guidance_scale = GenerationSerializer.validate_guidance_scale

    def validate_width(self, value: int) -> int:
        return self._on_plan("width", value)

    def validate_height(self, value: int) -> int:
        return self._on_plan("height", value)

    def _on_plan(self, name: str, value: int) -> int:
        plan: Plan = self.context["plan"]
        if value % editing.GRID:
            raise ValidationError(f"The {name} must be a multiple of {editing.GRID}.")
        if value > plan.max_side:
            raise ValidationError(
                f"The {name} may not be greater than {plan.max_side} on the {plan.name} plan."
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        plan: Plan = self.context["plan"]
        image = attrs.pop("image", None) or attrs.pop("init_image", None)
        attrs.pop("init_image", None)
        if not image:
            raise ValidationError({"image": ["The image field is required."]})
        attrs["image"] = image

        sent = sent_steps(attrs)
        steps = sent or min(plan.steps_list)
        # Steps off the plan's list wait for the model (fewstep.apply): a few-step one takes 1
        # to 8 and answers its own range, a plain one the plan's list.
        attrs["steps"] = steps
        attrs[fewstep.STEPS_RULE] = fewstep.StepsRule(
            "num_inference_steps", listed=steps in plan.steps_list, sent=sent is not None
        )

        given = [name for name in SIDES if name in attrs]
        if given and ("width" in attrs or "height" in attrs):
            raise ValidationError(
                {"width": ["Give width and height, or left, right, top and bottom; not both."]}
            )
        if given:
            for name in given:
                if attrs[name] % editing.GRID:
                    raise ValidationError(
                        {name: [f"The {name} must be a multiple of {editing.GRID}."]}
                    )
            sides = editing.Sides(**{name: attrs.pop(name) for name in given})
            if not sides.grows:
                raise ValidationError(
                    {given[0]: ["Grow at least one side: left, right, top or bottom above 0."]}
                )
            attrs["sides"] = sides
        elif "width" not in attrs and "height" not in attrs:
            raise ValidationError(
                {"width": ["Give the output's width and height, or left, right, top, bottom."]}
            )
        return attrs


class ObjectRemovalSerializer(EditingSerializer):
    init_image = serializers.CharField(max_length=MAX_IMAGE_FIELD)
    mask_image = serializers.CharField(
        max_length=MAX_IMAGE_FIELD, help_text="White where the object to remove is"
    )


def check_input(field: str, image: Any) -> None:
    """A 400 for an image too small to edit."""
    if min(image.size) < MIN_INPUT_SIDE:
        raise ValidationError(
            {
                field: [
                    f"The {field} is {image.width}x{image.height}; its sides must be at least "
                    f"{MIN_INPUT_SIDE} px."
                ]
            }
        )


def outpaint_sides(fields: dict[str, Any], source: Any, plan: Plan) -> editing.Sides:
    """The sides to grow, checked against the image and the plan (a 400 naming the field)."""
    sides: editing.Sides | None = fields.get("sides")
    width, height = source.size
    if sides is None:
        wanted = (fields.get("width", width), fields.get("height", height))
        for name, want, have in (("width", wanted[0], width), ("height", wanted[1], height)):
            if want < have:
                raise ValidationError(
                    {name: [f"The {name} must be at least the image's {name}, {have} px."]}
                )
        if wanted == (width, height):
            raise ValidationError(
                {"width": [f"The width and height are the image's size, {width}x{height}."]}
            )
        sides = editing.Sides.centred((width, height), wanted)
    canvas = sides.canvas(width, height)
    axes = (
        ("width", canvas[0], "right" if sides.right else "left"),
        ("height", canvas[1], "bottom" if sides.bottom else "top"),
    )
    for axis, side, side_field in axes:
        field = side_field if "sides" in fields else axis
        if side > plan.max_side:
            raise ValidationError(
                {
                    field: [
                        f"The output's {axis} would be {side} px; the {plan.name} plan allows "
                        f"at most {plan.max_side}."
                    ]
                }
            )
        if side < MIN_SIDE:
            raise ValidationError(
                {
                    field: [
                        f"The output's {axis} would be {side} px; it must be at least {MIN_SIDE}."
                    ]
                }
            )
    return sides


def job_fields(fields: dict[str, Any], **generation: Any) -> dict[str, Any]:
    """The inpaint's fields for submission.submit: the job's options plus `generation`."""
    return {
        "negative_prompt": "",
        "loras": [],
        "enhance_prompt": False,
        "seed": fields["seed"],
        "temp": fields["temp"],
        "webhook_events": fields.get("webhook_events"),
        **generation,
    }


def queue_inpaint(request: KeyRequest, generation: dict[str, Any], fields: dict[str, Any]) -> Job:
    """Queue an edit's prepared inpaint job with the client's model, track, webhook, base64."""
    return submission.submit(
        request,
        generation,
        "inpaint",
        model_id=fields.get("model_id"),
        track_id=fields.get("track_id", ""),
        webhook=fields.get("webhook", ""),
        output_base64=fields["base64"],
    )


class OutpaintView(ModelsLabView):
    """POST /api/v6/image_editing/outpaint: the image on a larger canvas, the border painted."""

    @extend_schema(
        tags=["ModelsLab"],
        request=OutpaintSerializer,
        responses={200: ModelsLabJob, **schema.modelslab_errors(402, 404, 503)},
    )
    def post(self, request: KeyRequest) -> Response:
        plan = request.user.organization.plan
        fields = parse(OutpaintSerializer, request.data, plan)
        field = (
            "init_image"
            if "init_image" in request.data and "image" not in request.data
            else "image"
        )
        source = submission.Inputs(request.user.organization.pk).load(field, fields["image"])
        check_input(field, source)
        source = editing.on_grid(source.convert("RGB"))
        sides = outpaint_sides(fields, source, plan)
        width, height = sides.canvas(*source.size)
        generation = job_fields(
            fields,
            prompt=fields["prompt"],
            negative_prompt=fields["negative_prompt"],
            width=width,
            height=height,
            steps=fields["steps"],
            guidance_scale=fields["guidance_scale"],
            init_image=editing.extended(source, sides),
            mask_image=editing.border_mask(source.size, sides, fields["overlap_width"]),
            strength=OUTPAINT_STRENGTH,
            inpaint_fill="original",
            **{fewstep.STEPS_RULE: fields[fewstep.STEPS_RULE]},
        )
        return self.answer(request, queue_inpaint(request, generation, fields))


class ObjectRemovalView(ModelsLabView):
    """POST /api/v6/image_editing/object_removal: the masked object painted over."""

    @extend_schema(
        tags=["ModelsLab"],
        request=ObjectRemovalSerializer,
        responses={200: ModelsLabJob, **schema.modelslab_errors(402, 404, 503)},
    )
    def post(self, request: KeyRequest) -> Response:
        plan = request.user.organization.plan
        fields = parse(ObjectRemovalSerializer, request.data, plan)
        images = submission.Inputs(request.user.organization.pk)
        source = images.load("init_image", fields["init_image"])
        check_input("init_image", source)
        mask = images.load("mask_image", fields["mask_image"]).convert("L")
        check_mask(mask, "remove")
        generation = job_fields(
            fields,
            prompt=ERASE_PROMPT,
            negative_prompt=ERASE_NEGATIVE_PROMPT,
            steps=min(plan.steps_list),
            guidance_scale=ERASE_GUIDANCE,
            init_image=source,
            mask_image=mask,
            strength=ERASE_STRENGTH,
            inpaint_fill="fill",
            # The steps are the server's choice: a few-step model runs its own default.
            **{fewstep.STEPS_RULE: fewstep.StepsRule("model_id", sent=False)},
        )
        return self.answer(request, queue_inpaint(request, generation, fields))
