"""The diffusers classes of every family and kind, and the pipelines derived per request.

img2img, inpaint, ControlNet and the hires-fix pass share the loaded components of the
checkpoint's text2img pipeline: from_pipe builds a new pipeline object around the same
modules, so no weights are loaded or copied again.

This module is the one place that maps families and kinds to diffusers class names: the loader,
the single-file loader and the model importer all read these tables.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

# The diffusers class each family loads as (img2img, inpaint and ControlNet pipelines are
# derived from it with from_pipe, sharing its weights). Keys are `pipeline_family` values.
CHECKPOINT_CLASSES = {
    "sd15": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
    "inpaint-sdxl": "StableDiffusionXLInpaintPipeline",
    "upscaler": "StableDiffusionUpscalePipeline",
    # An SDXL refiner finishes an SDXL job's last steps (refiner.py); it is no request's model.
    "refiner": "StableDiffusionXLImg2ImgPipeline",
}
# The same from a single original-format file: the upscaler has no single-file form.
SINGLE_FILE_CLASSES = {
    family: name for family, name in CHECKPOINT_CLASSES.items() if family != "upscaler"
}
# Add-ons that are one model, not a pipeline.
MODEL_CLASSES = {"controlnet": "ControlNetModel", "vae": "AutoencoderKL"}

# (checkpoint family, request kind) -> diffusers pipeline class name.
PIPELINES = {
    ("sd15", "text2img"): "StableDiffusionPipeline",
    ("sd15", "img2img"): "StableDiffusionImg2ImgPipeline",
    ("sd15", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd15", "controlnet"): "StableDiffusionControlNetPipeline",
    ("sd2", "text2img"): "StableDiffusionPipeline",
    ("sd2", "img2img"): "StableDiffusionImg2ImgPipeline",
    ("sd2", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd2", "controlnet"): "StableDiffusionControlNetPipeline",
    ("sdxl", "text2img"): "StableDiffusionXLPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("sdxl", "controlnet"): "StableDiffusionXLControlNetPipeline",
    # ControlNet on img2img and inpaint (generation/engine/controlnets.py).
    ("sd15", "controlnet-img2img"): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd15", "controlnet-inpaint"): "StableDiffusionControlNetInpaintPipeline",
    ("sd2", "controlnet-img2img"): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd2", "controlnet-inpaint"): "StableDiffusionControlNetInpaintPipeline",
    ("sdxl", "controlnet-img2img"): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("sdxl", "controlnet-inpaint"): "StableDiffusionXLControlNetInpaintPipeline",
    # A 9-channel inpainting UNet only makes sense with a mask.
    ("inpaint", "inpaint"): "StableDiffusionInpaintPipeline",
    ("inpaint-sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("inpaint", "controlnet-inpaint"): "StableDiffusionControlNetInpaintPipeline",
    ("inpaint-sdxl", "controlnet-inpaint"): "StableDiffusionXLControlNetInpaintPipeline",
}

# (checkpoint family, request kind) -> the diffusers PAG pipeline for it (variations.py).
PAG_PIPELINES = {
    **{
        (family, kind): name
        for family in ("sd15", "sd2")
        for kind, name in (
            ("text2img", "StableDiffusionPAGPipeline"),
            ("img2img", "StableDiffusionPAGImg2ImgPipeline"),
            ("inpaint", "StableDiffusionPAGInpaintPipeline"),
            ("controlnet", "StableDiffusionControlNetPAGPipeline"),
        )
    },
    ("sdxl", "text2img"): "StableDiffusionXLPAGPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLPAGImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLPAGInpaintPipeline",
    ("sdxl", "controlnet"): "StableDiffusionXLControlNetPAGPipeline",
    ("inpaint", "inpaint"): "StableDiffusionPAGInpaintPipeline",
    ("inpaint-sdxl", "inpaint"): "StableDiffusionXLPAGInpaintPipeline",
}


def pipeline_family(family: str, base: str) -> str:
    """The key of PIPELINES and CHECKPOINT_CLASSES: inpainting checkpoints differ by base."""
    return "inpaint-sdxl" if family == "inpaint" and base == "sdxl" else family


def registered_family(family: str) -> str:
    """The family a model is registered as for a `pipeline_family` key (inverse of it)."""
    return "inpaint" if family == "inpaint-sdxl" else family


def _families_by_class() -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for key, name in CHECKPOINT_CLASSES.items():
        family = registered_family(key)
        if family not in found.get(name, ()):
            found[name] = (*found.get(name, ()), family)
    return found


# A pipeline folder's model_index.json `_class_name` -> the registered families it can be.
FAMILIES_BY_CLASS = _families_by_class()
# A single-model folder's config.json `_class_name` -> its family.
FAMILY_BY_MODEL_CLASS = {name: family for family, name in MODEL_CLASSES.items()}


def without_builtin_safety_checker(cls: type[Any]) -> dict[str, Any]:
    """from_pretrained/from_single_file arguments that switch off diffusers' own checker.

    Pictor runs its own checker (safety.py) on every family alike; the SDXL classes take no
    safety_checker argument at all.
    """
    accepted = inspect.signature(cls.__init__).parameters
    return {
        k: v
        for k, v in (("safety_checker", None), ("requires_safety_checker", False))
        if k in accepted
    }


def has_second_prompt(family: str) -> bool:
    """Whether checkpoints of this family take prompt_2 / negative_prompt_2 (SDXL's 2nd encoder)."""
    return family in ("sdxl", "inpaint-sdxl")


def supported_kinds(family: str) -> list[str]:
    """The request kinds a checkpoint of this family can serve."""
    return [kind for fam, kind in PIPELINES if fam == family]


def kind_error(family: str, kind: str) -> str | None:
    """Why a checkpoint of `family` cannot serve `kind`, or None when it can."""
    if (family, kind) in PIPELINES:
        return None
    kinds = supported_kinds(family)
    if not kinds:
        return f"A {family} model is not a checkpoint and cannot generate images."
    return f"A {family} model cannot run {kind}; it serves {', '.join(kinds)}."


def pipeline_for(
    base: Any, family: str, kind: str, name: str | None = None, **components: Any
) -> Any:
    """A pipeline for `kind` sharing base's modules (extra components, e.g. controlnet, added).

    `name` picks another diffusers class for the kind (a PAG or panorama one, variations.py).
    """
    import diffusers  # lazy: heavy, not loaded at Django start-up

    error = kind_error(family, kind)
    if error:
        raise ValueError(error)
    cls = getattr(diffusers, name or PIPELINES[(family, kind)])
    # from_pipe casts every shared module to `dtype` (float32 unless told): pass the base's own
    # dtype, or an fp16 GPU pipeline would be converted in place for everyone. That cast is a
    # no-op, but diffusers warns about it on every call; the warning says nothing here.
    modeling_log = logging.getLogger("diffusers.models.modeling_utils")
    level = modeling_log.level
    modeling_log.setLevel(logging.ERROR)
    try:
        pipe = cls.from_pipe(base, dtype=base.dtype, **components)
    finally:
        modeling_log.setLevel(level)
    pipe.set_progress_bar_config(disable=True)
    return pipe
