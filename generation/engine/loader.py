"""Load a registered model (a diffusers folder or a single file) onto the best local device.

torch and diffusers are imported inside the functions that use them, here and across the
engine: the web tier imports the engine's request and pipeline tables, and must start without
loading torch (tests/test_settings.py checks it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from generation.engine import config, ip_adapter
from generation.engine.pipelines import (
    CHECKPOINT_CLASSES,
    MODEL_CLASSES,
    pipeline_family,
    without_builtin_safety_checker,
)
from generation.engine.request import ModelRef
from generation.engine.single_file import load_single_file

if TYPE_CHECKING:
    # From their defining modules: to mypy, `from diffusers import X` is the placeholder class
    # diffusers defines for installs without torch (dummy_pt_objects), which has no attributes.
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

# The scheduler config as loaded, kept on the pipeline so a request's scheduler swap starts from
# the model's own config and never from the previous request's scheduler.
_ORIGINAL_SCHEDULER_CONFIG = "_pictor_original_scheduler_config"


def pick_device() -> str:
    """CUDA when a GPU is present, else CPU."""
    import torch  # lazy: heavy, not loaded at Django start-up

    return "cuda" if torch.cuda.is_available() else "cpu"


def _configure_cpu_threads() -> None:
    """Apply the configured torch thread count when set; otherwise keep torch's own default."""
    threads = config.current().torch_threads
    if threads is None:
        return
    import torch  # lazy: heavy, not loaded at Django start-up

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


def device_and_dtype() -> tuple[str, Any]:
    """The device to run on and its dtype: fp16 on CUDA, fp32 on the CPU."""
    import torch  # lazy: heavy, not loaded at Django start-up

    device = pick_device()
    if device == "cuda":
        return device, torch.float16
    _configure_cpu_threads()
    return device, torch.float32


def load_model(ref: ModelRef) -> Any:
    """Load a checkpoint pipeline, a ControlNet/VAE model or an IP-Adapter's image encoder."""
    if ref.family in MODEL_CLASSES:
        import diffusers  # lazy: heavy, not loaded at Django start-up

        device, dtype = device_and_dtype()
        cls = getattr(diffusers, MODEL_CLASSES[ref.family])
        return cls.from_pretrained(ref.path, local_files_only=True, dtype=dtype).to(device)
    if ref.family == ip_adapter.FAMILY:
        # What a job needs loaded is the adapter's image encoder; its own layers are small.
        return ip_adapter.load_image_encoder(ref, *device_and_dtype())
    family = pipeline_family(ref.family, ref.base)
    if family in CHECKPOINT_CLASSES:
        return load_pipeline(ref.path, family, ref.config_path)
    raise ValueError(f"{ref.model_id} is a {ref.family} model, which is not loaded on its own")


def load_pipeline(
    path: str, family: str = "sd15", config_path: str = ""
) -> StableDiffusionPipeline | DiffusionPipeline:
    """Load the pipeline at path (a diffusers folder or a single file), ready to call."""
    import diffusers  # lazy: heavy, not loaded at Django start-up

    device, dtype = device_and_dtype()
    if os.path.isfile(path):
        pipe = load_single_file(path, family, config_path, dtype)
    else:
        cls = getattr(diffusers, CHECKPOINT_CLASSES[family])
        extra = without_builtin_safety_checker(cls)
        # `dtype` is diffusers 0.42's name for the old `torch_dtype` (which now warns).
        pipe = cls.from_pretrained(path, local_files_only=True, dtype=dtype, **extra)
    pipe.to(device)
    if device == "cuda":
        from diffusers.models.attention_processor import AttnProcessor2_0  # lazy: as above

        # PyTorch scaled-dot-product attention (flash / memory-efficient kernels) on the GPU.
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        pipe.vae.set_attn_processor(AttnProcessor2_0())
    _alias_clip_text_model(getattr(pipe, "text_encoder", None))
    _alias_clip_text_model(getattr(pipe, "text_encoder_2", None))
    pipe.set_progress_bar_config(disable=True)
    # A FrozenDict: nothing can mutate it, and swapped-in schedulers get configs of their own.
    setattr(pipe, _ORIGINAL_SCHEDULER_CONFIG, pipe.scheduler.config)
    return pipe


def original_scheduler_config(pipe: DiffusionPipeline) -> Any:
    """The scheduler config the pipeline was loaded with."""
    return getattr(pipe, _ORIGINAL_SCHEDULER_CONFIG)
