"""Tiny Stable Diffusion-shaped checkpoints built locally, for tests and CPU demos.

They use the real diffusers classes and folder layouts, so they load through the same code path
as real checkpoints; only the sizes are shrunk and the weights are seeded random numbers. The
add-ons that fit demo-sd15 (ControlNet, LoRA, embedding, VAE) are in `demo_addons`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # From their defining modules: to mypy, `from diffusers import X` is the placeholder class
    # diffusers defines for installs without torch (dummy_pt_objects), which has no attributes.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import (
        StableDiffusionInpaintPipeline,
    )
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_upscale import (
        StableDiffusionUpscalePipeline,
    )
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextConfig, CLIPTokenizer

# SD 1.5's noise schedule: the part of a real config that shapes sampling, kept verbatim.
SD15_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
MAX_TOKENS = 77
TEXT_WIDTH = 32
PIPELINE_MARKER = "model_index.json"
# SDXL's micro-conditioning: six size/crop numbers, each embedded this wide, plus the pooled text.
SDXL_TIME_EMBED_WIDTH = 8
# The x4 upscaler's latents are scaled by this (a value its pipeline checks for).
UPSCALER_VAE_SCALING = 0.08333


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (from the original BPE code)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _byte_vocab() -> dict[str, int]:
    """A merge-free byte-level vocabulary: every byte alone and at the end of a word."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def _build_tokenizer(work_dir: str) -> CLIPTokenizer:
    """A CLIP tokenizer from files written here, so nothing is fetched from the Hub."""
    from transformers import CLIPTokenizer  # lazy: heavy, not loaded at Django start-up

    os.makedirs(work_dir, exist_ok=True)
    vocab_file = os.path.join(work_dir, "vocab.json")
    merges_file = os.path.join(work_dir, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as fh:
        json.dump(_byte_vocab(), fh, ensure_ascii=False)
    with open(merges_file, "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(work_dir, model_max_length=MAX_TOKENS)


def _text_config(tokenizer: CLIPTokenizer, **overrides: Any) -> CLIPTextConfig:
    """A 4-layer CLIP text encoder config, TEXT_WIDTH wide, for the byte-level tokenizer."""
    from transformers import CLIPTextConfig  # lazy: heavy, not loaded at Django start-up

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )


def _boost_unet(unet: UNet2DConditionModel) -> None:
    """Scale a seeded UNet so its prediction is near unit scale and the prompt matters."""
    import torch  # lazy: heavy, not loaded at Django start-up

    # Seeded init leaves the noise prediction at ~0.3 std with the prompt barely mattering;
    # these gains bring it near unit scale and make text conditioning (prompt, negative
    # prompt, clip skip, embeddings) visibly change the pixels.
    with torch.no_grad():
        unet.conv_out.weight.mul_(3.0)
        if unet.conv_out.bias is not None:  # always there: the UNet builds conv_out with one
            unet.conv_out.bias.mul_(3.0)
        for name, module in unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                module.weight.mul_(4.0)


def _sd15_unet() -> UNet2DConditionModel:
    """demo-sd15's UNet, from the global torch seed."""
    # lazy: heavy, not loaded at Django start-up (and from its own module: see the top)
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    # Two UNet levels instead of SD's four: on a 2-core CPU every extra level costs ~10 ms a step
    # in per-op overhead alone. Cross-attention sits at the top level as in SD, so attention
    # patches such as tomesd (which act on the top levels only) visibly change the demo's output.
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TEXT_WIDTH,
        # diffusers reads this as the head count; one head keeps the tiny model fast on CPU.
        attention_head_dim=1,
    )
    _boost_unet(unet)
    return unet


def _vae(levels: int = 4, **overrides: Any) -> AutoencoderKL:
    """demo-sd15's VAE architecture (or the same with fewer levels), from the global torch seed."""
    # lazy: heavy, not loaded at Django start-up (and from its own module: see the top)
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    # Each level after the first halves the size: four levels give real SD's 8x latent scale.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(8, 16, 16, 16)[:levels],
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=256,
        **overrides,
    )


def _build_pipeline(scratch: str) -> StableDiffusionPipeline:
    """The demo-sd15 pipeline, with weights fixed by the seed."""
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from diffusers.schedulers.scheduling_pndm import PNDMScheduler
    from transformers import CLIPTextModel

    tokenizer = _build_tokenizer(scratch)
    torch.manual_seed(0)
    unet = _sd15_unet()
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    # SD 1.5 ships PNDM with these flags; keeping them avoids diffusers' config-fixing warnings.
    scheduler = PNDMScheduler(
        **SD15_SCHEDULE,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    # No checker: diffusers takes None for both with requires_safety_checker=False, though its
    # annotations name only the classes (a dict of Any passes them without an ignore).
    no_checker: dict[str, Any] = {"safety_checker": None, "feature_extractor": None}
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        **no_checker,
        requires_safety_checker=False,
    )


def _build_inpaint_pipeline(scratch: str) -> StableDiffusionInpaintPipeline:
    """demo-sd15 with a 9-channel UNet: latents, the mask, and the masked image's latents."""
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import (
        StableDiffusionInpaintPipeline,
    )

    base = _build_pipeline(scratch)
    # Like SD's inpainting checkpoints, start from the base UNet and widen its input conv; the
    # five new channels get seeded random weights (not zeros) so mask and image visibly act.
    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_config(base.unet.config, in_channels=9)
    state = base.unet.state_dict()
    wide = unet.conv_in.weight.detach().clone()
    wide[:, :4] = state["conv_in.weight"]
    state["conv_in.weight"] = wide
    unet.load_state_dict(state)
    components = {**base.components, "unet": unet}
    return StableDiffusionInpaintPipeline(**components, requires_safety_checker=False)


