"""The AUTOMATIC1111 wire format (docs/architecture.md): webui's `/sdapi/v1/` API.

    POST /sdapi/v1/txt2img, /sdapi/v1/img2img   wait for the images, then answer
         {"images": [b64 png], "parameters": {...}, "info": "<json>"}
    GET  /sdapi/v1/sd-models, samplers, schedulers, loras, embeddings, options, progress
    POST /sdapi/v1/options    {"sd_model_checkpoint": ...} sets this key's default model
    POST /sdapi/v1/interrupt, /sdapi/v1/skip    cancel the caller's own jobs

The key travels as the password of HTTP Basic (`--api-auth user:key`; any user name) or as a
Bearer token. Errors keep webui's (FastAPI's) shapes: 422 `{"detail": [{"loc": ["body", field],
"msg", "type"}]}` for a value that is not valid A1111 input; 401 `{"detail": "Incorrect username
or password"}` with `WWW-Authenticate: Basic`; 404 `{"detail": ...}`; every other error webui's
`{"error": <type>, "detail", "body", "errors"}` with its status: 400 for valid input this server
(or the caller's plan) cannot honour, naming the field.

Where Pictor differs from webui, on purpose:
- The model is per key, not server-wide: POST /options changes the model of this key's later
  requests only. `override_settings.sd_model_checkpoint` picks one per request (a title with or
  without its " [hash]", a model_name, a hash or a sha256). Models are diffusers folders, so a
  title is "<model_id>.safetensors [hash]" and `sha256` is the SHA-256 of the model id (UTF-8),
  not of the weights: stable for a registered model, and no multi-GB file is read to list them.
- `steps` defaults to 20 (webui's API says 50), lowered to the plan's largest step count if
  that is smaller; an explicit value above it is a 400. `sampler_name` defaults to "Euler a".
- `n_iter` batches are one job: batch_size × n_iter images, seeds seed, seed+1, ... (as webui
  numbers them), at most the plan's samples.
- Hires fix (`enable_hr`) is the engine's latent upscale by an integer `hr_scale` of 2, 3 or 4
  (any "Latent" `hr_upscaler`; the latents are upscaled nearest), second pass strength
  `denoising_strength` (default 0.7), steps as webui's `hr_second_pass_steps: 0`.
- img2img: one init image; `mask` makes it an inpaint; the mask edge is blurred by 4 px (webui's
  default `mask_blur`, the only one offered); `inpainting_fill` 0 (fill, the default) and 1
  (original); `inpainting_mask_invert`; "whole picture" only (`inpaint_full_res` false is the
  default here, true is a 400); `resize_mode` 0 (just resize).
- `save_images`, `do_not_save_*`, `force_task_id`, `comments` and
  `override_settings_restore_afterwards` are ignored: nothing is saved besides the job's own
  images, and override_settings never outlive the request. `image_cfg_scale` only acts on
  instruct-pix2pix models, which Pictor does not serve, so it is ignored as webui ignores it.
- An interrupted request answers 200 with no images (webui returns its partial result);
  the job is canceled and refunded.
- The safety checker runs as on every Pictor format.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.files.storage import default_storage
from django.http import HttpResponse
from django.urls import path
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from PIL import Image, ImageFilter, ImageOps
from rest_framework import exceptions, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiKey, Organization
from billing.models import Plan
from generation import estimates, inputs, jobs, submission
from generation.api import base
from generation.api.base import MAX_IMAGE_FIELD, MAX_PROMPT_LENGTH, MAX_SEED, FormatView
from generation.api.errors import Problem, describe, respond
from generation.engine.addons import EMBEDDING_FILE, weight_file
from generation.engine.prompts import PromptError, extract_lora_tags
from generation.engine.runner import MASK_BLUR
from generation.engine.schedulers import A1111_SAMPLERS, usable_scheduler_error
from generation.models import AIModel, Job

TAG = "AUTOMATIC1111"
DEFAULT_STEPS = 20
DEFAULT_SAMPLER = "Euler a"
DEFAULT_CFG_SCALE = 7.0
DEFAULT_SIDE = 512
MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_CFG_SCALE = 30
# webui's batch size slider stops at 8 and batch count at 100; the plan's samples bind first.
MAX_BATCH_SIZE = 8
MAX_N_ITER = 100
MAX_CLIP_SKIP = 12
HIRES_FACTORS = (2, 3, 4)
DEFAULT_HIRES_STRENGTH = 0.7
DEFAULT_IMG2IMG_STRENGTH = 0.75
INCORRECT_KEY = "Incorrect username or password"
CHECKSUM_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")
WEIGHT_SUFFIXES = (".safetensors", ".ckpt")

# GenerationRequest's names for the fields A1111 calls otherwise (errors are renamed back).
WIRE_NAMES = {
    "model_id": "sd_model_checkpoint",
    "guidance_scale": "cfg_scale",
    "samples": "batch_size",
    "init_image": "init_images",
    "mask_image": "mask",
    "strength": "denoising_strength",
    "lora_model": "prompt",
    "embeddings_model": "prompt",
    "vae": "override_settings.sd_vae",
    "clip_skip": "override_settings.CLIP_stop_at_last_layers",
    "hires_scale": "hr_scale",
    "hires_strength": "denoising_strength",
}

# k-diffusion names webui also accepts for its samplers.
SAMPLER_ALIASES = {
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "LMS Karras": ["k_lms_ka"],
    "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"],
    "DPM2 Karras": ["k_dpm_2_ka"],
    "DPM2 a": ["k_dpm_2_a"],
    "DPM2 a Karras": ["k_dpm_2_a_ka"],
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DPM++ 2M Karras": ["k_dpmpp_2m_ka"],
    "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM++ 2M SDE Karras": ["k_dpmpp_2m_sde_ka"],
    "DDIM": ["ddim"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
    "LCM": ["k_lcm"],
}
# webui samplers this server does not offer: a 400 (a known feature), not a 422 (a typo).
SAMPLERS_NOT_OFFERED = (
    "DPM++ 2S a",
    "DPM++ 2S a Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Exponential",
    "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE",
    "DPM++ 3M SDE Karras",
    "DPM++ 3M SDE Exponential",
    "DPM fast",
    "DPM adaptive",
    "Restart",
)
# The eta each sampler runs with in the engine; webui's eta only acts on these samplers.
SAMPLER_ETA = {
    "Euler a": 1.0,
    "DPM2 a": 1.0,
    "DPM2 a Karras": 1.0,
    "DPM++ 2M SDE": 1.0,
    "DPM++ 2M SDE Karras": 1.0,
    "DDIM": 0.0,
}

# webui 1.9+ schedulers (the sigma schedule, separate from the sampler). "Automatic" keeps the
# sampler's own schedule; "Karras" turns on Karras sigmas.
SCHEDULERS = [
    {
        "name": "automatic",
        "label": "Automatic",
        "aliases": None,
        "default_rho": -1,
        "need_inner_model": False,
    },
    {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    },
]
SCHEDULERS_NOT_OFFERED = (
    "uniform",
    "exponential",
    "polyexponential",
    "sgm_uniform",
    "sgm uniform",
    "kl_optimal",
    "kl optimal",
    "align_your_steps",
    "align your steps",
    "simple",
    "normal",
    "ddim",
    "beta",
)

# Settings whose value here never changes; override_settings or POST /options may repeat them.
FIXED_OPTIONS: dict[str, Any] = {
    "samples_format": "png",
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "enable_pnginfo": True,
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
}
HIRES_UPSCALERS = ("Latent", "Latent (nearest)", "Latent (nearest-exact)")
# The engine's name for each endpoint's job (img2img with a mask is an inpaint).
ENGINE_KINDS = {"txt2img": "text2img", "img2img": "img2img"}


def is_default(value: Any, accepted: tuple[Any, ...]) -> bool:
    """Whether a sent value means "leave this feature off" (null, empty, or a listed default)."""
    return value in (None, "", [], {}) or any(value == a for a in accepted)


# webui fields for features this server does not offer: (values that mean "off", the reason).
# Any other value is a 400 naming the field, never a silently different image.
NOT_HONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "restore_faces": ((False,), "Face restoration is not offered by this server."),
    "tiling": ((False,), "Tiling is not offered by this server."),
    "styles": ((), "Prompt styles are not offered by this server; put the text in the prompt."),
    "alwayson_scripts": ((), "Scripts and extensions are not offered by this server."),
    "script_name": (("None",), "Scripts are not offered by this server."),
    "script_args": ((), "Scripts are not offered by this server."),
    "subseed_strength": ((0,), "Variation seeds are not offered by this server."),
    "seed_resize_from_w": ((-1, 0), "Resizing the seed is not offered by this server."),
    "seed_resize_from_h": ((-1, 0), "Resizing the seed is not offered by this server."),
    "s_min_uncond": ((0,), "Negative guidance minimum sigma is not offered by this server."),
    "s_churn": ((0,), "Sigma churn is not offered by this server."),
    "s_tmin": ((0,), "Sigma tmin is not offered by this server."),
    "s_tmax": ((0,), "Sigma tmax is not offered by this server."),
    "s_noise": ((1,), "Sigma noise is not offered by this server."),
    "refiner_checkpoint": (("None",), "A refiner checkpoint is not offered by this server."),
    "firstphase_width": ((0,), "Use width, height and hr_scale."),
    "firstphase_height": ((0,), "Use width, height and hr_scale."),
    "infotext": ((), "Reading parameters from an infotext is not offered by this server."),
    "initial_noise_multiplier": ((1,), "A noise multiplier is not offered by this server."),
    "firstpass_image": ((), "Starting the hires fix from an image is not offered by this server."),
}
# Hires fix settings: only read (and only refused) when enable_hr is on, as webui reads them.
HIRES_NOT_HONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "hr_resize_x": ((0,), "Give the upscale as hr_scale (2, 3 or 4) instead."),
    "hr_resize_y": ((0,), "Give the upscale as hr_scale (2, 3 or 4) instead."),
    "hr_second_pass_steps": ((0,), "The second pass runs denoising_strength × steps steps."),
    "hr_checkpoint_name": (
        ("Use same checkpoint",),
        "The second pass uses the same checkpoint.",
    ),
    "hr_sampler_name": (("Use same sampler",), "The second pass uses the same sampler."),
    "hr_scheduler": (("Use same scheduler",), "The second pass uses the same scheduler."),
}
# Inpainting settings: only read (and only refused) when a mask is sent.
INPAINT_NOT_HONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "mask_blur": ((MASK_BLUR,), f"The mask edge is always blurred by {MASK_BLUR} px."),
    "mask_blur_x": ((MASK_BLUR,), f"The mask edge is always blurred by {MASK_BLUR} px."),
    "mask_blur_y": ((MASK_BLUR,), f"The mask edge is always blurred by {MASK_BLUR} px."),
    "inpaint_full_res": (
        (False, 0),
        "Only the whole picture is inpainted here; send inpaint_full_res: false.",
    ),
    "inpainting_fill": ((0, 1), "Only 0 (fill) and 1 (original) are offered."),
    "latent_mask": ((), "A separate latent mask is not offered by this server."),
    "mask_round": ((True,), "The mask is always rounded to black and white in latent space."),
}


# --- errors -------------------------------------------------------------------------------


class Unprocessable(exceptions.APIException):
    """A value that is not valid A1111 input: FastAPI's 422 with one entry per bad field."""

    status_code = 422
    default_code = "unprocessable"

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__("Unprocessable")
        self.errors = errors


