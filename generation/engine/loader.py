"""Load a registered model (a diffusers folder or a single file) onto the best local device.

torch and diffusers are imported inside the functions that use them, here and across the
engine: the web tier imports the engine's request and pipeline tables, and must start without
loading torch (tests/test_settings.py checks it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from generation.engine import config, ip_adapter
from generation.engine import device as engine_device
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


def resolved_device() -> engine_device.Resolved:
    """The configured device settings as they act on this host (PICTOR_DEVICE, PICTOR_DTYPE...)."""
    return engine_device.resolve(config.current().device)


def pick_device() -> str:
    """The configured device: by default CUDA when a GPU is present, else MPS, else the CPU."""
    return resolved_device().device


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
    """The device to run on and its dtype (by default fp16 on CUDA, fp32 on the CPU).

    Also gives torch its configured CPU threads: every load passes here first.
    """
    resolved = resolved_device()
    engine_device.apply_threads(resolved)
    return resolved.device, resolved.torch_dtype


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

    dtype = device_and_dtype()[1]
    if os.path.isfile(path):
        pipe = load_single_file(path, family, config_path, dtype)
    else:
        cls = getattr(diffusers, CHECKPOINT_CLASSES[family])
        extra = without_builtin_safety_checker(cls)
        # `dtype` is diffusers 0.42's name for the old `torch_dtype` (which now warns).
        pipe = cls.from_pretrained(path, local_files_only=True, dtype=dtype, **extra)
    resolved = resolved_device()
    # Device or CPU offload, attention processor, channels_last, torch.compile.
    engine_device.prepare_pipeline(pipe, resolved)
    _alias_clip_text_model(getattr(pipe, "text_encoder", None))
    _alias_clip_text_model(getattr(pipe, "text_encoder_2", None))
    pipe.set_progress_bar_config(disable=True)
    # A FrozenDict: nothing can mutate it, and swapped-in schedulers get configs of their own.
    setattr(pipe, _ORIGINAL_SCHEDULER_CONFIG, pipe.scheduler.config)
    if resolved.compile:
        # Compile now, while loading (at worker start for the default model), not in a job.
        engine_device.warm_up(pipe)
    return pipe


def prepare_call(pipe: Any, width: int, height: int, images: int) -> None:
    """Switch VAE tiling and slicing as configured for one call of `images` images."""
    engine_device.apply_to_call(pipe, resolved_device(), width, height, images)


def original_scheduler_config(pipe: DiffusionPipeline) -> Any:
    """The scheduler config the pipeline was loaded with."""
    return getattr(pipe, _ORIGINAL_SCHEDULER_CONFIG)
