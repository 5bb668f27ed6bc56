"""An IP-Adapter (image prompt) for demo-sd15, in the layout h94/IP-Adapter ships.

The folder holds `image_encoder/` (a CLIPVisionModelWithProjection: config.json and
model.safetensors) next to one `ip-adapter_*.safetensors` whose "image_proj." and "ip_adapter."
keys diffusers' `load_ip_adapter` reads. Sizes are shrunk to demo-sd15's cross-attention
(TEXT_WIDTH wide) and the weights are seeded random numbers, strong enough that the adapter's
scale visibly changes the pixels.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from generation.engine.demo import TEXT_WIDTH, _build_pipeline, build_atomically

if TYPE_CHECKING:
    import torch

# The names the engine looks for (generation/engine/ip_adapter.py), as in h94/IP-Adapter.
IP_ADAPTER_WEIGHTS = "ip-adapter_sd15.safetensors"
IMAGE_ENCODER_FOLDER = "image_encoder"
# The plain IP-Adapter turns one image embedding into this many extra cross-attention tokens.
IMAGE_TOKENS = 4
# CLIP's input size, so the processor diffusers builds from the encoder's config is CLIP's own;
# 32 px patches keep the tiny encoder at 49 patches.
IMAGE_SIZE = 224
PATCH_SIZE = 32
IMAGE_EMBED_WIDTH = 32
# The adapter's key/value weights, in units of 1/sqrt(fan-in): large enough to show at scale 1.
IP_GAIN = 1.5


def _write_image_encoder(out: str) -> None:
    """Save a 2-layer CLIP vision encoder with a projection, seeded."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=IMAGE_EMBED_WIDTH,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(
        os.path.join(out, IMAGE_ENCODER_FOLDER), safe_serialization=True
    )


def _hidden_width(unet: Any, processor: str) -> int:
    """The channel width of the UNet block a cross-attention processor sits in."""
    widths = list(unet.config.block_out_channels)
    if processor.startswith("mid_block"):
        return widths[-1]
    blocks, index = processor.split(".")[:2]
    return (widths if blocks == "down_blocks" else widths[::-1])[int(index)]


def _adapter_weights(scratch: str) -> dict[str, torch.Tensor]:
    """image_proj and per-cross-attention to_k_ip / to_v_ip weights for demo-sd15's UNet."""
    import torch  # lazy: heavy, not loaded at Django start-up

    unet = _build_pipeline(scratch).unet
    torch.manual_seed(8)
    weights = {
        # Scaled so the image tokens come out near unit size before their LayerNorm.
        "image_proj.proj.weight": torch.randn(IMAGE_TOKENS * TEXT_WIDTH, IMAGE_EMBED_WIDTH)
        * (2.0 / math.sqrt(IMAGE_EMBED_WIDTH)),
        "image_proj.proj.bias": torch.zeros(IMAGE_TOKENS * TEXT_WIDTH),
        "image_proj.norm.weight": torch.ones(TEXT_WIDTH),
        "image_proj.norm.bias": torch.zeros(TEXT_WIDTH),
    }
    # diffusers numbers the adapter's layers 1, 3, 5, ... over the UNet's cross-attention
    # processors in order (the ids in between were the self-attentions of the original code).
    cross = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
    for index, name in enumerate(cross):
        hidden = _hidden_width(unet, name)
        for part in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{2 * index + 1}.{part}.weight"] = torch.randn(
                hidden, TEXT_WIDTH
            ) * (IP_GAIN / math.sqrt(TEXT_WIDTH))
    return weights


def build_demo_ip_adapter(target_dir: str) -> bool:
    """Build the IP-Adapter for demo-sd15 (with its image encoder); False if already there."""

    def write(scratch: str, out: str) -> None:
        import torch  # lazy: heavy, not loaded at Django start-up
        from safetensors.torch import save_file

        weights = _adapter_weights(scratch)
        os.makedirs(out)
        torch.manual_seed(7)
        _write_image_encoder(out)
        save_file(
            {name: t.contiguous() for name, t in weights.items()},
            os.path.join(out, IP_ADAPTER_WEIGHTS),
        )

    return build_atomically(target_dir, IP_ADAPTER_WEIGHTS, write)