def validation_entries(errors: Any, loc: list[str]) -> list[dict[str, Any]]:
    """FastAPI's `detail` list for DRF-style errors ({field: [messages]}, nested for dicts)."""
    if isinstance(errors, dict):
        return [
            entry
            for name, value in errors.items()
            for entry in validation_entries(value, [*loc, *filter(None, str(name).split("."))])
        ]
    if isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
        return [{"loc": loc, "msg": " ".join(str(e) for e in errors), "type": "value_error"}]
    if isinstance(errors, list):
        return [entry for e in errors for entry in validation_entries(e, loc)]
    return [{"loc": loc, "msg": str(errors), "type": "value_error"}]


def error_body(problem: Problem, name: str = "HTTPException") -> dict[str, Any]:
    """webui's error body: FastAPI's {"detail"} for 401/404/405, else its handler's four keys."""
    if problem.status in (401, 404, 405):
        return {"detail": problem.text}
    return {"error": name, "detail": problem.text, "body": "", "errors": problem.text}


def handle_exception(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every A1111 view's errors, in webui's shapes."""
    if isinstance(exc, Unprocessable):
        return Response({"detail": validation_entries(exc.errors, ["body"])}, status=422)
    if isinstance(exc, exceptions.ParseError):
        detail = [{"loc": ["body"], "msg": str(exc.detail), "type": "value_error.jsondecode"}]
        return Response({"detail": detail}, status=422)
    problem = describe(exc, context)
    if problem is None:
        return None
    if problem.status == 401:
        problem.message = INCORRECT_KEY
        # webui's --api-auth answer: clients (and browsers) then send Basic credentials.
        problem.headers["WWW-Authenticate"] = "Basic"
    return respond(error_body(problem, type(exc).__name__), problem)


# --- models by webui's names ----------------------------------------------------------------


def file_name(model: AIModel) -> str:
    """The model's webui file name: its id and the weights' suffix (folders hold safetensors)."""
    suffix = Path(model.path).suffix
    return model.model_id + (suffix if suffix in WEIGHT_SUFFIXES else ".safetensors")


def model_sha256(model: AIModel) -> str:
    """A stable stand-in for webui's weights hash: the SHA-256 of the model id (UTF-8)."""
    return hashlib.sha256(model.model_id.encode()).hexdigest()


def short_hash(model: AIModel) -> str:
    """webui's short hash: the first 10 hex digits of the sha256."""
    return model_sha256(model)[:10]


def model_title(model: AIModel) -> str:
    """webui's checkpoint title, e.g. "demo-sd15.safetensors [0123456789]"."""
    return f"{file_name(model)} [{short_hash(model)}]"


def model_names(model: AIModel) -> set[str]:
    """Every name webui accepts for a checkpoint: title, file name, model name, hashes."""
    return {
        model.model_id,
        file_name(model),
        model_title(model),
        short_hash(model),
        model_sha256(model),
    }


def find_model(organization: Organization, name: Any, field: str) -> AIModel:
    """The checkpoint `name` calls, among those the organization may use (404 like webui)."""
    if not isinstance(name, str) or not name.strip():
        raise Unprocessable({field: ["Give a checkpoint title or model name."]})
    if not base.is_storable(name):
        raise Unprocessable({field: [f"The name {base.UNSTORABLE_TEXT}."]})
    wanted = name.strip()
    bare = CHECKSUM_SUFFIX.sub("", wanted)
    visible = list(AIModel.objects.visible_to(organization).order_by("model_id"))
    model = next((m for m in visible if wanted in model_names(m)), None) or next(
        (m for m in visible if bare in model_names(m)), None
    )
    if model is None:
        raise NotFound(f"Model not found: {wanted}")
    if not model.is_checkpoint:
        raise ValidationError(
            {field: [f"{wanted} is a {model.get_family_display()} model, not a checkpoint."]}
        )
    return model


def default_model(organization: Organization, key: ApiKey | None) -> AIModel | None:
    """The key's own default checkpoint (POST /options) while it is usable, else the server's."""
    visible = AIModel.objects.visible_to(organization).filter(family__in=AIModel.CHECKPOINTS)
    if key is not None and key.default_model_id:
        model = visible.filter(pk=key.default_model_id).first()
        if model is not None:
            return model
    return visible.filter(is_default=True).first()


def options(organization: Organization, key: ApiKey | None) -> dict[str, Any]:
    """The settings GET /options reports for this key."""
    model = default_model(organization, key)
    return {
        "sd_model_checkpoint": model_title(model) if model else None,
        "sd_checkpoint_hash": model_sha256(model) if model else None,
        **FIXED_OPTIONS,
    }


# --- request bodies -------------------------------------------------------------------------


class FiniteFloatField(serializers.FloatField):
    """A float that is a number (JSON has no NaN, but "nan" as text would pass min/max)."""

    def to_internal_value(self, data: Any) -> float:
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class Txt2ImgBody(serializers.Serializer):
    """The txt2img fields this server reads, with the bounds a value must be within (else 422)."""

    prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, allow_blank=True, default="", trim_whitespace=False
    )
    negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, allow_blank=True, default="", trim_whitespace=False
    )
    seed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, default=-1)
    subseed = serializers.IntegerField(min_value=-1, max_value=MAX_SEED, default=-1)
    sampler_name = serializers.CharField(max_length=100, allow_blank=True, required=False)
    sampler_index = serializers.CharField(max_length=100, allow_blank=True, required=False)
    scheduler = serializers.CharField(max_length=100, allow_blank=True, required=False)
    batch_size = serializers.IntegerField(min_value=1, max_value=MAX_BATCH_SIZE, default=1)
    n_iter = serializers.IntegerField(min_value=1, max_value=MAX_N_ITER, default=1)
    steps = serializers.IntegerField(min_value=1, max_value=MAX_STEPS, required=False)
    cfg_scale = FiniteFloatField(min_value=1, max_value=MAX_CFG_SCALE, default=DEFAULT_CFG_SCALE)
    width = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, default=DEFAULT_SIDE)
    height = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, default=DEFAULT_SIDE)
    eta = FiniteFloatField(min_value=0, max_value=1, required=False)
    denoising_strength = FiniteFloatField(min_value=0, max_value=1, required=False)
    enable_hr = serializers.BooleanField(default=False)
    hr_scale = FiniteFloatField(min_value=1, max_value=max(HIRES_FACTORS), default=2.0)
    hr_upscaler = serializers.CharField(max_length=100, allow_blank=True, required=False)
    hr_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, allow_blank=True, default="", trim_whitespace=False
    )
    hr_negative_prompt = serializers.CharField(
        max_length=MAX_PROMPT_LENGTH, allow_blank=True, default="", trim_whitespace=False
    )
    override_settings = serializers.DictField(required=False, default=dict)
    disable_extra_networks = serializers.BooleanField(default=False)
    send_images = serializers.BooleanField(default=True)
    save_images = serializers.BooleanField(default=False)

    kind = "txt2img"

    def validate_width(self, value: int) -> int:
        return self._multiple_of_8("width", value)

    def validate_height(self, value: int) -> int:
        return self._multiple_of_8("height", value)

    @staticmethod
    def _multiple_of_8(name: str, value: int) -> int:
        if value % 8:
            raise ValidationError(f"The {name} must be a multiple of 8.")
        return value


