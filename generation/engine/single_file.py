"""Load original-format (LDM / A1111 / civitai) single-file checkpoints, offline.

diffusers' `from_single_file` converts the weights itself but needs a diffusers folder for the
component configs and the tokenizer: given none, it looks up a default repository on the Hub.
Pictor must work air-gapped, so a single-file model is always registered with a local config
folder (model_index.json, component configs and tokenizer files; weights not needed).
"""

from __future__ import annotations

import json
import os
import struct
from typing import TYPE_CHECKING, Any, NamedTuple

from generation.engine.pipelines import SINGLE_FILE_CLASSES, without_builtin_safety_checker

if TYPE_CHECKING:
    # From its defining module: to mypy, `from diffusers import DiffusionPipeline` is the
    # attribute-less placeholder diffusers defines for installs without torch.
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

SDXL_INPAINT_CLASS = SINGLE_FILE_CLASSES["inpaint-sdxl"]

# Keys that tell the architectures apart (the ones diffusers' own model-type inference uses).
_UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
_SDXL_TEXT = "conditioner.embedders.1."
_SD2_TEXT = "cond_stage_model.model."
_SD1_TEXT = "cond_stage_model.transformer."
# A header larger than this is no safetensors file (real ones are a few hundred KB).
_MAX_HEADER = 100 * 1024 * 1024


class Detected(NamedTuple):
    """What a checkpoint file's tensor names say it is."""

    family: str
    base: str


def read_safetensors_shapes(path: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a .safetensors header, without loading any weights."""
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", prefix)
        if size > _MAX_HEADER:
            raise ValueError(f"{path} is not a safetensors file (bad header size)")
        try:
            header = json.loads(fh.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{path} is not a safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not a table)")
    return {
        name: list(entry["shape"])
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }


def detect_family(path: str) -> Detected | None:
    """The family and base of an original-format checkpoint file, or None if it is not one."""
    shapes = read_safetensors_shapes(path)
    conv_in = shapes.get(_UNET_CONV_IN)
    if conv_in is None or len(conv_in) != 4:
        return None  # no LDM UNet: a LoRA, an embedding, a VAE, or a diffusers-format file
    if any(name.startswith(_SDXL_TEXT) for name in shapes):
        base = "sdxl"
    elif any(name.startswith(_SD2_TEXT) for name in shapes):
        base = "sd2"
    elif any(name.startswith(_SD1_TEXT) for name in shapes):
        base = "sd15"
    else:
        return None
    # An inpainting UNet also takes the masked image's latents and the mask: 4 + 4 + 1 channels.
    family = "inpaint" if conv_in[1] == 9 else base
    return Detected(family, base)


def config_error(config_path: str) -> str | None:
    """Why config_path cannot serve as a single file's config folder, or None when it can."""
    if not config_path:
        return "a single-file checkpoint needs a local diffusers config folder"
    if not os.path.isfile(os.path.join(config_path, "model_index.json")):
        return f"{config_path} is not a diffusers folder (no model_index.json)"
    return None


def pipeline_class_name(family: str, config_path: str) -> str:
    """The diffusers pipeline class for a single file of this family with this config folder."""
    if family not in SINGLE_FILE_CLASSES:
        raise ValueError(
            f"cannot load a {family} model from a single file; "
            f"checkpoint families are {', '.join(SINGLE_FILE_CLASSES)}"
        )
    if family == "inpaint":
        with open(os.path.join(config_path, "model_index.json"), encoding="utf-8") as fh:
            if "text_encoder_2" in json.load(fh):
                return SDXL_INPAINT_CLASS
    return SINGLE_FILE_CLASSES[family]


def load_single_file(path: str, family: str, config_path: str, dtype: Any) -> DiffusionPipeline:
    """Load a single-file checkpoint with the configs and tokenizer in folder config_path (CPU)."""
    # Lazy: importing this module (the importer, the web tier) must not load diffusers/torch.
    import diffusers  # lazy: heavy, not loaded at Django start-up

    error = config_error(config_path)
    if error:
        raise ValueError(f"{path}: {error}")
    cls = getattr(diffusers, pipeline_class_name(family, config_path))
    extra = without_builtin_safety_checker(cls)
    # `config` a local folder: diffusers reads it directly and never asks the Hub.
    return cls.from_single_file(
        path, config=config_path, local_files_only=True, dtype=dtype, **extra
    )
