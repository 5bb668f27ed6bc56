"""Which diffusers pipeline runs a request, derived from the cached checkpoint with from_pipe.

img2img, inpaint, ControlNet and the hires-fix pass share the loaded components of the
checkpoint's text2img pipeline: from_pipe builds a new pipeline object around the same
modules, so no weights are loaded or copied again.
"""

from __future__ import annotations

import logging
from typing import Any

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
    # A 9-channel inpainting UNet only makes sense with a mask.
    ("inpaint", "inpaint"): "StableDiffusionInpaintPipeline",
    ("inpaint-sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
}


def pipeline_family(family: str, base: str) -> str:
    """The key PIPELINES (and the loader) use: inpainting checkpoints differ by architecture."""
    return "inpaint-sdxl" if family == "inpaint" and base == "sdxl" else family


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


def pipeline_for(base: Any, family: str, kind: str, **components: Any) -> Any:
    """A pipeline for `kind` sharing base's modules (extra components, e.g. controlnet, added)."""
    import diffusers

    error = kind_error(family, kind)
    if error:
        raise ValueError(error)
    cls = getattr(diffusers, PIPELINES[(family, kind)])
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