class Img2ImgBody(Txt2ImgBody):
    """img2img adds the init image, an optional mask (inpaint) and their settings."""

    init_images = serializers.ListField(
        child=serializers.CharField(max_length=MAX_IMAGE_FIELD), allow_empty=False
    )
    mask = serializers.CharField(max_length=MAX_IMAGE_FIELD, allow_blank=True, required=False)
    denoising_strength = FiniteFloatField(
        min_value=0, max_value=1, default=DEFAULT_IMG2IMG_STRENGTH
    )
    resize_mode = serializers.IntegerField(min_value=0, max_value=3, default=0)
    inpainting_fill = serializers.IntegerField(min_value=0, max_value=3, default=0)
    inpainting_mask_invert = serializers.IntegerField(min_value=0, max_value=1, default=0)
    include_init_images = serializers.BooleanField(default=False)
    # webui's img2img has no hires fix.
    enable_hr = None
    hr_scale = None
    hr_upscaler = None
    hr_prompt = None
    hr_negative_prompt = None

    kind = "img2img"


# Every field webui's request model has, with its default: the `parameters` echo starts here.
TXT2IMG_ECHO: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": DEFAULT_STEPS,
    "cfg_scale": DEFAULT_CFG_SCALE,
    "width": DEFAULT_SIDE,
    "height": DEFAULT_SIDE,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": None,
    "denoising_strength": None,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "disable_extra_networks": False,
    "firstpass_image": None,
    "comments": None,
    "enable_hr": False,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "force_task_id": None,
    "sampler_index": DEFAULT_SAMPLER,
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "infotext": None,
}
IMG2IMG_ECHO: dict[str, Any] = {
    **{k: v for k, v in TXT2IMG_ECHO.items() if not k.startswith(("hr_", "firstphase_"))},
    "enable_hr": None,
    "init_images": None,
    "resize_mode": 0,
    "image_cfg_scale": None,
    "mask": None,
    "mask_blur_x": MASK_BLUR,
    "mask_blur_y": MASK_BLUR,
    "mask_blur": None,
    "mask_round": True,
    "inpainting_fill": 0,
    "inpaint_full_res": False,
    "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0,
    "initial_noise_multiplier": None,
    "latent_mask": None,
    "denoising_strength": DEFAULT_IMG2IMG_STRENGTH,
    "include_init_images": False,
}
del IMG2IMG_ECHO["enable_hr"]


