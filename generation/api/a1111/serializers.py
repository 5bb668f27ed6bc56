"""The AUTOMATIC1111 request bodies and the checks on their values, in webui's field names.

A value outside its bounds is a 422 (FastAPI's shape, errors.Unprocessable); a valid value this
server (or the caller's plan) cannot honour is a 400 naming the field (errors.Refused, as DRF
would make a 422 of a ValidationError raised in validate()). The serializers carry
GenerationRequest's names where a wire field maps onto one engine field (`source=`); validate()
turns the rest (batch_size × n_iter, sampler_name, override_settings, the mask's settings) into
GenerationRequest's fields and resolves the checkpoint and its add-ons, in webui's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError

from accounts.models import Organization
from billing.models import Plan
from generation import submission
from generation.api import base
from generation.api.a1111 import controlnet
from generation.api.a1111.checkpoints import default_model, find_model
from generation.api.a1111.errors import Refused, Unprocessable, refuse_unstorable_names
from generation.api.a1111.inpaint import inpaint_inputs
from generation.api.a1111.refiner import refiner_fields
from generation.api.a1111.tables import (
    DEFAULT_CFG_SCALE,
    DEFAULT_HIRES_STRENGTH,
    DEFAULT_HIRES_UPSCALER,
    DEFAULT_IMG2IMG_STRENGTH,
    DEFAULT_SAMPLER,
    DEFAULT_SIDE,
    DEFAULT_STEPS,
    ENGINE_KINDS,
    FIXED_OPTIONS,
    HIRES_FACTORS,
    HIRES_NOT_HONOURED,
    HIRES_UPSCALERS,
    INPAINT_NOT_HONOURED,
    MAX_BATCH_SIZE,
    MAX_CFG_SCALE,
    MAX_CLIP_SKIP,
    MAX_N_ITER,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    NOT_HONOURED,
    SAMPLER_ALIASES,
    SAMPLER_ETA,
    SAMPLERS_NOT_OFFERED,
    SCHEDULERS_NOT_OFFERED,
    WEIGHT_SUFFIXES,
)
from generation.api.base import MAX_IMAGE_FIELD, MAX_PROMPT_LENGTH, MAX_SEED, FiniteFloatField
from generation.engine.request import (
    MASK_BLUR,
    MAX_INPAINT_PADDING,
    MAX_MASK_BLUR,
    MAX_OUTPUT_QUALITY,
    MIN_OUTPUT_QUALITY,
)
from generation.engine.schedulers import A1111_SAMPLERS, usable_scheduler_error
from generation.models import AIModel

if TYPE_CHECKING:
    from accounts.requests import KeyRequest

# txt2img's hires fix fields; webui's img2img has none.
HIRES_FIELDS = ("enable_hr", "hr_scale", "hr_upscaler", "hr_prompt", "hr_negative_prompt")
# The add-ons' fields of GenerationRequest by where A1111 names them: LoRAs and embeddings in
# the prompt, the VAE in override_settings.
ADDON_FIELDS = {
    "lora_model": "prompt",
    "embeddings_model": "prompt",
    "vae": "override_settings.sd_vae",
}
CLIP_SKIP_FIELD = "override_settings.CLIP_stop_at_last_layers"


def prompt_field() -> serializers.CharField:
    return serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, allow_blank=True, default="", trim_whitespace=False
    )


class Txt2ImgBody(base.CopiedFields):
    """The txt2img fields this server reads, with the bounds a value must be within (else 422)."""

    # The field order is the order of a 422's entries (and of the schema's properties).

    prompt = prompt_field()
    negative_prompt = prompt_field()
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, default=-1)
    subseed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, default=-1)
    # Variation seeds: each image's noise goes this far from its seed's towards its subseed's.
    subseed_strength = FiniteFloatField(min_value=0, max_value=1, default=0.0)
    # A webui sampler name, not the engine's scheduler class: read by sampler_choice.
    sampler_name = serializers.CharField(max_length=100, allow_blank=True, required=False)
    sampler_index = serializers.CharField(max_length=100, allow_blank=True, required=False)
    scheduler = serializers.CharField(max_length=100, allow_blank=True, required=False)
    # Images per batch: the engine's `samples` is batch_size × n_iter.
    batch_size = serializers.IntegerField(min_value=1, max_value=MAX_BATCH_SIZE, default=1)
    n_iter = serializers.IntegerField(min_value=1, max_value=MAX_N_ITER, default=1)
    steps = serializers.IntegerField(min_value=1, max_value=MAX_STEPS, required=False)
    cfg_scale = FiniteFloatField(
        min_value=1, max_value=MAX_CFG_SCALE, default=DEFAULT_CFG_SCALE, source="guidance_scale"
    )
    width = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, default=DEFAULT_SIDE)
    height = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, default=DEFAULT_SIDE)
    # Seamless textures: the image wraps around at its edges.
    tiling = serializers.BooleanField(default=False)
    eta = FiniteFloatField(min_value=0, max_value=1, required=False)
    # txt2img's denoising_strength is the hires fix's second pass.
    denoising_strength = FiniteFloatField(
        min_value=0, max_value=1, required=False, source="hires_strength"
    )
    enable_hr = serializers.BooleanField(default=False)
    # A float on the wire; hires_fields takes whole factors only.
    hr_scale = FiniteFloatField(
        min_value=1, max_value=max(HIRES_FACTORS), default=2.0, source="hires_scale"
    )
    hr_upscaler = serializers.CharField(max_length=100, allow_blank=True, required=False)
    hr_prompt = prompt_field()
    hr_negative_prompt = prompt_field()
    # Read only with enable_hr (tables.HIRES_NOT_HONOURED), but typed always, as webui's model is.
    hr_resize_x = serializers.IntegerField(required=False)
    hr_resize_y = serializers.IntegerField(required=False)
    hr_second_pass_steps = serializers.IntegerField(required=False)
    hr_checkpoint_name = serializers.CharField(
        max_length=300, allow_null=True, allow_blank=True, required=False
    )
    hr_sampler_name = serializers.CharField(
        max_length=100, allow_null=True, allow_blank=True, required=False
    )
    hr_scheduler = serializers.CharField(
        max_length=100, allow_null=True, allow_blank=True, required=False
    )
    override_settings = serializers.DictField(required=False, default=dict)
    # A refiner checkpoint's title or name ("None": off), and where it takes over (refiner.py).
    refiner_checkpoint = serializers.CharField(max_length=300, allow_blank=True, required=False)
    refiner_switch_at = FiniteFloatField(min_value=0, max_value=1, required=False)
    disable_extra_networks = serializers.BooleanField(default=False)
    send_images = serializers.BooleanField(default=True)
    save_images = serializers.BooleanField(default=False)

    kind = "txt2img"

    def validate_width(self, value: int) -> int:
        return base.check_multiple_of_8("width", value)

    def validate_height(self, value: int) -> int:
        return base.check_multiple_of_8("height", value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # (A comment, not a docstring: that is the schema's description.) Context: "org",
        # "plan", "request" and "body" (the object as sent). Adds "checkpoint", "sampler",
        # "job_kind" and "fields" (GenerationRequest's) to the values.
        try:
            return request_fields(self.context, attrs, self.kind)
        except ValidationError as exc:
            raise Refused(exc) from None


class Img2ImgBody(Txt2ImgBody):
    """img2img adds the init image, an optional mask (inpaint) and their settings."""

    init_images = serializers.ListField(
        child=serializers.CharField(max_length=MAX_IMAGE_FIELD), allow_empty=False
    )
    mask = serializers.CharField(
        max_length=MAX_IMAGE_FIELD, allow_blank=True, required=False, source="mask_image"
    )
    # Declared again, it keeps txt2img's place in the field order.
    denoising_strength = FiniteFloatField(
        min_value=0, max_value=1, default=DEFAULT_IMG2IMG_STRENGTH, source="strength"
    )
    resize_mode = serializers.IntegerField(min_value=0, max_value=3, default=0)
    mask_blur_x = serializers.IntegerField(min_value=0, max_value=MAX_MASK_BLUR, default=MASK_BLUR)
    mask_blur_y = serializers.IntegerField(min_value=0, max_value=MAX_MASK_BLUR, default=MASK_BLUR)
    # Sets both mask_blur_x and mask_blur_y, as in webui.
    mask_blur = serializers.IntegerField(min_value=0, max_value=MAX_MASK_BLUR, required=False)
    inpainting_fill = serializers.IntegerField(min_value=0, max_value=3, default=0)
    # "Only masked": inpaint the mask's box plus the padding at width × height, paste it back.
    # True by default, as in webui's API, so a client that leaves it out gets what webui does.
    inpaint_full_res = serializers.BooleanField(default=True)
    inpaint_full_res_padding = serializers.IntegerField(
        min_value=0, max_value=MAX_INPAINT_PADDING, default=0
    )
    inpainting_mask_invert = serializers.IntegerField(min_value=0, max_value=1, default=0)
    include_init_images = serializers.BooleanField(default=False)

    kind = "img2img"

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for name in HIRES_FIELDS:
            del fields[name]
        return fields


def read_body(data: Any) -> dict[str, Any]:
    """The JSON object sent, `null` values meaning "default" as in webui's pydantic models."""
    if not isinstance(data, dict):
        raise Unprocessable({"": ["The request body must be a JSON object."]})
    return {k: v for k, v in data.items() if v is not None}


