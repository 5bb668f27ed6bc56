"""The body of Synapse's POST /sd/<model>, read into GenerationRequest's fields.

The serializer resolves the checkpoint (from the path) and the add-ons the prompt names itself,
so every 400 names the field the client sent: a LoRA tag or an embedding is blamed on `prompt`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.models import Organization
from billing.models import Plan
from generation import submission
from generation.api import base
from generation.api.base import MAX_PROMPT_LENGTH, MAX_SEED
from generation.models import AIModel

DEFAULT_SAMPLER = "DPM++ 2M Karras"
DEFAULT_STEPS = 20
DEFAULT_CFG_SCALE = 7.0
DEFAULT_SIDE = 512
MIN_SIDE = 64
MAX_SIDE = 1024
MAX_CFG_SCALE = 30


def visible_names(organization: Organization | None, *families: str) -> list[str]:
    """Model ids of these families that the organization may use (None: public ones), sorted."""
    models = (
        AIModel.objects.visible_to(organization)
        if organization is not None
        else AIModel.objects.filter(enabled=True, organization__isnull=True)
    )
    return list(
        models.filter(family__in=families).order_by("model_id").values_list("model_id", flat=True)
    )


class SynapseSerializer(base.CopiedFields):
    """The body of POST /sd/<model>, with Synapse's defaults; the plan narrows the bounds."""

    # (Comments, not the docstring: that is the schema's description.) Context: "org", "plan",
    # "request" and "model_id" (the path's model). The validated data is GenerationRequest's
    # fields plus "kind" (text2img) and "checkpoint", the resolved model.

    prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH)
    negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, required=False, default="", allow_blank=True
    )
    steps = serializers.IntegerField(
        min_value=1, default=DEFAULT_STEPS, help_text="1 to the plan's largest step count"
    )
    cfg_scale = base.FiniteFloatField(
        source="guidance_scale", min_value=1, max_value=MAX_CFG_SCALE, default=DEFAULT_CFG_SCALE
    )
    sampler = serializers.CharField(
        source="scheduler",
        max_length=100,
        default=DEFAULT_SAMPLER,
        help_text="An AUTOMATIC1111 sampler name (GET /sd/sampler) or a diffusers class name",
    )
    width = serializers.IntegerField(
        min_value=MIN_SIDE,
        max_value=MAX_SIDE,
        default=DEFAULT_SIDE,
        help_text="A multiple of 8, up to the plan's largest side",
    )
    height = serializers.IntegerField(
        min_value=MIN_SIDE,
        max_value=MAX_SIDE,
        default=DEFAULT_SIDE,
        help_text="A multiple of 8, up to the plan's largest side",
    )
    seed = serializers.IntegerField(
        min_value=-1, max_value=MAX_SEED, required=False, help_text="-1 or absent: random"
    )

    def validate_width(self, value: int) -> int:
        return base.check_multiple_of_8("width", value)

    def validate_height(self, value: int) -> int:
        return base.check_multiple_of_8("height", value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        plan: Plan = self.context["plan"]
        base.check_sides(plan, attrs)
        base.check_steps(plan, "steps", attrs["steps"])
        prompt, loras = base.prompt_loras(
            attrs["prompt"], empty="The prompt is empty once its LoRA tags are taken out."
        )
        base.check_loras(loras, "prompt")
        sampler = base.sampler_fields(attrs["scheduler"], "sampler")
        request = self.context["request"]
        model = submission.resolve_model(request, self.context["model_id"], "text2img", "model")
        embeddings = visible_names(self.context["org"], AIModel.Family.EMBEDDING)
        fields = base.defaults(
            prompt=prompt,
            negative_prompt=attrs["negative_prompt"],
            steps=attrs["steps"],
            guidance_scale=attrs["guidance_scale"],
            width=attrs["width"],
            height=attrs["height"],
            seed=base.random_seed(attrs.get("seed")),
            loras=loras,
            embeddings_model=base.named_in(embeddings, prompt, attrs["negative_prompt"]),
            **sampler,
        )
        # Both add-on kinds come from the prompts (tags and embedding names).
        submission.resolve_addons(
            request, model, fields, {"lora_model": "prompt", "embeddings_model": "prompt"}
        )
        return {**fields, "kind": "text2img", "checkpoint": model}
