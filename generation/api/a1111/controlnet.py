"""The ControlNet extension (sd-webui-controlnet) on the A1111 format: its units and its lists.

A txt2img body may carry units as the extension reads them:

    "alwayson_scripts": {"controlnet": {"args": [{"enabled": true, "module": "canny",
        "model": "control_v11p_sd15_canny [d14c016b]", "image": "<base64>", ...}]}}

Enabled units become the engine's ControlNets: the first the controlnet_* fields of
GenerationRequest, the others its controlnet_units; on img2img they guide an img2img (or, with a
mask, inpaint) job. The control map is made here, at submit, as the extension makes it: the
preprocessor runs at `processor_res` (or, with `pixel_perfect`, at the resolution that makes the
map the output's size), then the map is fitted to width × height by `resize_mode`; the worker
takes it ready. inpaint_only's map (the picture with the masked pixels at -1) cannot be stored
as a PNG: the worker makes it from the img2img init image and mask.

control_mode 2 ("ControlNet is more important") is diffusers' guess mode, for the whole job:
every ControlNet unit of a request must then ask for it. A unit whose module is an IP-Adapter
("ip-adapter*") sets the request's ip_adapter fields (one such unit per request).

What is refused (400 naming the unit's field): more than MAX_CONTROLNETS enabled ControlNet
units, the hires fix with a unit, preprocessors other than those in MODULES, control mode 1
("My prompt is more important": per-layer weights on both guidance passes, which diffusers does
not offer), several images in one unit, a drawn mask, and a guidance window that holds none of
the job's steps (the ControlNet would never act).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts.models import Organization
from generation import addons
from generation.answers import Answer
from generation.api import base
from generation.api.a1111.answers import DetailAnswer
from generation.api.a1111.errors import A1111View, Unprocessable, refuse_unstorable_names
from generation.api.a1111.tables import CHECKSUM_SUFFIX, TAG
from generation.api.base import MAX_IMAGE_FIELD, FiniteFloatField
from generation.engine.control import MAX_TILE_RATE
from generation.engine.control import shuffle as content_shuffle
from generation.engine.control import tile as tile_resample
from generation.engine.request import (
    MAX_CONTROLNETS,
    control_window_problem,
    denoising_timesteps,
)
from generation.models import AIModel

if TYPE_CHECKING:
    from accounts.requests import KeyRequest
    from generation.submission import Inputs

# The alwayson_scripts entry webui matches (case-insensitively) to the extension.
SCRIPT = "controlnet"
# What GET /controlnet/version answers: the extension's API version.
API_VERSION = 3
MAX_WEIGHT = 2.0
# The preprocessor resolution (short side, px) and canny thresholds, as the extension bounds them.
RESOLUTION: dict[str, Any] = {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8}
LOW_THRESHOLD: dict[str, Any] = {
    "name": "Low Threshold",
    "value": 100,
    "min": 1,
    "max": 255,
    "step": 1,
}
HIGH_THRESHOLD: dict[str, Any] = {
    "name": "High Threshold",
    "value": 200,
    "min": 1,
    "max": 255,
    "step": 1,
}
DOWN_SAMPLING: dict[str, Any] = {
    "name": "Down Sampling Rate",
    "value": 1.0,
    "min": 1.0,
    "max": MAX_TILE_RATE,
    "step": 0.01,
}
# The preprocessors offered ("none": the image is the control map) and their sliders.
MODULES: dict[str, list[dict[str, Any]]] = {
    "none": [RESOLUTION],
    "canny": [RESOLUTION, LOW_THRESHOLD, HIGH_THRESHOLD],
    "tile_resample": [RESOLUTION, DOWN_SAMPLING],
    "shuffle": [RESOLUTION],
    "inpaint_only": [],
}
# The engine's controlnet_type for each module (inpaint's map is made by the worker).
MODULE_TYPES = {
    "none": "",
    "canny": "canny",
    "tile_resample": "tile",
    "shuffle": "shuffle",
    "inpaint_only": "inpaint",
}
# Older names of these modules that clients still send.
MODULE_ALIASES = {"tile": "tile_resample", "inpaint": "inpaint_only"}
# A module naming an IP-Adapter: the unit is an image prompt, not a ControlNet.
IP_ADAPTER_PREFIX = "ip-adapter"
BALANCED, PROMPT_FIRST, CONTROLNET_FIRST = 0, 1, 2
# resize_mode by the extension's names (and its older aliases) and numbers.
JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL = 0, 1, 2
RESIZE_MODES = {
    "just resize": JUST_RESIZE,
    "crop and resize": CROP_AND_RESIZE,
    "resize and fill": RESIZE_AND_FILL,
    "inner fit (scale to fit)": CROP_AND_RESIZE,
    "scale to fit (inner fit)": CROP_AND_RESIZE,
    "outer fit (shrink to fit)": RESIZE_AND_FILL,
    "envelope (outer fit)": RESIZE_AND_FILL,
    # 3 is webui's "Just resize (latent upscale)", which the extension reads as just resize.
    "just resize (latent upscale)": JUST_RESIZE,
}
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
HR_OPTIONS = ("Both", "Low res only", "High res only")
# Unit fields for features this server does not offer: (values that mean "off", the reason).
UNIT_NOT_HONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "advanced_weighting": ((None, []), "Per-layer weights are not offered; use weight."),
    "effective_region_mask": ((None, ""), "Effective region masks are not offered."),
    "ipadapter_input": ((None, [], ""), "IP-Adapter inputs are not offered."),
    "union_control_type": ((None, "", "Unknown"), "ControlNet union models are not offered."),
    "input_mode": ((None, "", "simple", "SIMPLE"), "Only the simple (one image) input mode."),
    "batch_images": ((None, "", []), "Batch input folders are not offered."),
    "animatediff_batch": ((None, False), "AnimateDiff batches are not offered."),
    "batch_modifiers": ((None, []), "AnimateDiff batches are not offered."),
    "batch_image_files": ((None, []), "AnimateDiff batches are not offered."),
    "loopback": ((None, False), "Loopback is not offered."),
}


class ImagesField(serializers.Field):
    """`image`: base64 text, {"image", "mask"}, [image, mask], or a list of such dicts."""

    def to_internal_value(self, data: Any) -> list[tuple[str, str | None]]:
        if isinstance(data, str) and not data.strip():
            # webuiapi sends "" for a unit without an image (a disabled one, say).
            return []
        if isinstance(data, str):
            pairs: list[Any] = [(data, None)]
        elif isinstance(data, dict):
            pairs = [(data.get("image"), data.get("mask"))]
        elif isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
            pairs = [(d.get("image"), d.get("mask")) for d in data]
        elif isinstance(data, list) and len(data) == 2:
            pairs = [(data[0], data[1])]
        else:
            raise ValidationError(
                'Must be base64 image text, {"image": ..., "mask": ...} or [image, mask].'
            )
        for image, mask in pairs:
            if not isinstance(image, str) or not image.strip():
                raise ValidationError("The image must be base64 image text.")
            if mask is not None and not isinstance(mask, str):
                raise ValidationError("The mask must be base64 image text or null.")
            if len(image) > MAX_IMAGE_FIELD or len(mask or "") > MAX_IMAGE_FIELD:
                raise ValidationError(f"An image may be at most {MAX_IMAGE_FIELD} characters.")
        return [(image, mask or None) for image, mask in pairs]


class ResizeModeField(serializers.Field):
    """The extension's resize_mode: its name (or an old alias) or its number."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and data.strip().lower() in RESIZE_MODES:
            return RESIZE_MODES[data.strip().lower()]
        number = base.bounded_int(data, 0, 3)
        if number is None:
            raise ValidationError(
                "Must be Just Resize, Crop and Resize, Resize and Fill, or 0, 1 or 2."
            )
        return JUST_RESIZE if number == 3 else number