def read_body(data: Any) -> dict[str, Any]:
    """The JSON object sent, `null` values meaning "default" as in webui's pydantic models."""
    if not isinstance(data, dict):
        raise Unprocessable({"": ["The request body must be a JSON object."]})
    return {k: v for k, v in data.items() if v is not None}


def validated(body_class: type[Txt2ImgBody], body: dict[str, Any]) -> dict[str, Any]:
    """The body's values within their bounds, or a 422 naming every bad field."""
    serializer = body_class(data=body)
    if not serializer.is_valid():
        raise Unprocessable(serializer.errors)
    return dict(serializer.validated_data)


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
        offered = ", ".join(offered_samplers())
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


def offered_samplers() -> list[str]:
    """The webui sampler names this server can run."""
    return [
        name
        for name, choice in A1111_SAMPLERS.items()
        if usable_scheduler_error(choice.scheduler, choice.use_karras_sigmas, choice.algorithm_type)
        is None
    ]


def check_eta(values: dict[str, Any], sampler: str) -> None:
    """eta acts on ancestral, SDE and DDIM samplers; the engine runs each with one value."""
    eta = values.get("eta")
    if eta is None or sampler not in SAMPLER_ETA:
        return
    if eta != SAMPLER_ETA[sampler]:
        raise ValidationError(
            {"eta": [f"{sampler} runs with eta {SAMPLER_ETA[sampler]:g} here; send that or null."]}
        )


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
        elif key not in FIXED_OPTIONS or value != FIXED_OPTIONS[key]:
            raise ValidationError(
                {
                    name: [
                        "Only sd_model_checkpoint, CLIP_stop_at_last_layers and sd_vae can be "
                        "overridden on this server."
                    ]
                }
            )
    return model, fields


