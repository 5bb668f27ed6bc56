"""Write a diffusers SD 1.x folder as one original-format (LDM / A1111) `.safetensors` file.

The inverse of diffusers' single-file conversion (`diffusers.loaders.single_file_utils`),
after the diffusers repository's `scripts/convert_diffusers_to_original_stable_diffusion.py`.
That script hard-codes SD 1.5's four UNet levels with two layers each; here the block numbers
come from the model's own configs, so it fits the demo's 2-level UNet, 4-level VAE and 4-layer
CLIP as well as a full-size model. Every key must find a home, so a model this does not cover
fails loudly instead of writing a checkpoint that loads with weights missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# Whole keys that are named differently, diffusers -> LDM.
UNET_KEYS = {
    "time_embedding.linear_1.weight": "time_embed.0.weight",
    "time_embedding.linear_1.bias": "time_embed.0.bias",
    "time_embedding.linear_2.weight": "time_embed.2.weight",
    "time_embedding.linear_2.bias": "time_embed.2.bias",
    "conv_in.weight": "input_blocks.0.0.weight",
    "conv_in.bias": "input_blocks.0.0.bias",
    "conv_norm_out.weight": "out.0.weight",
    "conv_norm_out.bias": "out.0.bias",
    "conv_out.weight": "out.2.weight",
    "conv_out.bias": "out.2.bias",
}
# Inside a ResNet block, diffusers -> LDM.
UNET_RESNET_PARTS = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
VAE_RESNET_PARTS = [("conv_shortcut", "nin_shortcut")]
# The VAE's mid-block attention: diffusers' linear layers are 1x1 convolutions in LDM.
VAE_ATTENTION_PARTS = [
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
]


def _read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def _load(file: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(file))


def _rename(
    state_dict: dict[str, Any],
    keys: dict[str, str],
    prefixes: dict[str, str],
    parts: dict[str, list[tuple[str, str]]],
) -> dict[str, Any]:
    """Map each key by its whole name, else its longest known prefix (with in-block renames)."""
    out: dict[str, Any] = {}
    by_length = sorted(prefixes, key=len, reverse=True)
    for key, tensor in state_dict.items():
        if key in keys:
            out[keys[key]] = tensor
            continue
        prefix = next((p for p in by_length if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"no LDM name for {key!r}")
        rest = key[len(prefix) :]
        for kind, renames in parts.items():
            if kind in prefix:
                for old, new in renames:
                    rest = rest.replace(old, new)
        out[prefixes[prefix] + rest] = tensor
    return out


def unet_to_ldm(state_dict: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A UNet2DConditionModel state dict under LDM names (without the model prefix)."""
    levels = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("per-level layers_per_block is not supported")
    per_level = layers + 1  # LDM numbers each level's layers plus its down/upsampler
    prefixes = {
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i in range(levels):
        for j in range(layers):
            block = i * per_level + j + 1
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{block}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{block}.1."
        for j in range(per_level):
            block = i * per_level + j
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{block}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{block}.1."
        if i < levels - 1:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = (
                f"input_blocks.{(i + 1) * per_level}.0.op."
            )
            # The upsampler follows the level's last layer: after its attention when it has one.
            slot = 2 if "CrossAttn" in config["up_block_types"][i] else 1
            prefixes[f"up_blocks.{i}.upsamplers.0."] = (
                f"output_blocks.{i * per_level + layers}.{slot}."
            )
    return _rename(state_dict, UNET_KEYS, prefixes, {"resnets": UNET_RESNET_PARTS})


def vae_to_ldm(state_dict: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """An AutoencoderKL state dict under LDM names (without the model prefix)."""
    levels = len(config["block_out_channels"])
    keys = {
        "encoder.conv_norm_out.weight": "encoder.norm_out.weight",
        "encoder.conv_norm_out.bias": "encoder.norm_out.bias",
        "decoder.conv_norm_out.weight": "decoder.norm_out.weight",
        "decoder.conv_norm_out.bias": "decoder.norm_out.bias",
    }
    prefixes = {}
    for side in ("encoder", "decoder"):
        for name in ("conv_in.", "conv_out."):
            prefixes[f"{side}.{name}"] = f"{side}.{name}"
        for k in range(2):
            prefixes[f"{side}.mid_block.resnets.{k}."] = f"{side}.mid.block_{k + 1}."
        prefixes[f"{side}.mid_block.attentions.0."] = f"{side}.mid.attn_1."
    for name in ("quant_conv.", "post_quant_conv."):
        prefixes[name] = name
    for i in range(levels):
        # The decoder's levels run the other way round in LDM.
        up = levels - 1 - i
        prefixes[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        prefixes[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{up}.block."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{up}.upsample."
    renamed = _rename(
        state_dict,
        keys,
        prefixes,
        {"resnets": VAE_RESNET_PARTS, "attentions": VAE_ATTENTION_PARTS},
    )
    for key, tensor in renamed.items():
        if ".mid.attn_1." in key and key.endswith(
            ("q.weight", "k.weight", "v.weight", "proj_out.weight")
        ):
            renamed[key] = tensor.reshape(*tensor.shape, 1, 1)
    return renamed


def clip_to_ldm(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A CLIPTextModel state dict under SD 1.x checkpoint names (with the prefix)."""
    # transformers >= 5.6 saves CLIPTextModel without its `text_model.` wrapper; older ones with.
    return {CLIP_PREFIX + key.removeprefix("text_model."): t for key, t in state_dict.items()}


def write_ldm_checkpoint(diffusers_dir: str | Path, target: str | Path) -> Path:
    """Write the SD 1.x pipeline in diffusers_dir as one original-format checkpoint at target."""
    from safetensors.torch import save_file

    folder = Path(diffusers_dir)
    unet = unet_to_ldm(
        _load(folder / "unet" / "diffusion_pytorch_model.safetensors"),
        _read_config(folder / "unet"),
    )
    vae = vae_to_ldm(
        _load(folder / "vae" / "diffusion_pytorch_model.safetensors"),
        _read_config(folder / "vae"),
    )
    text = clip_to_ldm(_load(folder / "text_encoder" / "model.safetensors"))
    checkpoint = {
        **{UNET_PREFIX + k: v for k, v in unet.items()},
        **{VAE_PREFIX + k: v for k, v in vae.items()},
        **text,
    }
    target = Path(target)
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(target))
    return target