class ControlModeField(serializers.Field):
    """control_mode: 0-2 or the extension's names for them."""

    def to_internal_value(self, data: Any) -> int:
        names = [name.lower() for name in CONTROL_MODES]
        if isinstance(data, str) and data.strip().lower() in names:
            return names.index(data.strip().lower())
        number = base.bounded_int(data, 0, len(CONTROL_MODES) - 1)
        if number is None:
            raise ValidationError(f"Must be 0, 1 or 2, or one of: {', '.join(CONTROL_MODES)}.")
        return number


class UnitBody(base.CopiedFields):
    """One ControlNet unit, with the bounds a value must be within (else 422)."""

    enabled = serializers.BooleanField(default=True)
    module = serializers.CharField(max_length=100, allow_blank=True, default="none")
    model = serializers.CharField(max_length=300, allow_blank=True, default="None")
    weight = FiniteFloatField(min_value=0, max_value=MAX_WEIGHT, default=1.0)
    image = ImagesField(required=False)
    # The extension's older name for image.
    input_image = ImagesField(required=False)
    mask = serializers.CharField(max_length=MAX_IMAGE_FIELD, allow_blank=True, required=False)
    # SD Forge's name for mask.
    mask_image = serializers.CharField(max_length=MAX_IMAGE_FIELD, allow_blank=True, required=False)
    resize_mode = ResizeModeField(default=CROP_AND_RESIZE)
    # A memory hint to the extension's preprocessors; nothing to do here.
    low_vram = serializers.BooleanField(default=False)
    lowvram = serializers.BooleanField(required=False)
    processor_res = serializers.IntegerField(min_value=-1, max_value=RESOLUTION["max"], default=-1)
    threshold_a = FiniteFloatField(min_value=-1, max_value=255, default=-1)
    threshold_b = FiniteFloatField(min_value=-1, max_value=255, default=-1)
    guidance_start = FiniteFloatField(min_value=0, max_value=1, default=0.0)
    guidance_end = FiniteFloatField(min_value=0, max_value=1, required=False)
    # The extension's older name for guidance_end.
    guidance = FiniteFloatField(min_value=0, max_value=1, required=False)
    pixel_perfect = serializers.BooleanField(default=False)
    control_mode = ControlModeField(default=0)
    hr_option = serializers.ChoiceField(choices=HR_OPTIONS, default="Both")
    # The detected map is not returned with the images (docs/api/a1111.md): nothing to save.
    save_detected_map = serializers.BooleanField(default=True)
    inpaint_crop_input_image = serializers.BooleanField(default=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "image" in attrs and "input_image" in attrs:
            raise ValidationError({"input_image": ["Send image or input_image, not both."]})
        attrs["images"] = attrs.pop("image", None) or attrs.pop("input_image", None) or []
        mask = attrs.pop("mask", "")
        mask = attrs.pop("mask_image", "") or mask
        if mask and attrs["images"]:
            attrs["images"] = [(image, m or mask) for image, m in attrs["images"]]
        end = attrs.pop("guidance_end", None)
        legacy = attrs.pop("guidance", None)
        attrs["guidance_end"] = end if end is not None else legacy if legacy is not None else 1.0
        if attrs["guidance_start"] >= attrs["guidance_end"]:
            raise ValidationError({"guidance_end": ["Must be greater than guidance_start."]})
        return attrs


@dataclass(frozen=True)
class Unit:
    """An enabled unit of a request: where it was sent (for errors) and its values."""

    field: str
    values: dict[str, Any]

    @property
    def is_ip_adapter(self) -> bool:
        return self.values["module"].startswith(IP_ADAPTER_PREFIX)


def enabled_units(body: dict[str, Any], kind: str) -> list[Unit]:
    """The enabled units of alwayson_scripts' ControlNet entry (none: []), else a 4xx.

    Runs before any lookup: a bad value is a 422, a unit this server cannot run a 400, each
    naming `alwayson_scripts.<script>.args[i]` (and the unit's field).
    """
    scripts = body.get("alwayson_scripts")
    if scripts in (None, {}):
        return []
    if not isinstance(scripts, dict):
        raise Unprocessable({"alwayson_scripts": ["Must be an object of scripts by name."]})
    refuse_unstorable_names(scripts, "alwayson_scripts")
    found: list[Unit] = []
    for name, script in scripts.items():
        where = f"alwayson_scripts.{name}"
        args = script.get("args") if isinstance(script, dict) else script
        if name.strip().lower() != SCRIPT:
            # An entry with no arguments leaves its script off (clients send {"args": []}).
            if args not in (None, [], {}) or not isinstance(script, dict | list | None):
                raise ValidationError({where: ["This script is not offered by this server."]})
            continue
        if args is None:
            continue
        if not isinstance(script, dict) or not isinstance(args, list):
            raise Unprocessable({where: ['Must be {"args": [unit, ...]}.']})
        for index, arg in enumerate(args):
            field = f"{where}.args[{index}]"
            if not isinstance(arg, dict):
                raise Unprocessable({field: ["Must be a ControlNet unit (an object)."]})
            refuse_unstorable_names(arg, field)
            serializer = UnitBody(data={k: v for k, v in arg.items() if v is not None})
            if not serializer.is_valid():
                raise Unprocessable({field: serializer.errors})
            values = dict(serializer.validated_data)
            if not values["enabled"]:
                continue
            refuse_unit_features(arg, field)
            found.append(Unit(field, values))
    for unit in found:
        check_unit(unit, body, kind)
    nets = [unit for unit in found if not unit.is_ip_adapter]
    if len(nets) > MAX_CONTROLNETS:
        raise ValidationError(
            {
                nets[MAX_CONTROLNETS].field: [
                    f"At most {MAX_CONTROLNETS} enabled ControlNet units per request are "
                    "offered here; disable the others."
                ]
            }
        )
    adapters = [unit for unit in found if unit.is_ip_adapter]
    if len(adapters) > 1:
        raise ValidationError(
            {adapters[1].field: ["One IP-Adapter unit per request is offered here."]}
        )
    guessing = [unit.values["control_mode"] == CONTROLNET_FIRST for unit in nets]
    if any(guessing) and not all(guessing):
        odd = nets[guessing.index(False)]
        raise ValidationError(
            {
                f"{odd.field}.control_mode": [
                    "ControlNet is more important (2) applies to every ControlNet of a job "
                    "here: give all enabled units control_mode 2, or none."
                ]
            }
        )
    return found


def refuse_unit_features(arg: dict[str, Any], field: str) -> None:
    """A 400 naming each unit field whose value asks for a feature this server lacks."""
    refused = {
        f"{field}.{name}": [f"{reason} (got {arg[name]!r})"]
        for name, (off, reason) in UNIT_NOT_HONOURED.items()
        if name in arg and not any(arg[name] == value for value in off)
    }
    if refused:
        raise ValidationError(refused)


def check_unit(unit: Unit, body: dict[str, Any], kind: str) -> None:
    """What this server runs of an enabled unit (a 400 naming the field), or what it lacks."""
    field, values = unit.field, unit.values
    if body.get("enable_hr"):
        raise ValidationError(
            {field: ["A ControlNet unit cannot be combined with the hires fix (enable_hr) here."]}
        )
    module = values["module"].strip().lower() or "none"
    module = MODULE_ALIASES.get(module, module)
    if module not in MODULES and not module.startswith(IP_ADAPTER_PREFIX):
        raise ValidationError(
            {
                f"{field}.module": [
                    f"The {values['module']!r} preprocessor is not offered here; use one of "
                    f"{', '.join(MODULES)} (none: the image is a ready control map), or an "
                    "ip-adapter module."
                ]
            }
        )
    values["module"] = module
    if values["control_mode"] == PROMPT_FIRST:
        raise ValidationError(
            {
                f"{field}.control_mode": [
                    f"{CONTROL_MODES[PROMPT_FIRST]} (1) is not offered here; use 0 (Balanced) or "
                    f"2 ({CONTROL_MODES[CONTROLNET_FIRST]})."
                ]
            }
        )
    if not values["model"].strip() or values["model"].strip() == "None":
        raise Unprocessable({f"{field}.model": ["An enabled unit needs a ControlNet model."]})
    # On img2img a unit without an image takes the init image, as the extension does.
    if not values["images"] and (kind == "txt2img" or module == "none"):
        raise Unprocessable({f"{field}.image": ["An enabled unit needs an image (base64)."]})
    if len(values["images"]) > 1:
        raise ValidationError(
            {f"{field}.image": ["Send one image per unit; several are not offered."]}
        )
    if module == "inpaint_only" and not (kind == "img2img" and body.get("mask")):
        raise ValidationError(
            {
                f"{field}.module": [
                    "inpaint_only runs on img2img with a mask here (its map masks the init "
                    "image); send the mask with the img2img request."
                ]
            }
        )
    if unit.is_ip_adapter:
        check_ip_adapter_unit(unit)
    if module == "canny":
        for name, slider in (("threshold_a", LOW_THRESHOLD), ("threshold_b", HIGH_THRESHOLD)):
            # -1 is the extension's "the preprocessor's default".
            if values[name] == -1:
                values[name] = slider["value"]
            elif not slider["min"] <= values[name] <= slider["max"]:
                raise Unprocessable(
                    {f"{field}.{name}": ["Must be -1 or between 1 and 255 for canny."]}
                )
    if module == "tile_resample":
        if values["threshold_a"] == -1:
            values["threshold_a"] = DOWN_SAMPLING["value"]
        elif not DOWN_SAMPLING["min"] <= values["threshold_a"] <= DOWN_SAMPLING["max"]:
            raise Unprocessable(
                {f"{field}.threshold_a": [f"Must be -1 or between 1 and {MAX_TILE_RATE:g}."]}
            )
    if values["processor_res"] == -1:
        values["processor_res"] = RESOLUTION["value"]
    elif values["processor_res"] < RESOLUTION["min"]:
        raise Unprocessable({f"{field}.processor_res": ["Must be -1 or between 64 and 2048."]})


def check_ip_adapter_unit(unit: Unit) -> None:
    """An IP-Adapter unit: its weight is the adapter's scale; no window or mode of its own."""
    field, values = unit.field, unit.values
    if (values["guidance_start"], values["guidance_end"]) != (0.0, 1.0):
        raise ValidationError(
            {
                f"{field}.guidance_start": [
                    "An IP-Adapter unit acts on every step here; send guidance_start 0 and "
                    "guidance_end 1."
                ]
            }
        )
    if values["control_mode"] != BALANCED:
        raise ValidationError(
            {f"{field}.control_mode": ["An IP-Adapter unit takes control_mode 0 (Balanced)."]}
        )
    if not values["images"]:
        raise Unprocessable({f"{field}.image": ["An IP-Adapter unit needs an image (base64)."]})


def short_hash(model: AIModel) -> str:
    """The extension's 8-digit hash in a model's name; here of the model id, as for checkpoints."""
    return hashlib.sha256(model.model_id.encode()).hexdigest()[:8]


def list_name(model: AIModel) -> str:
    """A ControlNet model as /controlnet/model_list names it: "<model_id> [hash]"."""
    return f"{model.model_id} [{short_hash(model)}]"


def find_controlnet(
    organization: Organization,
    checkpoint: AIModel,
    name: str,
    field: str,
    family: str = AIModel.Family.CONTROLNET,
) -> AIModel:
    """The model of `family` a unit names (with or without " [hash]"), fitting the checkpoint."""
    if not base.is_storable(name):
        raise Unprocessable({field: [f"The name {base.UNSTORABLE_TEXT}."]})
    wanted = name.strip().lower()
    bare = CHECKSUM_SUFFIX.sub("", wanted)
    for suffix in (".safetensors", ".pth", ".ckpt", ".bin"):
        bare = bare.removesuffix(suffix)
    visible = AIModel.objects.visible_to(organization).filter(family=family).order_by("model_id")
    label = "ControlNet" if family == AIModel.Family.CONTROLNET else "IP-Adapter"
    if family != AIModel.Family.CONTROLNET and not visible.exists():
        raise ValidationError({field: [f"No {label} model is registered on this server."]})
    model = next(
        (
            m
            for m in visible
            if wanted in (list_name(m).lower(), m.model_id.lower())
            or bare in (m.model_id.lower(), m.name.lower())
        ),
        None,
    )
    if model is None:
        raise ValidationError(
            {field: [f"{label} model not found: {name} (GET /controlnet/model_list)."]}
        )
    try:
        addons.resolve(organization, checkpoint, field, [model.model_id], family)
    except addons.AddonError as exc:
        raise ValidationError({field: [exc.message]}) from None
    return model


# The engine kind of a job with ControlNet units, by the kind it would be without them.
JOB_KINDS = {
    "text2img": "controlnet",
    "img2img": "controlnet-img2img",
    "inpaint": "controlnet-inpaint",
}


def apply_units(
    organization: Organization,
    checkpoint: AIModel,
    units: list[Unit],
    fields: dict[str, Any],
    job_kind: str,
    images: Inputs,
) -> str:
    """Put the enabled units into `fields` (GenerationRequest's names); the job's kind after.

    The first ControlNet unit fills the controlnet_* fields, the others controlnet_units, an
    IP-Adapter unit the ip_adapter ones.
    """
    for unit in units:
        if unit.is_ip_adapter:
            fields.update(ip_adapter_fields(organization, checkpoint, unit, images))
    nets = [unit for unit in units if not unit.is_ip_adapter]
    if not nets:
        return job_kind
    # The request's own check would name control_guidance_end; here the unit's field is named.
    strength = fields.get("strength") if job_kind != "text2img" else None
    timesteps = denoising_timesteps(fields["scheduler"], fields["steps"], strength)
    for unit in nets:
        window = (unit.values["guidance_start"], unit.values["guidance_end"])
        problem = control_window_problem(*window, timesteps)
        if problem:
            raise ValidationError({f"{unit.field}.guidance_end": [problem]})
    init = None
    if job_kind != "text2img":
        init = fields["init_image"] = images.load("init_images", fields["init_image"])
    made = [unit_fields(organization, checkpoint, unit, fields, images, init) for unit in nets]
    first = made[0]
    fields.update(
        controlnet_model=first["model"],
        controlnet_type=first["type"],
        control_image=first["image"],
        controlnet_conditioning_scale=first["scale"],
        control_guidance_start=first["start"],
        control_guidance_end=first["end"],
        controlnet_units=made[1:],
        guess_mode=nets[0].values["control_mode"] == CONTROLNET_FIRST,
        # The maps made here arrive ready; an inpaint unit's (with its -1s) is the worker's,
        # made from the init image and mask.
        auto_hint=True,
    )
    return JOB_KINDS[job_kind]


def ip_adapter_fields(
    organization: Organization, checkpoint: AIModel, unit: Unit, images: Inputs
) -> dict[str, Any]:
    """The request's IP-Adapter fields for an ip-adapter unit: model, scale (weight), image."""
    values, field = unit.values, unit.field
    model = find_controlnet(
        organization, checkpoint, values["model"], f"{field}.model", AIModel.Family.IP_ADAPTER
    )
    [(image_text, mask_text)] = values["images"]
    if mask_text:
        check_mask(images.load(f"{field}.mask", mask_text), f"{field}.mask")
    return {
        "ip_adapter": model.model_id,
        "ip_adapter_scale": values["weight"],
        "ip_adapter_image": images.load(f"{field}.image", image_text),
    }


def unit_fields(
    organization: Organization,
    checkpoint: AIModel,
    unit: Unit,
    fields: dict[str, Any],
    images: Inputs,
    init: Any | None,
) -> dict[str, Any]:
    """One ControlNet of the request for an enabled unit, its control map made here.

    A unit without an image (img2img) makes its map from `init`; inpaint_only's map is left to
    the worker (image None: the init image, masked by the request's mask).
    """
    values, field = unit.values, unit.field
    width, height = fields["width"], fields["height"]
    model = find_controlnet(organization, checkpoint, values["model"], f"{field}.model")
    module = values["module"]
    image = init
    if values["images"]:
        [(image_text, mask_text)] = values["images"]
        image = images.load(f"{field}.image", image_text)
        if mask_text:
            check_mask(images.load(f"{field}.mask", mask_text), f"{field}.mask")
    found = {
        "model": model.model_id,
        "type": MODULE_TYPES[module],
        "scale": values["weight"],
        "start": values["guidance_start"],
        "end": values["guidance_end"],
        "field": field,
        "image": image if values["images"] else None,
    }
    if module == "inpaint_only":
        return found
    if image is None:  # check_unit refused it: no image on txt2img
        raise Unprocessable({f"{field}.image": ["An enabled unit needs an image (base64)."]})
    resolution = values["processor_res"]
    if values["pixel_perfect"]:
        resolution = pixel_perfect_resolution(image.size, width, height, values["resize_mode"])
    if module != "none":
        w, h = scaled_size(image.size, resolution)
        limit = settings.PICTOR_INPUT_MAX_PIXELS
        if w * h > limit:
            blame = "pixel_perfect" if values["pixel_perfect"] else "processor_res"
            raise ValidationError(
                {
                    f"{field}.{blame}": [
                        f"The image at this resolution would be {w}×{h} pixels, at most {limit}."
                    ]
                }
            )
    if module == "canny":
        detected = canny(image, resolution, int(values["threshold_a"]), int(values["threshold_b"]))
    elif module == "tile_resample":
        detected = tile_resample(
            image.resize(scaled_size(image.size, resolution)), values["threshold_a"]
        )
    elif module == "shuffle":
        # Seeded by the job's seed, so the same request makes the same map.
        detected = content_shuffle(
            image.resize(scaled_size(image.size, resolution)), fields["seed"]
        )
    else:
        detected = image
    found["image"] = fitted(detected, width, height, values["resize_mode"])
    return found


def check_mask(mask: Any, field: str) -> None:
    """The extension uses a drawn (non-uniform) mask as a scribble; that is not offered."""
    low, high = mask.convert("L").getextrema()
    if not (high <= 5 or low >= 250):
        raise ValidationError(
            {field: ["A drawn mask (the extension's scribble input) is not offered; send none."]}
        )


def pixel_perfect_resolution(size: tuple[int, int], width: int, height: int, mode: int) -> int:
    """The preprocessor resolution that makes the map the output's size (the extension's rule)."""
    raw_w, raw_h = size
    scale_h, scale_w = height / raw_h, width / raw_w
    scale = min(scale_h, scale_w) if mode == RESIZE_AND_FILL else max(scale_h, scale_w)
    return round(scale * min(raw_w, raw_h))


def scaled_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(width, height) of an image whose short side is scaled to `resolution`."""
    scale = resolution / min(size)
    return round(size[0] * scale), round(size[1] * scale)


def resized(pixels: Any, size: tuple[int, int], is_map: bool = False) -> Any:
    """An array resized to (width, height): area when shrinking, cubic when enlarging.

    A black-and-white control map (canny's edges) stays black and white, thresholded after the
    resize as the extension does, so a shrunk edge map keeps its edges rather than going grey.
    """
    import cv2  # lazy: heavy, not loaded at Django start-up
    import numpy as np

    if (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    shrink = size[0] * size[1] < pixels.shape[0] * pixels.shape[1]
    colours = np.unique(pixels.reshape(-1, 3), axis=0) if is_map else ()
    binary = is_map and len(colours) == 2 and pixels.min() < 16 and pixels.max() > 240
    out = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if binary:
        grey = out.mean(axis=2).clip(0, 255).astype(np.uint8)
        _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        out = np.stack([grey] * 3, axis=-1)
    return out


def canny(image: Any, resolution: int, low: int, high: int) -> Any:
    """The extension's canny: at `resolution` (short side), edge-padded to 64 px, on RGB."""
    import cv2  # lazy: heavy, not loaded at Django start-up
    import numpy as np

    pixels = resized(np.asarray(image.convert("RGB")), scaled_size(image.size, resolution))
    h, w = pixels.shape[:2]
    # Padded to a multiple of 64 with its own edge pixels, so the border finds no false edge.
    padded = np.pad(pixels, [[0, -h % 64], [0, -w % 64], [0, 0]], mode="edge")
    edges = cv2.Canny(padded, low, high)[:h, :w]
    return np.stack([edges] * 3, axis=-1)


def fitted(detected: Any, width: int, height: int, mode: int) -> Any:
    """The control map at width × height, by resize_mode (a PIL image)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(detected.convert("RGB")) if hasattr(detected, "convert") else detected
    if mode == JUST_RESIZE:
        return Image.fromarray(resized(pixels, (width, height), is_map=True))
    raw_h, raw_w = pixels.shape[:2]
    pick = min if mode == RESIZE_AND_FILL else max
    scale = pick(height / raw_h, width / raw_w)
    inner = resized(pixels, (round(raw_w * scale), round(raw_h * scale)), is_map=True)
    new_h, new_w = inner.shape[:2]
    if mode == RESIZE_AND_FILL:
        # The gap is filled with the map's median border colour, as the extension fills it.
        border = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
        canvas = np.tile(np.median(border, axis=0).astype(np.uint8), (height, width, 1))
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        canvas[top : top + new_h, left : left + new_w] = inner[:height, :width]
        return Image.fromarray(canvas)
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    cropped = np.ascontiguousarray(inner[top : top + height, left : left + width])
    return Image.fromarray(resized(cropped, (width, height), is_map=True))


# --- the extension's lists ---------------------------------------------------------------


@extend_schema_serializer(component_name="ControlNetModelList")
class ModelListAnswer(Answer):
    """The ControlNet models this tenant may name, as the extension lists them."""

    model_list = serializers.ListField(child=serializers.CharField())


@extend_schema_serializer(component_name="ControlNetModuleList")
class ModuleListAnswer(Answer):
    """The preprocessors offered, and each one's sliders."""

    module_list = serializers.ListField(child=serializers.CharField())
    module_detail = serializers.DictField()


@extend_schema_serializer(component_name="ControlNetVersion")
class VersionAnswer(Answer):
    """The extension API version these units follow."""

    version = serializers.IntegerField()


class ModelListView(A1111View):
    """GET /controlnet/model_list: the ControlNet models this tenant may name in a unit."""

    @extend_schema(
        tags=[TAG],
        summary="ControlNet models (sd-webui-controlnet)",
        request=None,
        parameters=[OpenApiParameter("update", bool, description="Accepted; lists are live.")],
        responses={
            200: ModelListAnswer,
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        models = (
            AIModel.objects.visible_to(request.user.organization)
            .filter(family=AIModel.Family.CONTROLNET)
            .order_by("model_id")
        )
        return Response(ModelListAnswer({"model_list": [list_name(m) for m in models]}).data)


class ModuleListView(A1111View):
    """GET /controlnet/module_list: the preprocessors offered, with their sliders."""

    @extend_schema(
        tags=[TAG],
        summary="ControlNet preprocessors (sd-webui-controlnet)",
        request=None,
        parameters=[
            OpenApiParameter("alias_names", bool, description="Accepted; names and labels agree.")
        ],
        responses={
            200: ModuleListAnswer,
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(
            ModuleListAnswer(
                {
                    "module_list": list(MODULES),
                    "module_detail": {
                        name: {"model_free": False, "sliders": sliders}
                        for name, sliders in MODULES.items()
                    },
                }
            ).data
        )


class VersionView(A1111View):
    """GET /controlnet/version: the extension API version these units follow."""

    @extend_schema(
        tags=[TAG],
        summary="ControlNet API version (sd-webui-controlnet)",
        request=None,
        responses={
            200: VersionAnswer,
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(VersionAnswer({"version": API_VERSION}).data)