def refuse_unstorable_names(settings: dict[str, Any], where: str) -> None:
    """A 422 for a setting name that cannot be stored or even shown (NUL, lone surrogate)."""
    for key in settings:
        if not base.is_storable(str(key)):
            message = f"A setting name in {where} {base.UNSTORABLE_TEXT}."
            raise Unprocessable({where if where != "body" else "": [message]})


def embeddings_in(organization: Organization, model: AIModel, *prompts: str) -> list[str]:
    """The embeddings (fitting the checkpoint) that a prompt names, as webui finds them."""
    if model.base == AIModel.Base.SDXL:
        return []
    visible = AIModel.objects.visible_to(organization).filter(
        family=AIModel.Family.EMBEDDING, base=model.base
    )
    text = "\n".join(prompts)
    return [
        e.model_id
        for e in visible.order_by("model_id")
        if re.search(rf"(?<![\w-]){re.escape(e.model_id)}(?![\w-])", text)
    ]


def check_plan(plan: Plan, values: dict[str, Any], steps_sent: bool) -> None:
    """The plan's limits on size, steps and images (a 400 naming the field)."""
    base.check_side(plan, "width", values["width"])
    base.check_side(plan, "height", values["height"])
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
    upscaler = values.get("hr_upscaler") or "Latent"
    if upscaler not in HIRES_UPSCALERS:
        raise ValidationError(
            {"hr_upscaler": [f"Only the latent upscale is offered ({', '.join(HIRES_UPSCALERS)})."]}
        )
    for name, main in (("hr_prompt", "prompt"), ("hr_negative_prompt", "negative_prompt")):
        if values[name] and values[name] != values[main]:
            raise ValidationError({name: [f"The second pass uses the {main}; leave {name} empty."]})
    factor = values["hr_scale"]
    if factor != int(factor) or int(factor) not in HIRES_FACTORS:
        raise ValidationError(
            {"hr_scale": [f"The hires fix upscales by 2, 3 or 4 (a whole number), not {factor:g}."]}
        )
    factor = int(factor)
    base.check_upscaled(plan, "hr_scale", values["width"], values["height"], factor)
    strength = values.get("denoising_strength")
    strength = DEFAULT_HIRES_STRENGTH if strength is None else strength
    check_denoising_steps(strength, values["steps"])
    return {"hires_scale": factor, "hires_strength": strength}


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


def input_image(value: str, field: str) -> Image.Image:
    """A base64 (or data: URL, or http(s) URL) image, decoded and checked as every format does."""
    is_url = "://" in value.lstrip()[:12]
    try:
        return inputs.load_image(value, is_base64=not is_url, field=field)
    except inputs.InputImageError as exc:
        raise ValidationError({field: [str(exc)]}) from None


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def filled(image: Image.Image, mask: Image.Image) -> Image.Image:
    """webui's inpainting_fill 0: the masked area painted with the colours around it.

    The kept pixels are blurred at shrinking radii with premultiplied alpha (so the empty area
    takes the neighbours' colours, not black) and layered, the sharp original last.
    """
    keep = ImageOps.invert(mask.convert("L").resize(image.size))
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    result = Image.new("RGBA", image.size)
    for radius, times in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(times):
            result.alpha_composite(layer)
    return result.convert("RGB")


def inpaint_inputs(body: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """init_image and mask_image fields, the mask inverted and the init filled as asked."""
    init_value = values["init_images"][0]
    mask_value = values.get("mask")
    if not mask_value:
        return {"init_image": init_value}
    refuse_unhonoured(body, INPAINT_NOT_HONOURED)
    init = input_image(init_value, "init_images")
    mask = input_image(mask_value, "mask").convert("L")
    if values["inpainting_mask_invert"]:
        mask = ImageOps.invert(mask)
    if values["inpainting_fill"] == 0:
        init = filled(init, mask)
    return {"init_image": png_base64(init), "mask_image": png_base64(mask)}


def request_fields(
    request: Request, body: dict[str, Any], values: dict[str, Any], kind: str
) -> tuple[AIModel, str, dict[str, Any]]:
    """(checkpoint, webui sampler name, GenerationRequest fields) for a validated body."""
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
    try:
        prompt, loras = extract_lora_tags(values["prompt"])
    except PromptError as exc:
        raise Unprocessable({"prompt": [str(exc)]}) from None
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
        guidance_scale=values["cfg_scale"],
        seed=base.random_seed(values["seed"]),
        loras=loras,
        embeddings_model=embeddings_in(org, model, prompt, values["negative_prompt"]),
        **scheduler,
        **overrides,
    )
    if kind == "txt2img":
        fields.update(hires_fields(body, values, plan))
    else:
        check_denoising_steps(values["denoising_strength"], values["steps"])
        fields["strength"] = values["denoising_strength"]
        fields.update(inpaint_inputs(body, values))
    return model, sampler, fields


# --- answers ------------------------------------------------------------------------------


def echo(body: dict[str, Any], values: dict[str, Any], sampler: str, kind: str) -> dict[str, Any]:
    """`parameters`: the request as webui echoes it, its defaults filled in."""
    base = TXT2IMG_ECHO if kind == "txt2img" else IMG2IMG_ECHO
    parameters = {**base, **{k: v for k, v in body.items() if k in base}}
    parameters.update(steps=values["steps"], sampler_name=sampler, sampler_index=sampler)
    if kind == "img2img" and not values["include_init_images"]:
        parameters.update(init_images=None, mask=None)
    return parameters


