"""From a validated A1111 body to GenerationRequest's fields, every lookup naming webui's fields.

The steps run in the order a body's errors are reported in: this server's refusals and the
plan's limits, the sampler, override_settings, the prompt's LoRA tags, the hires fix or the
init image and mask; then the checkpoint's fit for the job, its add-ons and clip skip, and
last the init image. They run here, not in the serializer's validate(): DRF reports every error
raised there as a field error, and A1111 answers those with 422, these with 400.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.exceptions import NotFound, ValidationError

from accounts.models import Organization
from generation import submission
from generation.api import base
from generation.api.a1111.checkpoints import default_model
from generation.api.a1111.errors import Unprocessable
from generation.api.a1111.inpaint import inpaint_inputs
from generation.api.a1111.serializers import (
    check_denoising_steps,
    check_eta,
    check_plan,
    hires_fields,
    read_overrides,
    refuse_unhonoured,
    sampler_choice,
)
from generation.api.a1111.tables import DEFAULT_STEPS, ENGINE_KINDS, NOT_HONOURED
from generation.models import AIModel

if TYPE_CHECKING:
    from accounts.requests import KeyRequest

# The add-ons' fields of GenerationRequest by where A1111 names them: LoRAs and embeddings in
# the prompt, the VAE in override_settings.
ADDON_FIELDS = {
    "lora_model": "prompt",
    "embeddings_model": "prompt",
    "vae": "override_settings.sd_vae",
}
CLIP_SKIP_FIELD = "override_settings.CLIP_stop_at_last_layers"


def embeddings_in(organization: Organization, model: AIModel, *prompts: str) -> list[str]:
    """The embeddings (fitting the checkpoint) that a prompt names, as webui finds them."""
    if model.base == AIModel.Base.SDXL:
        return []
    visible = AIModel.objects.visible_to(organization).filter(
        family=AIModel.Family.EMBEDDING, base=model.base
    )
    names = visible.order_by("model_id").values_list("model_id", flat=True)
    return base.named_in(names, "\n".join(prompts))


def request_fields(
    request: KeyRequest, body: dict[str, Any], values: dict[str, Any], kind: str
) -> tuple[AIModel, str, str, dict[str, Any]]:
    """(checkpoint, webui sampler name, engine kind, GenerationRequest fields) for a body.

    `values` is the serializer's validated data: engine names where its fields say `source=`.
    Input images in the fields are decoded already; add-ons are resolved (submit with `model`).
    """
    org = request.user.organization
    plan = org.plan
    refuse_unhonoured(body, NOT_HONOURED)
    if kind == "img2img":
        if len(values["init_images"]) > 1:
            # A 400, not a 422: webui takes one per batch item, this server one in all.
            raise ValidationError(
                {"init_images": ["Send one init image; several are not offered."]}
            )
        if values["resize_mode"] != 0:
            raise ValidationError({"resize_mode": ["Only resize_mode 0 (just resize) is offered."]})
    steps_sent = "steps" in values
    values.setdefault("steps", min(DEFAULT_STEPS, plan.max_steps))
    check_plan(plan, values, steps_sent)
    sampler, scheduler = sampler_choice(values)
    check_eta(values, sampler)
    chosen, overrides = read_overrides(org, values["override_settings"])
    model = chosen or default_model(org, request.auth)
    if model is None:
        raise NotFound("Model not found: no default checkpoint is set up on this server.")
    prompt, loras = base.prompt_loras(values["prompt"], "prompt", error=Unprocessable)
    if values["disable_extra_networks"]:
        loras = []
    base.check_loras(loras, "prompt")
    fields = base.defaults(
        prompt=prompt,
        negative_prompt=values["negative_prompt"],
        width=values["width"],
        height=values["height"],
        samples=values["batch_size"] * values["n_iter"],
        steps=values["steps"],
        guidance_scale=values["guidance_scale"],
        seed=base.random_seed(values["seed"]),
        loras=loras,
        embeddings_model=embeddings_in(org, model, prompt, values["negative_prompt"]),
        **scheduler,
        **overrides,
    )
    images = submission.Inputs(org.pk)
    if kind == "txt2img":
        fields.update(hires_fields(body, values, plan))
    else:
        check_denoising_steps(values["strength"], values["steps"])
        fields["strength"] = values["strength"]
        fields.update(inpaint_inputs(body, values, images))
    job_kind = "inpaint" if fields.get("mask_image") else ENGINE_KINDS[kind]
    submission.resolve_model(request, model.model_id, job_kind, field="sd_model_checkpoint")
    submission.resolve_addons(request, model, fields, ADDON_FIELDS)
    submission.check_clip_skip(model, fields.get("clip_skip"), CLIP_SKIP_FIELD)
    if kind == "img2img":
        fields["init_image"] = images.load("init_images", fields["init_image"])
    return model, sampler, job_kind, fields
