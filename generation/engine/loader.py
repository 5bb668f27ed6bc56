"""Load a diffusers Stable Diffusion folder onto the best local device."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

THREADS_ENV = "PICTOR_TORCH_THREADS"
# The scheduler config as loaded, kept on the pipeline so a request's scheduler swap starts from
# the model's own config and never from the previous request's scheduler.
_ORIGINAL_SCHEDULER_CONFIG = "_pictor_original_scheduler_config"


def pick_device() -> str:
    """CUDA when a GPU is present, else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _configure_cpu_threads() -> None:
    """Apply PICTOR_TORCH_THREADS when set; otherwise keep torch's own default."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return
    import torch

    threads = int(value)
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    torch.set_num_threads(threads)


def _alias_clip_text_model(text_encoder: Any) -> None:
    """Let diffusers' clip_skip code find `text_encoder.text_model` on transformers >= 5.6.

    transformers 5.6 flattened CLIPTextModel (its `text_model` wrapper is gone), but the SD
    pipelines in diffusers 0.42 still call `text_encoder.text_model.final_layer_norm` whenever
    clip_skip is set (huggingface/diffusers#14124). The alias is set on the instance, outside
    torch's module registry, so state dicts, `.to()` and module walks are unchanged. (It is a
    reference cycle, so the cache runs the garbage collector when it evicts a model.)
    """
    if text_encoder is None or hasattr(text_encoder, "text_model"):
        return
    if hasattr(text_encoder, "final_layer_norm"):
        object.__setattr__(text_encoder, "text_model", text_encoder)


def load_pipeline(path: str) -> StableDiffusionPipeline:
    """Load the Stable Diffusion pipeline in folder `path`, ready to call on the local device."""
    import torch
    from diffusers import StableDiffusionPipeline

    device = pick_device()
    if device == "cuda":
        dtype = torch.float16
    else:
        dtype = torch.float32
        _configure_cpu_threads()
    # `dtype` is diffusers 0.42's name for the old `torch_dtype` (which now warns).
    pipe = StableDiffusionPipeline.from_pretrained(
        path,
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
        dtype=dtype,
    )
    pipe.to(device)
    if device == "cuda":
        from diffusers.models.attention_processor import AttnProcessor2_0

        # PyTorch scaled-dot-product attention (flash / memory-efficient kernels) on the GPU.
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        pipe.vae.set_attn_processor(AttnProcessor2_0())
    _alias_clip_text_model(pipe.text_encoder)
    pipe.set_progress_bar_config(disable=True)
    # A FrozenDict: nothing can mutate it, and swapped-in schedulers get configs of their own.
    setattr(pipe, _ORIGINAL_SCHEDULER_CONFIG, pipe.scheduler.config)
    return pipe


def original_scheduler_config(pipe: StableDiffusionPipeline) -> Any:
    """The scheduler config the pipeline was loaded with."""
    return getattr(pipe, _ORIGINAL_SCHEDULER_CONFIG)