def generation_info(
    job: Job,
    model: AIModel,
    values: dict[str, Any],
    sampler: str,
    outputs: list[tuple[int, str]],
) -> dict[str, Any]:
    """webui's `info` (a JSON string in the answer): seeds, settings and each image's infotext."""
    p = job.params
    count = max(len(outputs), 1)
    seeds = [seed for seed, _text in outputs] or [p["seed"]]
    subseed = base.random_seed(values["subseed"])
    hires = p.get("hires_scale", 1) > 1
    denoising = p["strength"] if job.kind in ("img2img", "inpaint") else None
    extra: dict[str, Any] = {}
    if values.get("scheduler"):
        extra["Schedule type"] = "Karras" if p["use_karras_sigmas"] else "Automatic"
    if hires:
        denoising = p["hires_strength"]
        extra["Hires upscale"] = p["hires_scale"]
        extra["Hires upscaler"] = values.get("hr_upscaler") or "Latent"
    return {
        "prompt": values["prompt"],
        "all_prompts": [values["prompt"]] * count,
        "negative_prompt": values["negative_prompt"],
        "all_negative_prompts": [values["negative_prompt"]] * count,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": subseed,
        "all_subseeds": [subseed + i for i in range(count)],
        "subseed_strength": 0,
        "width": p["width"],
        "height": p["height"],
        "sampler_name": sampler,
        "cfg_scale": p["guidance_scale"],
        "steps": p["steps"],
        "batch_size": values["batch_size"],
        "n_iter": values["n_iter"],
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model.model_id,
        "sd_model_hash": short_hash(model),
        "sd_vae_name": p.get("vae") or None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": denoising,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": [text for _seed, text in outputs],
        "styles": [],
        "job_timestamp": job.created_at.strftime("%Y%m%d%H%M%S"),
        "clip_skip": p.get("clip_skip") or 1,
        "is_using_inpainting_conditioning": model.family == AIModel.Family.INPAINT,
        "version": "pictor",
    }


def read_outputs(job: Job) -> tuple[list[str], list[tuple[int, str]]]:
    """The job's PNGs as base64, and each one's (seed, PNG "parameters" text)."""
    images, facts = [], []
    for output in job.outputs.order_by("index"):
        with default_storage.open(output.path) as stored:
            data = stored.read()
        images.append(base64.b64encode(data).decode())
        text = Image.open(io.BytesIO(data)).info.get("parameters", "")
        facts.append((output.seed, str(text)))
    return images, facts


def own_jobs(request: Request) -> Any:
    """The waiting jobs made with the caller's key (never another key's, never another tenant's)."""
    return (
        Job.objects.for_org(request.user.organization)
        .filter(api_key=request.auth)
        .waiting()
        .order_by("created_at", "pk")
    )


def current_job(request: Request) -> Job | None:
    """The caller's job webui would report: the oldest one running, else the oldest queued."""
    jobs = own_jobs(request)
    return (
        jobs.filter(status=Job.Status.PROCESSING).first()
        or jobs.filter(status=Job.Status.QUEUED).first()
    )


def null_response() -> HttpResponse:
    """FastAPI's answer for an endpoint that returns nothing: JSON `null`."""
    return HttpResponse(b"null", content_type="application/json")


# --- views --------------------------------------------------------------------------------


class A1111View(FormatView):
    """A view of the AUTOMATIC1111 format: webui's error shapes, Basic or Bearer auth."""

    error_body = staticmethod(error_body)

    def get_exception_handler(self) -> Callable[..., Any]:
        return handle_exception


# Answer shapes, for the OpenAPI schema only.
ErrorAnswer = inline_serializer(
    "A1111Error",
    {
        "error": serializers.CharField(),
        "detail": serializers.CharField(),
        "body": serializers.CharField(),
        "errors": serializers.CharField(),
    },
)
DetailAnswer = inline_serializer("A1111Detail", {"detail": serializers.CharField()})
ValidationAnswer = inline_serializer(
    "A1111ValidationError",
    {
        "detail": serializers.ListField(
            child=inline_serializer(
                "A1111ValidationEntry",
                {
                    "loc": serializers.ListField(child=serializers.CharField()),
                    "msg": serializers.CharField(),
                    "type": serializers.CharField(),
                },
            )
        )
    },
)
ImagesAnswer = inline_serializer(
    "A1111Images",
    {
        "images": serializers.ListField(child=serializers.CharField(), help_text="Base64 PNGs"),
        "parameters": serializers.DictField(help_text="The request, its defaults filled in"),
        "info": serializers.CharField(help_text="JSON text: seeds, settings, infotexts"),
    },
)
ERRORS = {
    400: ErrorAnswer,
    401: DetailAnswer,
    402: ErrorAnswer,
    403: ErrorAnswer,
    404: DetailAnswer,
    422: ValidationAnswer,
    429: ErrorAnswer,
}
# A submit also answers 503 when the job queue is down.
GENERATION_ERRORS = {**ERRORS, 500: ErrorAnswer, 503: ErrorAnswer, 504: ErrorAnswer}


class GenerateView(A1111View):
    """POST txt2img or img2img: queue the job, wait for it, answer webui's images/info."""

    body_class: type[Txt2ImgBody] = Txt2ImgBody

    def post(self, request: Request) -> Response:
        body = read_body(request.data)
        values = validated(self.body_class, body)
        kind = self.body_class.kind
        model, sampler, fields = request_fields(request, body, values, kind)
        job_kind = "inpaint" if fields.get("mask_image") else ENGINE_KINDS[kind]
        try:
            job = submission.submit(request, fields, job_kind, model_id=model.model_id)
        except ValidationError as exc:
            raise base.renamed(exc, WIRE_NAMES) from None
        try:
            job = submission.wait_until_done(job)
        except submission.GenerationFailed:
            job.refresh_from_db()
            if job.status != Job.Status.CANCELED:
                raise
        images, facts = read_outputs(job) if job.status == Job.Status.SUCCESS else ([], [])
        info = generation_info(job, model, values, sampler, facts)
        return Response(
            {
                "images": images if values["send_images"] else [],
                "parameters": echo(body, values, sampler, kind),
                "info": json.dumps(info),
            }
        )


