"""A tiny Stable Diffusion 1.5-shaped model built locally, for tests and CPU demos.

It uses the real SD 1.5 classes and folder layout, so it loads through the same code path as a
real checkpoint; only the sizes are shrunk and the weights are seeded random numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

# SD 1.5's noise schedule: the part of a real config that shapes sampling, kept verbatim.
SD15_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
MAX_TOKENS = 77
TEXT_WIDTH = 32


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
    from transformers import CLIPTokenizer

    os.makedirs(work_dir, exist_ok=True)
    vocab_file = os.path.join(work_dir, "vocab.json")
    merges_file = os.path.join(work_dir, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as fh:
        json.dump(_byte_vocab(), fh, ensure_ascii=False)
    with open(merges_file, "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(work_dir, model_max_length=MAX_TOKENS)


def _build_pipeline(scratch: str) -> StableDiffusionPipeline:
    """The tiny pipeline, with weights fixed by the seed."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _build_tokenizer(scratch)
    torch.manual_seed(0)
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
    with torch.no_grad():
        # Seeded init leaves the noise prediction at ~0.3 std with the prompt barely mattering;
        # these gains bring it near unit scale and make text conditioning (prompt, negative
        # prompt, clip skip, embeddings) visibly change the pixels.
        unet.conv_out.weight.mul_(3.0)
        unet.conv_out.bias.mul_(3.0)
        for name, module in unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                module.weight.mul_(4.0)
    # Four VAE levels give the 8x latent downscale of real SD.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=256,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # SD 1.5 ships PNDM with these flags; keeping them avoids diffusers' config-fixing warnings.
    scheduler = PNDMScheduler(
        **SD15_SCHEDULE,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _make_readable(folder: str) -> None:
    """Make the saved folder world-readable."""
    # Weights are written 0600, but the web tier and the workers may run as different users.
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


def is_built(target_dir: str) -> bool:
    """Whether a complete demo folder is already at target_dir."""
    return os.path.isfile(os.path.join(target_dir, "model_index.json"))


def build_demo_sd15(target_dir: str) -> bool:
    """Build the tiny SD 1.5-shaped demo model into target_dir; False if it was already there."""
    if is_built(target_dir):
        return False
    target_dir = os.path.abspath(target_dir)
    parent = os.path.dirname(target_dir)
    os.makedirs(parent, exist_ok=True)
    # Build in a sibling and rename, so an interrupted build never leaves a half folder behind.
    staging = tempfile.mkdtemp(prefix=".demo-sd15-", dir=parent)
    try:
        pipe = _build_pipeline(os.path.join(staging, "scratch"))
        out = os.path.join(staging, "model")
        pipe.save_pretrained(out, safe_serialization=True)
        _make_readable(out)
        try:
            os.rename(out, target_dir)
        except OSError:
            # Another process won the race (or an empty dir was there): keep a complete one.
            if not is_built(target_dir):
                raise
            return False
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