def sdxl_unet(cross_attention_dim: int, time_ids: int) -> UNet2DConditionModel:
    """A boosted SDXL-shaped UNet (demo-sdxl's, or its refiner's), from the global torch seed.

    Its time embedding takes `time_ids` embedded size/crop numbers plus the pooled text.
    """
    # lazy: heavy, not loaded at Django start-up (and from its own module: see the top)
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=1,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_WIDTH,
        projection_class_embeddings_input_dim=time_ids * SDXL_TIME_EMBED_WIDTH + TEXT_WIDTH,
    )
    _boost_unet(unet)
    return unet


def _build_sdxl_pipeline(scratch: str) -> StableDiffusionXLPipeline:
    """A tiny SDXL: two CLIP text encoders and a UNet with SDXL's text_time conditioning."""
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _build_tokenizer(scratch)
    torch.manual_seed(2)
    # SDXL concatenates both encoders' hidden states for cross-attention, and feeds the second
    # one's pooled projection plus six embedded size/crop numbers into the time embedding.
    unet = sdxl_unet(cross_attention_dim=2 * TEXT_WIDTH, time_ids=6)
    vae = _vae(scaling_factor=0.13025)  # SDXL's VAE scaling
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=TEXT_WIDTH))
    # SDXL ships Euler with "leading" spacing.
    scheduler = EulerDiscreteScheduler(**SD15_SCHEDULE, steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def _build_upscaler_pipeline(scratch: str) -> StableDiffusionUpscalePipeline:
    """A tiny x4 upscaler: the low-res image rides along the latents, its noise level as a class."""
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_upscale import (
        StableDiffusionUpscalePipeline,
    )
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
    from transformers import CLIPTextModel  # lazy: heavy, not loaded at Django start-up

    tokenizer = _build_tokenizer(scratch)
    torch.manual_seed(3)
    # The UNet runs at a quarter of the output size (64x64 latents for a 256 px result), where
    # convolutions cost the most; three narrow levels put attention at 16x16 only. Attention
    # there attends to the text alone (only_cross_attention), as in the real x4 upscaler; the
    # noise level added to the low-res image comes in as a class label.
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=1,
        use_linear_projection=True,
        only_cross_attention=True,
        num_class_embeds=1000,
    )
    _boost_unet(unet)
    # Three VAE levels: a 4x latent scale, so a 64 px input comes out at 256 px.
    vae = _vae(levels=3, scaling_factor=UPSCALER_VAE_SCALING)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    # The schedulers of stabilityai/stable-diffusion-x4-upscaler: v-prediction DDIM for sampling,
    # DDPM for the noise added to the low-res image.
    scheduler = DDIMScheduler(
        **SD15_SCHEDULE,
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    low_res_scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="scaled_linear",
    )
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=low_res_scheduler,
        scheduler=scheduler,
        max_noise_level=350,
    )


def _make_readable(folder: str) -> None:
    """Make the saved folder world-readable."""
    # Weights are written 0600, but the web tier and the workers may run as different users.
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


def is_built(target_dir: str, marker: str = PIPELINE_MARKER) -> bool:
    """Whether a complete demo folder is already at target_dir (it holds its marker file)."""
    return os.path.isfile(os.path.join(target_dir, marker))


def build_atomically(target_dir: str, marker: str, write: Callable[[str, str], None]) -> bool:
    """Run write(scratch_dir, out_dir), then move out_dir to target_dir; False if already built."""
    if is_built(target_dir, marker):
        return False
    target_dir = os.path.abspath(target_dir)
    parent = os.path.dirname(target_dir)
    os.makedirs(parent, exist_ok=True)
    # Build in a sibling and rename, so an interrupted build never leaves a half folder behind.
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target_dir)}-", dir=parent)
    try:
        out = os.path.join(staging, "model")
        write(os.path.join(staging, "scratch"), out)
        _make_readable(out)
        try:
            os.rename(out, target_dir)
        except OSError:
            # Another process won the race (or an empty dir was there): keep a complete one.
            if not is_built(target_dir, marker):
                raise
            return False
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _save_pipeline(make: Callable[[str], Any]) -> Callable[[str, str], None]:
    """A writer for build_atomically that saves the pipeline make(scratch) returns."""

    def write(scratch: str, out: str) -> None:
        make(scratch).save_pretrained(out, safe_serialization=True)

    return write


def build_demo_sd15(target_dir: str) -> bool:
    """Build the tiny SD 1.5-shaped demo model into target_dir; False if it was already there."""
    return build_atomically(target_dir, PIPELINE_MARKER, _save_pipeline(_build_pipeline))


def build_demo_sd15_inpaint(target_dir: str) -> bool:
    """Build demo-sd15's 9-channel inpainting variant; False if it was already there."""
    return build_atomically(target_dir, PIPELINE_MARKER, _save_pipeline(_build_inpaint_pipeline))


def build_demo_sdxl(target_dir: str) -> bool:
    """Build the tiny SDXL-shaped demo model; False if it was already there."""
    return build_atomically(target_dir, PIPELINE_MARKER, _save_pipeline(_build_sdxl_pipeline))


def build_demo_upscaler_x4(target_dir: str) -> bool:
    """Build the tiny x4 super-resolution model; False if it was already there."""
    return build_atomically(target_dir, PIPELINE_MARKER, _save_pipeline(_build_upscaler_pipeline))
