"""From parsed fields to a queued job: the model, add-ons and input images, then submit.

Every wire format turns its own fields into GenerationRequest's names (see generation/api/base.py)
and calls `submit`; the model and input rules below are the same for all of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError

from accounts.auth import AnonymousKeyUser
from accounts.requests import OrgRequest
from billing import limits
from generation import addons, controlnet_units, fewstep, inputs, jobs, service
from generation.answers import base_url_for
from generation.engine import control, variations
from generation.engine.pipelines import kind_error, pipeline_family
from generation.engine.prompts import enhance, with_tokens
from generation.engine.request import CONTROLNET_KINDS, GenerationRequest
from generation.models import AIModel, Job, find_visible

DEFAULT_SIDE = 512
MIN_SIDE = 64
# A blocking format's wait chosen with `Prefer: wait=N` is at least this: it cannot answer a job
# id, so a shorter wait would only cancel the job.
MIN_BLOCKING_WAIT = 1
IDEMPOTENCY_HEADER = "Idempotency-Key"
# 1 to 255 printable ASCII characters (a UUID fits many times over).
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# Super resolution, whichever format asks: the largest output side whatever the plan (the
# input is small anyway), the smallest input side the upscaler takes, and its steps.
MAX_UPSCALE_SIDE = 2048
MIN_UPSCALE_INPUT = 8
UPSCALER_STEPS = 21


class GenerationTimedOut(APIException):
    """A blocking format waited PICTOR_BLOCKING_WAIT seconds; the job was canceled and refunded."""

    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_code = "timed_out"
    default_detail = "The image was not ready in time; the job was canceled and not charged."


class GenerationStillRunning(GenerationTimedOut):
    """A retry with an Idempotency-Key waited its time for the earlier request's job; it goes on."""

    default_code = "still_running"
    default_detail = (
        "The image was not ready in time; the job made for this Idempotency-Key goes on. "
        "Send the request again with the same key to get its image."
    )


