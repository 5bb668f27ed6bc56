"""Add-ons that fit demo-sd15: ControlNets (canny, tile, shuffle, inpaint), two LoRAs, a
textual-inversion embedding, a VAE.

Each is saved in the layout real ones ship in, so the engine loads them with diffusers' own
loaders. Trained add-ons start from zeros that change nothing (ControlNet's zero convolutions,
LoRA's B matrices); here they get seeded random weights so each one visibly changes the pixels.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from generation.engine.demo import TEXT_WIDTH, _build_pipeline, _vae, build_atomically

if TYPE_CHECKING:
    import torch

MODEL_WEIGHTS = "diffusion_pytorch_model.safetensors"
# The file names diffusers looks for first, so `weight_name=` is optional when loading.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
EMBEDDING_WEIGHTS = "learned_embeds.safetensors"
LORA_RANK = 4
EMBEDDING_VECTORS = 2
UNET_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _randomize(tensors: list[torch.Tensor], std: float) -> None:
    """Refill tensors in place with normal noise from the global torch seed."""
    import torch  # lazy: heavy, not loaded at Django start-up

    with torch.no_grad():
        for tensor in tensors:
            tensor.normal_(0.0, std)


def _write_controlnet(seed: int, scratch: str, out: str) -> None:
    """Save a ControlNet for demo-sd15 (config.json + weights), its weights seeded by seed."""
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers import ControlNetModel

    unet = _build_pipeline(scratch).unet
    torch.manual_seed(seed)
    # A small conditioning encoder: three stride-2 convs take the image to latent size.
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(8, 16, 16, 16)
    )
    with torch.no_grad():
        # PyTorch's default init shrinks the signal at each SiLU, so after seven convs the
        # image is lost in the biases; a gain of 2 per conv keeps it near unit scale.
        for conv in controlnet.controlnet_cond_embedding.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0.0, 2.0 / math.sqrt(conv.weight[0].numel()))
                if conv.bias is not None:  # always there: these convs have biases
                    conv.bias.zero_()
    zero_convs = [block.weight for block in controlnet.controlnet_down_blocks]
    _randomize([*zero_convs, controlnet.controlnet_mid_block.weight], std=0.3)
    controlnet.save_pretrained(out, safe_serialization=True)


def build_demo_controlnet_canny(target_dir: str) -> bool:
    """Build a ControlNet for demo-sd15 (config.json + weights); False if it was already there."""
    return build_atomically(target_dir, MODEL_WEIGHTS, lambda s, o: _write_controlnet(4, s, o))


def build_demo_controlnet_tile(target_dir: str) -> bool:
    """Build a "tile" ControlNet for demo-sd15 (other weights); False if already there."""
    return build_atomically(target_dir, MODEL_WEIGHTS, lambda s, o: _write_controlnet(12, s, o))


def build_demo_controlnet_shuffle(target_dir: str) -> bool:
    """Build a "shuffle" ControlNet for demo-sd15 (other weights); False if already there."""
    return build_atomically(target_dir, MODEL_WEIGHTS, lambda s, o: _write_controlnet(13, s, o))


def build_demo_controlnet_inpaint(target_dir: str) -> bool:
    """Build an "inpaint" ControlNet for demo-sd15 (other weights); False if already there."""
    return build_atomically(target_dir, MODEL_WEIGHTS, lambda s, o: _write_controlnet(14, s, o))


def _write_lora(seed: int, scratch: str, out: str) -> None:
    """Save rank-4 LoRAs for demo-sd15's UNet attention and text encoder, seeded by seed."""
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict  # lazy: heavy, not loaded at Django start-up

    pipe = _build_pipeline(scratch)
    # alpha == rank, so the LoRA applies at scale 1 and a request's weight is the only factor.
    pipe.unet.add_adapter(
        LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=UNET_LORA_TARGETS)
    )
    pipe.text_encoder.add_adapter(
        LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=TEXT_LORA_TARGETS)
    )
    torch.manual_seed(seed)
    for model in (pipe.unet, pipe.text_encoder):
        _randomize([p for name, p in model.named_parameters() if ".lora_" in name], std=0.3)
    StableDiffusionPipeline.save_lora_weights(
        out,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(
            get_peft_model_state_dict(pipe.text_encoder)
        ),
        weight_name=LORA_WEIGHTS,
        safe_serialization=True,
    )


def build_demo_lora_a(target_dir: str) -> bool:
    """Build LoRA "a" for demo-sd15; False if it was already there."""
    return build_atomically(target_dir, LORA_WEIGHTS, lambda s, o: _write_lora(10, s, o))


def build_demo_lora_b(target_dir: str) -> bool:
    """Build LoRA "b" for demo-sd15, with other weights than "a"; False if it was already there."""
    return build_atomically(target_dir, LORA_WEIGHTS, lambda s, o: _write_lora(11, s, o))


def build_demo_embedding(target_dir: str) -> bool:
    """Build a 2-vector textual-inversion embedding for demo-sd15; False if it was already there."""

    def write(_scratch: str, out: str) -> None:
        import torch  # lazy: heavy, not loaded at Django start-up
        from safetensors.torch import save_file

        torch.manual_seed(5)
        # A1111's safetensors layout: one "emb_params" tensor, the token named by whoever loads
        # it. CLIP's token embeddings are ~0.02 std; these stand far out so the token acts.
        vectors = torch.randn(EMBEDDING_VECTORS, TEXT_WIDTH)
        os.makedirs(out)
        save_file({"emb_params": vectors.contiguous()}, os.path.join(out, EMBEDDING_WEIGHTS))

    return build_atomically(target_dir, EMBEDDING_WEIGHTS, write)


def build_demo_vae(target_dir: str) -> bool:
    """Build a VAE shaped like demo-sd15's with other weights; False if it was already there."""

    def write(_scratch: str, out: str) -> None:
        import torch  # lazy: heavy, not loaded at Django start-up

        torch.manual_seed(6)
        _vae().save_pretrained(out, safe_serialization=True)

    return build_atomically(target_dir, MODEL_WEIGHTS, write)