def validated(
    body_class: type[Txt2ImgBody], body: dict[str, Any], request: KeyRequest
) -> dict[str, Any]:
    """The body's values within their bounds (engine names where `source=` says), or a 422.

    Also "checkpoint", "sampler", "job_kind" and "fields" (Txt2ImgBody.validate).
    """
    org = request.user.organization
    context = {"org": org, "plan": org.plan, "request": request, "body": body}
    serializer = body_class(data=body, context=context)
    if not serializer.is_valid():
        raise Unprocessable(serializer.errors)
    return dict(serializer.validated_data)


def is_default(value: Any, accepted: tuple[Any, ...]) -> bool:
    """Whether a sent value means "leave this feature off" (null, empty, or a listed default).

    Not ModelsLab's is_default_value: that one also takes any false-ish word ("no", "0") and
    any zero, as ModelsLab's loose clients send them; webui's pydantic fields only ever hold a
    feature off with its own default, so any other value here is a 400.
    """
    return value in (None, "", [], {}) or any(value == a for a in accepted)


def refuse_unhonoured(body: dict[str, Any], table: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    """A 400 naming each field whose value asks for a feature this server does not offer."""
    refused = {
        name: [f"{reason} (got {body[name]!r})"]
        for name, (accepted, reason) in table.items()
        if name in body and not is_default(body[name], accepted)
    }
    if refused:
        raise ValidationError(refused)


def sampler_choice(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(webui sampler name, scheduler fields) for sampler_name/sampler_index and scheduler."""
    sent = values.get("sampler_name") or values.get("sampler_index") or DEFAULT_SAMPLER
    by_index = not values.get("sampler_name") and bool(values.get("sampler_index"))
    field = "sampler_index" if by_index else "sampler_name"
    lookup = {name.lower(): name for name in A1111_SAMPLERS}
    lookup.update({alias: name for name, aliases in SAMPLER_ALIASES.items() for alias in aliases})
    name = lookup.get(sent.strip().lower(), sent.strip())
    if name.lower() in (n.lower() for n in SAMPLERS_NOT_OFFERED):
        offered = ", ".join(base.usable_samplers())
        raise ValidationError({field: [f"{name} is not offered here; choose one of: {offered}."]})
    try:
        fields = base.sampler_fields(name, field)
    except ValidationError as exc:
        raise Unprocessable(exc.detail) from None
    schedule = (values.get("scheduler") or "automatic").strip().lower()
    if schedule == "karras":
        fields["use_karras_sigmas"] = True
    elif schedule != "automatic":
        if schedule in SCHEDULERS_NOT_OFFERED:
            raise ValidationError(
                {
                    "scheduler": [
                        f"The {values['scheduler']} schedule is not offered here; "
                        "use Automatic or Karras."
                    ]
                }
            )
        raise Unprocessable({"scheduler": ["Unknown scheduler; use Automatic or Karras."]})
    problem = usable_scheduler_error(
        fields["scheduler"], fields["use_karras_sigmas"], fields["algorithm_type"]
    )
    if problem:
        blame = "scheduler" if schedule == "karras" else field
        raise ValidationError({blame: [problem]})
    return name, fields


def check_eta(values: dict[str, Any], sampler: str) -> None:
    """eta acts on ancestral, SDE and DDIM samplers; the engine runs each with one value."""
    eta = values.get("eta")
    if eta is None or sampler not in SAMPLER_ETA:
        return
    if eta != SAMPLER_ETA[sampler]:
        raise ValidationError(
            {"eta": [f"{sampler} runs with eta {SAMPLER_ETA[sampler]:g} here; send that or null."]}
        )


# override_settings.samples_format: webui's spellings of the engine's output formats.
SAMPLES_FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}


def read_overrides(
    organization: Organization, overrides: dict[str, Any]
) -> tuple[AIModel | None, dict[str, Any]]:
    """override_settings: the checkpoint, clip skip and VAE it asks for (400 for the rest)."""
    model = None
    fields: dict[str, Any] = {}
    refuse_unstorable_names(overrides, "override_settings")
    for key, value in overrides.items():
        name = f"override_settings.{key}"
        if value is None:
            continue
        if key == "sd_model_checkpoint":
            model = find_model(organization, value, name)
        elif key == "CLIP_stop_at_last_layers":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise Unprocessable({name: ["Must be an integer."]})
            # Its digits are counted before int() sees them (5,000 digits would be a 500).
            layers = base.bounded_int(value, 1, MAX_CLIP_SKIP)
            if layers is None:
                raise Unprocessable({name: [f"Must be an integer between 1 and {MAX_CLIP_SKIP}."]})
            fields["clip_skip"] = layers if layers > 1 else None
        elif key == "sd_vae":
            vae = str(value).strip()
            if not base.is_storable(vae):
                raise Unprocessable({name: [f"The VAE name {base.UNSTORABLE_TEXT}."]})
            if vae not in ("Automatic", "None", ""):
                fields["vae"] = next(
                    (vae[: -len(s)] for s in WEIGHT_SUFFIXES if vae.endswith(s)), vae
                )
        elif key == "samples_format":
            wanted = SAMPLES_FORMATS.get(value.strip().lower()) if isinstance(value, str) else None
            if wanted is None:
                raise Unprocessable({name: ["Must be one of: png, jpg, webp."]})
            fields["output_format"] = wanted
        elif key == "jpeg_quality":
            # webui uses it for JPEG and WebP alike; PNG ignores it.
            quality = base.bounded_int(value, MIN_OUTPUT_QUALITY, MAX_OUTPUT_QUALITY)
            if quality is None:
                raise Unprocessable(
                    {
                        name: [
                            f"Must be an integer between {MIN_OUTPUT_QUALITY} and "
                            f"{MAX_OUTPUT_QUALITY}."
                        ]
                    }
                )
            fields["output_quality"] = quality
        elif key not in FIXED_OPTIONS or value != FIXED_OPTIONS[key]:
            raise ValidationError(
                {
                    name: [
                        "Only sd_model_checkpoint, CLIP_stop_at_last_layers, sd_vae, "
                        "samples_format and jpeg_quality can be overridden on this server."
                    ]
                }
            )
    return model, fields


def check_plan(plan: Plan, values: dict[str, Any], steps_sent: bool) -> None:
    """The plan's limits on size, steps and images (a 400 naming the field)."""
    base.check_sides(plan, values)
    if steps_sent:
        base.check_steps(plan, "steps", values["steps"])
    base.check_samples(plan, "batch_size", values["batch_size"])
    total = values["batch_size"] * values["n_iter"]
    if total > plan.max_samples:
        raise ValidationError(
            {
                "n_iter": [
                    f"batch_size × n_iter ({total}) may not be greater than "
                    f"{plan.max_samples} on the {plan.name} plan."
                ]
            }
        )


def hires_fields(body: dict[str, Any], values: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """enable_hr: the engine's latent upscale by an integer factor, within the plan."""
    if not values["enable_hr"]:
        return {}
    refuse_unhonoured(body, HIRES_NOT_HONOURED)
    upscaler = values.get("hr_upscaler") or DEFAULT_HIRES_UPSCALER
    if upscaler not in HIRES_UPSCALERS:
        raise ValidationError(
            {"hr_upscaler": [f"Only the latent upscale is offered ({', '.join(HIRES_UPSCALERS)})."]}
        )
    for name, main in (("hr_prompt", "prompt"), ("hr_negative_prompt", "negative_prompt")):
        if values[name] and values[name] != values[main]:
            raise ValidationError({name: [f"The second pass uses the {main}; leave {name} empty."]})
    factor = values["hires_scale"]
    if factor != int(factor) or int(factor) not in HIRES_FACTORS:
        raise ValidationError(
            {"hr_scale": [f"The hires fix upscales by 2, 3 or 4 (a whole number), not {factor:g}."]}
        )
    factor = int(factor)
    base.check_upscaled(plan, "hr_scale", values["width"], values["height"], factor)
    strength = values.get("hires_strength")
    strength = DEFAULT_HIRES_STRENGTH if strength is None else strength
    check_denoising_steps(strength, values["steps"])
    mode, antialias = HIRES_UPSCALERS[upscaler]
    return {
        "hires_scale": factor,
        "hires_strength": strength,
        "hires_mode": mode,
        "hires_antialias": antialias,
    }


def check_denoising_steps(strength: float, steps: int) -> None:
    """A pass of strength × steps < 1 steps would run none (the engine cannot do that)."""
    if int(steps * strength) < 1:
        raise ValidationError(
            {
                "denoising_strength": [
                    f"With denoising_strength {strength:g} and {steps} steps no denoising step "
                    "would run; raise one of them."
                ]
            }
        )


def embeddings_in(organization: Organization, model: AIModel, *prompts: str) -> list[str]:
    """The embeddings (fitting the checkpoint) that a prompt names, as webui finds them."""
    if model.base == AIModel.Base.SDXL:
        return []
    visible = AIModel.objects.visible_to(organization).filter(
        family=AIModel.Family.EMBEDDING, base=model.base
    )
    names = visible.order_by("model_id").values_list("model_id", flat=True)
    return base.named_in(names, "\n".join(prompts))


def request_fields(context: Mapping[str, Any], values: dict[str, Any], kind: str) -> dict[str, Any]:
    """The values plus the checkpoint, sampler, engine kind and GenerationRequest's fields.

    The steps run in the order a body's errors are reported in: this server's refusals and the
    plan's limits, the sampler, override_settings, the prompt's LoRA tags, the hires fix or the
    init image and mask; then the checkpoint's fit for the job, its add-ons and clip skip, and
    last the init image (decoded: submit takes it so).
    """
    request: KeyRequest = context["request"]
    org: Organization = context["org"]
    plan: Plan = context["plan"]
    body: dict[str, Any] = context["body"]
    refuse_unhonoured(body, NOT_HONOURED)
    units = controlnet.enabled_units(body, kind)
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
        # Drawn here, so the answer's info reports the subseeds used.
        subseed=base.random_seed(values["subseed"]),
        subseed_strength=values["subseed_strength"],
        tiling=values["tiling"],
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
        if values.get("mask_image"):
            refuse_unhonoured(body, INPAINT_NOT_HONOURED)
        fields.update(inpaint_inputs(values, images, fields.get("output_format") or "png"))
    job_kind = "inpaint" if fields.get("mask_image") else ENGINE_KINDS[kind]
    if units:
        job_kind = controlnet.apply_units(org, model, units, fields, job_kind, images)
    submission.resolve_model(request, model.model_id, job_kind, field="sd_model_checkpoint")
    submission.resolve_addons(request, model, fields, ADDON_FIELDS)
    fields.update(refiner_fields(org, model, values, job_kind, fields.get("hires_scale", 1)))
    submission.check_clip_skip(model, fields.get("clip_skip"), CLIP_SKIP_FIELD)
    if kind == "img2img":
        fields["init_image"] = images.load("init_images", fields["init_image"])
    return {
        **values,
        "checkpoint": model,
        "sampler": sampler,
        "job_kind": job_kind,
        "fields": fields,
    }