class GenerationFailed(APIException):
    """The job itself failed in the worker (the only 5xx a format answers for its own input)."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "generation_failed"
    default_detail = "Generation failed; the credits were refunded."


class ModelNotFound(NotFound):
    """A 404 for a model the caller cannot see; `field` is the client's name for the field,
    for the formats whose errors name it (Hyperbolic's and OpenAI's `param`)."""

    def __init__(self, field: str) -> None:
        super().__init__("Model id not found")
        self.field = field


def resolve_model(
    request: OrgRequest, model_id: str | None, kind: str, field: str = "model_id"
) -> AIModel:
    """The requested checkpoint (or the default one), among those the caller may see.

    `field` is the client's name for the model field, so a 400 names what it sent.
    """
    model = find_visible(request.user.organization, model_id)
    if model is None:
        raise ModelNotFound(field)
    if not model.is_checkpoint:
        raise ValidationError(
            {
                field: [
                    f"{model.model_id} is a {model.get_family_display()} model, not a checkpoint."
                ]
            }
        )
    problem = kind_error(pipeline_family(model.family, model.base), kind)
    if problem:
        raise ValidationError({field: [problem]})
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

    def load(self, field: str, value: Any) -> Any:
        """The decoded image of a field: fetched or decoded from text, or already decoded."""
        if not isinstance(value, str):
            return value
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


def resolve_addons(
    request: OrgRequest,
    model: AIModel,
    fields: dict[str, Any],
    names: Mapping[str, str] | None = None,
) -> None:
    """Check every add-on the fields name (raising a 400 naming it) and put ids in `fields`.

    `names` maps an add-on field (lora_model, embeddings_model, vae, controlnet_model,
    ip_adapter) to the client's name for it where that differs, so the 400 names the field
    the client sent.
    """
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
        units = [unit["model"] for unit in fields.get("controlnet_units") or ()]
        if fields.get("controlnet_model"):
            addons.resolve(
                org,
                model,
                "controlnet_model",
                [fields["controlnet_model"], *units],
                AIModel.Family.CONTROLNET,
            )
        if fields.get("ip_adapter"):
            ip_adapter = [fields["ip_adapter"]]
            addons.resolve(org, model, "ip_adapter", ip_adapter, AIModel.Family.IP_ADAPTER)
    except addons.AddonError as exc:
        field = (names or {}).get(exc.field, exc.field)
        raise ValidationError({field: [exc.message]}) from None


def text_encoder_layers(model: AIModel, folder: str = "text_encoder") -> int | None:
    """How deep the checkpoint's text encoder is, from its folder's config (None if unknown)."""
    config = Path(model.local_path) / folder / "config.json"
    try:
        return int(json.loads(config.read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_clip_skip(model: AIModel, clip_skip: int | None, field: str = "clip_skip") -> None:
    """A clip_skip the checkpoint's text encoder has layers for (else the worker would fail).

    `field` is the client's name for it in the 400 (the message keeps saying clip_skip).
    """
    layers = text_encoder_layers(model) if clip_skip and clip_skip > 1 else None
    if layers is not None and clip_skip is not None and clip_skip > layers:
        raise ValidationError(
            {
                field: [
                    f"The text encoder of {model.model_id} has {layers} layers; "
                    f"clip_skip may be at most {layers}."
                ]
            }
        )


def check_clip_skip_2(model: AIModel, clip_skip_2: int | None) -> None:
    """clip_skip_2 only on an SDXL checkpoint, and no deeper than its second text encoder."""
    if clip_skip_2 is None:
        return
    if model.base != AIModel.Base.SDXL:
        message = f"The clip_skip_2 option needs an SDXL model; {model.model_id} is not one."
        raise ValidationError({"clip_skip_2": [message]})
    layers = text_encoder_layers(model, "text_encoder_2")
    if layers is not None and clip_skip_2 > layers:
        message = (
            f"The second text encoder of {model.model_id} has {layers} layers; "
            f"clip_skip_2 may be at most {layers}."
        )
        raise ValidationError({"clip_skip_2": [message]})


def build_request(
    request: OrgRequest,
    model: AIModel,
    fields: dict[str, Any],
    kind: str,
    images: Inputs,
    addons_resolved: bool = False,
    names: Mapping[str, str] | None = None,
) -> GenerationRequest:
    """The GenerationRequest for validated fields: add-ons checked, inputs stored.

    A format whose serializer already ran `resolve_addons` passes `addons_resolved`; `names`
    is resolve_addons' map to the client's field names.
    """
    plan = request.user.organization.plan
    fewstep.apply(model, fields, plan)
    if not addons_resolved:
        resolve_addons(request, model, fields, names)
    check_clip_skip(model, fields.get("clip_skip"))
    check_clip_skip_2(model, fields.get("clip_skip_2"))
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
    auto_hint = False
    if kind in CONTROLNET_KINDS:
        auto_hint = fields.pop("auto_hint")
        fields["controlnet_type"] = controlnet_units.default_type(
            fields["controlnet_type"], fields["controlnet_model"]
        )
        computed = fields["controlnet_type"] in control.COMPUTED_TYPES
        if ready is None and not (auto_hint and computed):
            # Like ModelsLab: without auto_hint the init image is the control image itself
            # (and with img2img or inpaint, also the picture to start from).
            ready, init = init, (init if kind != "controlnet" else None)
    source = init if init is not None else ready
    if source is not None and ("width" not in fields or "height" not in fields):
        width, height = fit_size(source, plan.max_side)
        fields.setdefault("width", width)
        fields.setdefault("height", height)
    fields.setdefault("width", DEFAULT_SIDE)
    fields.setdefault("height", DEFAULT_SIDE)
    # The IP-Adapter's image prompt is used as it is (the engine's processor resizes it).
    if fields.get("ip_adapter_image"):
        image_prompt = images.load("ip_adapter_image", fields["ip_adapter_image"])
        fields["ip_adapter_image"] = images.store(image_prompt, "ip_adapter_image")
    for name, image in (("init_image", init), ("mask_image", mask), ("control_image", ready)):
        fields[name] = images.store(image, name) if image is not None else ""
    if kind in CONTROLNET_KINDS:
        fields["controlnet_units"] = controlnet_units.store(
            fields.get("controlnet_units") or [],
            images,
            ready=fields["control_image"] or fields["init_image"],
            computes=auto_hint and bool(fields["init_image"]),
        )
    for name in ("highres_fix", "upscale"):
        fields.pop(name, None)
    return GenerationRequest(model_id=model.model_id, kind=kind, **fields)


def submit(
    request: OrgRequest,
    fields: dict[str, Any],
    kind: str,
    *,
    model_id: str | None = None,
    model: AIModel | None = None,
    model_required: bool = False,
    track_id: str = "",
    webhook: str = "",
    output_base64: bool = False,
    names: Mapping[str, str] | None = None,
) -> Job:
    """Resolve the model and add-ons, store the inputs, then queue and charge the job.

    A format whose serializer resolved the checkpoint and its add-ons itself (so its 400s name
    the client's fields) passes that checkpoint as `model`; one whose add-on fields have other
    names passes `names` (see resolve_addons).
    """
    # A retry with a used Idempotency-Key is answered before any input is fetched or stored.
    key = idempotency_key(request)
    if key:
        try:
            service.replay(request.user.organization, key, request_hash(request) or "")
        except service.Replayed as replayed:
            return replayed.job
    resolved = model is not None
    if model is None:
        if model_required and not model_id:
            raise ValidationError({"model_id": ["The model_id field is required."]})
        model = resolve_model(request, model_id, kind)
    images = Inputs(request.user.organization.pk)
    # ModelsLab's `temp` (shorter-lived image links) belongs to the job, not the generation.
    temp = bool(fields.pop("temp", False))
    # So do the webhook's events (a format's serializer checked them: webhooks.parse_events).
    webhook_events = fields.pop("webhook_events", None)
    try:
        req = build_request(
            request, model, fields, kind, images, addons_resolved=resolved, names=names
        )
        return queue(
            request,
            req,
            model,
            track_id=track_id,
            webhook=webhook,
            output_base64=output_base64,
            temp=temp,
            webhook_events=webhook_events,
        )
    except BaseException:
        images.discard()
        raise


def queue(
    request: OrgRequest,
    req: GenerationRequest,
    model: AIModel,
    *,
    track_id: str = "",
    webhook: str = "",
    output_base64: bool = False,
    temp: bool = False,
    part: int = 0,
    webhook_events: list[str] | None = None,
) -> Job:
    """Queue and charge a ready request for the caller (the spam filter sees the body as sent).

    `part` numbers the jobs of a request that queues several (a batch of upscales): the spam
    filter then sees each as a body of its own, not as the first one sent again.
    """
    # The formats check their own fields; this catches what only the whole request shows (a
    # hires pass with no step), so an accepted job never fails for a reason its params show.
    problems = req.problems()
    problems.update(variations.problems(req, pipeline_family(model.family, model.base)))
    if problems:
        raise ValidationError({name: [message] for name, message in problems.items()})
    key = idempotency_key(request)
    try:
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
            fingerprint=request_hash(request, part),
            temp=temp,
            webhook_events=webhook_events,
            # Each job of a request that queues several keeps a key of its own.
            idempotency_key=f"{key}#{part}" if key and part else key,
        )
    except service.Replayed as replayed:
        # The inputs this retry stored belong to no job: the original has its own.
        for name in req.input_images().values():
            default_storage.delete(name)
        return replayed.job


def idempotency_key(request: OrgRequest) -> str:
    """The request's Idempotency-Key header, checked; "" when it has none."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return ""
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise ValidationError(
            {
                IDEMPOTENCY_HEADER: [
                    "The Idempotency-Key must be 1 to 255 printable ASCII characters."
                ]
            }
        )
    if isinstance(request.user, AnonymousKeyUser):
        # Every anonymous caller shares one tenant: a key would hand one caller another's job.
        raise ValidationError(
            {IDEMPOTENCY_HEADER: ["An Idempotency-Key needs your own API key, not the public one."]}
        )
    return value


def request_hash(request: OrgRequest, part: int = 0) -> str | None:
    """The body as sent to this path, hashed without the key: the spam filter's fingerprint.

    The same hash tells a retry (same request) from a key reused for another request.
    """
    return limits.body_fingerprint(request.data, f"{request.path}#{part}" if part else request.path)


def queue_upscale(
    request: OrgRequest,
    model: AIModel,
    source: Any,
    scale: int,
    *,
    seed: int = 0,
    part: int = 0,
    **job: Any,
) -> Job:
    """Queue and charge a super-resolution job: `source` (an image) made `scale` times larger.

    The caller has checked the sizes (MIN_UPSCALE_INPUT, MAX_UPSCALE_SIDE) in its own field
    names; `job` takes queue()'s track_id, webhook, output_base64 and temp.
    """
    images = Inputs(request.user.organization.pk)
    try:
        req = GenerationRequest(
            prompt="",
            model_id=model.model_id,
            kind="upscale",
            init_image=images.store(source, "init_image"),
            width=source.width * scale,
            height=source.height * scale,
            scale=scale,
            steps=UPSCALER_STEPS,
            guidance_scale=1.0,
            seed=seed,
        )
        return queue(request, req, model, part=part, **job)
    except BaseException:
        images.discard()
        raise


def blocking_wait(request: OrgRequest | None) -> float:
    """Seconds a blocking format waits: PICTOR_BLOCKING_WAIT, or what the request's
    `Prefer: wait=N` chose (at least MIN_BLOCKING_WAIT)."""
    if request is None:
        return settings.PICTOR_BLOCKING_WAIT
    return service.wait_seconds(request, settings.PICTOR_BLOCKING_WAIT, minimum=MIN_BLOCKING_WAIT)


def wait_until_done(
    job: Job, request: OrgRequest | None = None, *, seconds: float | None = None
) -> Job:
    """Block like the hosted service: wait for the job; past the wait, cancel it (unless replayed).

    The wait is the request's `blocking_wait`, or `seconds`: what is left of one wait that
    several jobs of a request share.
    """
    job = service.wait_for(job, blocking_wait(request) if seconds is None else seconds)
    if job.replayed:
        # The job of an earlier request with the same Idempotency-Key: a retry answers what that
        # request was answered, and never cancels a job another request may still wait for.
        if job.status == Job.Status.CANCELED and job.error == jobs.NOT_READY_IN_TIME:
            raise GenerationTimedOut()
        if not job.is_finished:
            raise GenerationStillRunning()
    elif not job.is_finished:
        if jobs.cancel(job, jobs.NOT_READY_IN_TIME):
            raise GenerationTimedOut()
        job.refresh_from_db()
    if job.status != Job.Status.SUCCESS:
        raise GenerationFailed()
    return job