class Txt2ImgView(GenerateView):
    """POST /sdapi/v1/txt2img."""

    body_class = Txt2ImgBody

    @extend_schema(
        tags=[TAG],
        summary="Generate images from a prompt (waits for them)",
        request=Txt2ImgBody,
        responses={200: ImagesAnswer, **GENERATION_ERRORS},
    )
    def post(self, request: Request) -> Response:
        return super().post(request)


class Img2ImgView(GenerateView):
    """POST /sdapi/v1/img2img: from one init image; with a mask, an inpaint."""

    body_class = Img2ImgBody

    @extend_schema(
        tags=[TAG],
        summary="Generate images from an init image, or inpaint with a mask (waits for them)",
        request=Img2ImgBody,
        responses={200: ImagesAnswer, **GENERATION_ERRORS},
    )
    def post(self, request: Request) -> Response:
        return super().post(request)


class SdModelsView(A1111View):
    """GET /sdapi/v1/sd-models: the checkpoints this tenant may use."""

    @extend_schema(
        tags=[TAG],
        summary="Checkpoints",
        request=None,
        responses={
            200: inline_serializer(
                "A1111SdModel",
                {
                    "title": serializers.CharField(),
                    "model_name": serializers.CharField(),
                    "hash": serializers.CharField(help_text="The first 10 hex digits of sha256"),
                    "sha256": serializers.CharField(help_text="SHA-256 of the model id"),
                    "filename": serializers.CharField(),
                    "config": serializers.CharField(allow_null=True),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: Request) -> Response:
        models = (
            AIModel.objects.visible_to(request.user.organization)
            .filter(family__in=AIModel.CHECKPOINTS)
            .order_by("model_id")
        )
        return Response(
            [
                {
                    "title": model_title(m),
                    "model_name": m.model_id,
                    "hash": short_hash(m),
                    "sha256": model_sha256(m),
                    "filename": m.path,
                    "config": m.config_path or None,
                }
                for m in models
            ]
        )


class SamplersView(A1111View):
    """GET /sdapi/v1/samplers: the webui samplers this server runs."""

    @extend_schema(
        tags=[TAG],
        summary="Samplers",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Sampler",
                {
                    "name": serializers.CharField(),
                    "aliases": serializers.ListField(child=serializers.CharField()),
                    "options": serializers.DictField(),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: Request) -> Response:
        return Response(
            [
                {
                    "name": name,
                    "aliases": SAMPLER_ALIASES.get(name, []),
                    "options": {"scheduler": "karras"}
                    if A1111_SAMPLERS[name].use_karras_sigmas
                    else {},
                }
                for name in offered_samplers()
            ]
        )


class SchedulersView(A1111View):
    """GET /sdapi/v1/schedulers: webui 1.9+'s sigma schedules this server offers."""

    @extend_schema(
        tags=[TAG],
        summary="Schedulers (sigma schedules)",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Scheduler",
                {
                    "name": serializers.CharField(),
                    "label": serializers.CharField(),
                    "aliases": serializers.ListField(
                        child=serializers.CharField(), allow_null=True
                    ),
                    "default_rho": serializers.FloatField(),
                    "need_inner_model": serializers.BooleanField(),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: Request) -> Response:
        return Response(SCHEDULERS)


class LorasView(A1111View):
    """GET /sdapi/v1/loras: the LoRAs this tenant may name as <lora:name:weight>."""

    @extend_schema(
        tags=[TAG],
        summary="LoRAs",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Lora",
                {
                    "name": serializers.CharField(),
                    "alias": serializers.CharField(),
                    "path": serializers.CharField(),
                    "metadata": serializers.DictField(),
                },
                many=True,
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: Request) -> Response:
        loras = (
            AIModel.objects.visible_to(request.user.organization)
            .filter(family=AIModel.Family.LORA)
            .order_by("model_id")
        )
        return Response(
            [
                {"name": m.model_id, "alias": m.model_id, "path": m.path, "metadata": {}}
                for m in loras
            ]
        )


def embedding_shape(model: AIModel) -> tuple[int, int]:
    """(vectors, dimension) of an embedding, read from its safetensors header (0, 0 if unknown)."""
    try:
        folder, name = weight_file(model.ref(), EMBEDDING_FILE)
        with open(Path(folder) / name, "rb") as weights:
            size = int.from_bytes(weights.read(8), "little")
            if not 0 < size <= 1_000_000:
                return 0, 0
            header = json.loads(weights.read(size))
        shape = next(v["shape"] for k, v in header.items() if k != "__metadata__")
        return (int(shape[0]), int(shape[-1])) if len(shape) == 2 else (1, int(shape[-1]))
    except (OSError, ValueError, KeyError, StopIteration, TypeError, IndexError):
        return 0, 0


class EmbeddingsView(A1111View):
    """GET /sdapi/v1/embeddings: loaded = usable with the key's current model, else skipped."""

    @extend_schema(
        tags=[TAG],
        summary="Textual-inversion embeddings",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Embeddings",
                {"loaded": serializers.DictField(), "skipped": serializers.DictField()},
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: Request) -> Response:
        org = request.user.organization
        current = default_model(org, request.auth)
        embeddings = (
            AIModel.objects.visible_to(org)
            .filter(family=AIModel.Family.EMBEDDING)
            .order_by("model_id")
        )
        answer: dict[str, dict[str, Any]] = {"loaded": {}, "skipped": {}}
        for m in embeddings:
            vectors, shape = embedding_shape(m)
            fits = (
                current is not None and current.base == m.base and current.base != AIModel.Base.SDXL
            )
            answer["loaded" if fits else "skipped"][m.model_id] = {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": shape,
                "vectors": vectors,
            }
        return Response(answer)


class OptionsView(A1111View):
    """GET /sdapi/v1/options; POST sets this key's default checkpoint."""

    @extend_schema(
        tags=[TAG],
        summary="Settings (the checkpoint is this key's default)",
        request=None,
        responses={
            200: inline_serializer(
                "A1111Options",
                {
                    "sd_model_checkpoint": serializers.CharField(allow_null=True),
                    "sd_checkpoint_hash": serializers.CharField(allow_null=True),
                    "samples_format": serializers.CharField(),
                    "sd_vae": serializers.CharField(),
                    "CLIP_stop_at_last_layers": serializers.IntegerField(),
                },
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: Request) -> Response:
        return Response(options(request.user.organization, request.auth))

    @extend_schema(
        tags=[TAG],
        summary="Set this key's default checkpoint",
        request=inline_serializer(
            "A1111SetOptions",
            {"sd_model_checkpoint": serializers.CharField(help_text="A title or model name")},
        ),
        responses={
            200: OpenApiResponse(description="The body is JSON null."),
            400: ErrorAnswer,
            404: DetailAnswer,
            422: ValidationAnswer,
        },
    )
    def post(self, request: Request) -> HttpResponse:
        org = request.user.organization
        body = read_body(request.data)
        # Checked here too, not only by the JSON parser: a name or value that cannot be stored
        # must not reach a query or an error message (which could not be encoded).
        refuse_unstorable_names(body, "body")
        current = options(org, request.auth)
        model = None
        for key, value in body.items():
            if key == "sd_model_checkpoint":
                model = find_model(org, value, key)
            elif key not in current or value != current[key]:
                raise ValidationError(
                    {
                        key: [
                            "Only sd_model_checkpoint can be set on this server; other settings "
                            "keep the values GET /sdapi/v1/options reports."
                        ]
                    }
                )
        if model is not None:
            ApiKey.objects.filter(pk=request.auth.pk).update(default_model=model)
        return null_response()


class ProgressView(A1111View):
    """GET /sdapi/v1/progress: the caller's current job (made with this key), as webui's state."""

    @extend_schema(
        tags=[TAG],
        summary="Progress of this key's current job",
        request=None,
        parameters=[OpenApiParameter("skip_current_image", bool, description="Ignored")],
        responses={
            200: inline_serializer(
                "A1111Progress",
                {
                    "progress": serializers.FloatField(),
                    "eta_relative": serializers.FloatField(),
                    "state": serializers.DictField(),
                    "current_image": serializers.CharField(allow_null=True),
                    "textinfo": serializers.CharField(allow_null=True),
                },
            ),
            401: DetailAnswer,
        },
    )
    def get(self, request: Request) -> Response:
        job = current_job(request)
        state = {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if job is None:
            return Response(
                {
                    "progress": 0,
                    "eta_relative": 0,
                    "state": state,
                    "current_image": None,
                    "textinfo": None,
                }
            )
        job = jobs.refresh_lease_state(job)
        running = job.status == Job.Status.PROCESSING
        step, total = (job.progress_step, job.progress_total) if running else (0, 0)
        state.update(
            job=job.kind,
            job_count=own_jobs(request).count(),
            job_timestamp=(job.started_at or job.created_at).strftime("%Y%m%d%H%M%S"),
            sampling_step=step,
            sampling_steps=total,
        )
        return Response(
            {
                "progress": round(step / total, 4) if total else 0.0,
                "eta_relative": estimates.eta(job),
                "state": state,
                "current_image": None,
                "textinfo": f"Step {step}/{total}" if running else "Waiting in the queue",
            }
        )


class InterruptView(A1111View):
    """POST /sdapi/v1/interrupt: cancel (and refund) every queued or running job of this key."""

    @extend_schema(
        tags=[TAG],
        summary="Cancel this key's queued and running jobs",
        request=None,
        responses={200: inline_serializer("A1111Empty", {}), 401: DetailAnswer},
    )
    def post(self, request: Request) -> Response:
        for job in own_jobs(request):
            jobs.cancel(job)
        return Response({})


class SkipView(A1111View):
    """POST /sdapi/v1/skip: cancel (and refund) this key's current job only."""

    @extend_schema(
        tags=[TAG],
        summary="Cancel this key's current job",
        request=None,
        responses={200: OpenApiResponse(description="The body is JSON null."), 401: DetailAnswer},
    )
    def post(self, request: Request) -> HttpResponse:
        job = current_job(request)
        if job is not None:
            jobs.cancel(job)
        return null_response()


urlpatterns = [
    path("sdapi/v1/txt2img", Txt2ImgView.as_view(), name="a1111-txt2img"),
    path("sdapi/v1/img2img", Img2ImgView.as_view(), name="a1111-img2img"),
    path("sdapi/v1/sd-models", SdModelsView.as_view(), name="a1111-sd-models"),
    path("sdapi/v1/samplers", SamplersView.as_view(), name="a1111-samplers"),
    path("sdapi/v1/schedulers", SchedulersView.as_view(), name="a1111-schedulers"),
    path("sdapi/v1/loras", LorasView.as_view(), name="a1111-loras"),
    path("sdapi/v1/embeddings", EmbeddingsView.as_view(), name="a1111-embeddings"),
    path("sdapi/v1/options", OptionsView.as_view(), name="a1111-options"),
    path("sdapi/v1/progress", ProgressView.as_view(), name="a1111-progress"),
    path("sdapi/v1/interrupt", InterruptView.as_view(), name="a1111-interrupt"),
    path("sdapi/v1/skip", SkipView.as_view(), name="a1111-skip"),
]
