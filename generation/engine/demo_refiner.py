"""A tiny SDXL refiner for demo-sdxl, shaped like stabilityai's stable-diffusion-xl-refiner.

Like the real refiner it has only the second text encoder, takes an aesthetic score instead of
the target size in its micro-conditioning, and ships the very same VAE and second text encoder
as its base: here demo-sdxl's, rebuilt from the same seed, so the engine may share the base's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from generation.engine import demo

if TYPE_CHECKING:
    # From its defining module: to mypy, `from diffusers import X` is the placeholder class
    # diffusers defines for installs without torch (dummy_pt_objects), which has no attributes.
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
        StableDiffusionXLImg2ImgPipeline,
    )

# The refiner's micro-conditioning: original size (2), crop (2) and the aesthetic score (1).
REFINER_TIME_IDS = 5
REFINER_SEED = 4


def _build_refiner_pipeline(scratch: str) -> StableDiffusionXLImg2ImgPipeline:
    """The demo refiner: demo-sdxl's VAE and second encoder, a UNet of its own (seeded)."""
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
        StableDiffusionXLImg2ImgPipeline,
    )

    base = demo._build_sdxl_pipeline(scratch)
    torch.manual_seed(REFINER_SEED)
    # Cross-attention sees the second encoder alone (the real refiner's 1280 wide); the time
    # embedding takes its pooled projection plus the five embedded numbers.
    unet = demo.sdxl_unet(cross_attention_dim=demo.TEXT_WIDTH, time_ids=REFINER_TIME_IDS)
    # No first text encoder, and an empty negative prompt is encoded, not zeroed: as the
    # refiner's own model_index.json says.
    no_first_encoder: dict = {"text_encoder": None, "tokenizer": None}
    return StableDiffusionXLImg2ImgPipeline(
        vae=base.vae,
        text_encoder_2=base.text_encoder_2,
        tokenizer_2=base.tokenizer_2,
        unet=unet,
        scheduler=base.scheduler,
        **no_first_encoder,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )


def build_demo_sdxl_refiner(target_dir: str) -> bool:
    """Build the tiny SDXL refiner into target_dir; False if it was already there."""
    return demo.build_atomically(
        target_dir, demo.PIPELINE_MARKER, demo._save_pipeline(_build_refiner_pipeline)
    )
