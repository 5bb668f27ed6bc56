"""Where and how a worker runs its pipelines: device, dtype, attention, memory layout, VAE tiling,
CPU offload, torch.compile and CPU threads.

The deployment chooses them (PICTOR_DEVICE, PICTOR_DTYPE, ... read in sdplatform/settings.py and
handed over in the engine config); this module resolves "auto" against the hardware torch sees
and applies the choices to each pipeline as it is loaded (`prepare_pipeline`) and before each
call (`apply_to_call`). torch is imported inside the functions, as everywhere in the engine.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp16", "bf16", "fp32")
ATTENTIONS = ("sdpa", "default")
CPU_OFFLOADS = ("off", "model")
_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def torch_dtype(name: str) -> Any:
    """The torch dtype a PICTOR_DTYPE value other than auto names (fp16, bf16, fp32)."""
    import torch  # lazy: heavy, not loaded at Django start-up

    return getattr(torch, _TORCH_DTYPES[name])


def device_problem(value: str) -> str | None:
    """Why value is not a PICTOR_DEVICE (auto, cpu, cuda, cuda:N, mps), or None if it is one."""
    if value in DEVICES:
        return None
    prefix, _, index = value.partition(":")
    if prefix == "cuda" and index.isascii() and index.isdigit():
        return None
    return f"PICTOR_DEVICE must be auto, cpu, cuda, cuda:N or mps, not {value!r}"


def choice_problem(name: str, value: str, choices: tuple[str, ...]) -> str | None:
    """Why value is not one of choices for the setting name, or None if it is."""
    if value in choices:
        return None
    return f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}"


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        return os.cpu_count() or 1


def default_torch_threads(workers: int, cpus: int | None = None) -> int:
    """The cores a worker process gets when the host's `workers` processes share them evenly.

    torch's own default is every core, per process: with several workers per host, or a busy
    neighbour, each of them then oversubscribes the cores and all of them slow down.
    """
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, workers))


@dataclass(frozen=True)
class DeviceSettings:
    """A worker's device choices, as configured (the "auto" values are resolved by `resolve`)."""

    device: str = "auto"
    dtype: str = "auto"
    attention: str = "sdpa"
    channels_last: bool = False
    # Decode in tiles when the image's longer side is above this (0: never).
    vae_tiling_side: int = 0
    # Decode a batch's images one at a time (less peak memory for the same pixels).
    vae_slicing: bool = False
    cpu_offload: str = "off"
    compile: bool = False
    # torch.compile's backend: inductor in production ("eager" traces without generating code).
    compile_backend: str = "inductor"
    # torch CPU threads; None: the host's usable cores shared by its `workers` processes.
    torch_threads: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        problems = [
            device_problem(self.device),
            choice_problem("PICTOR_DTYPE", self.dtype, DTYPES),
            choice_problem("PICTOR_ATTENTION", self.attention, ATTENTIONS),
            choice_problem("PICTOR_CPU_OFFLOAD", self.cpu_offload, CPU_OFFLOADS),
        ]
        if self.vae_tiling_side < 0:
            problems.append(
                f"PICTOR_VAE_TILING_SIDE must be 0 (off) or a side in pixels, "
                f"not {self.vae_tiling_side}"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            problems.append(
                f"PICTOR_TORCH_THREADS must be a positive integer, not {self.torch_threads}"
            )
        if self.workers < 1:
            problems.append(f"PICTOR_WORKERS must be at least 1, not {self.workers}")
        found = [p for p in problems if p]
        if found:
            raise ValueError("; ".join(found))

    def threads(self) -> int:
        """The torch thread count this worker uses."""
        if self.torch_threads is not None:
            return self.torch_threads
        return default_torch_threads(self.workers)


@dataclass(frozen=True)
class Resolved:
    """The settings as they act on this host: a concrete device and dtype."""

    device: str
    dtype: str  # fp16, bf16 or fp32
    attention: str
    channels_last: bool
    vae_tiling_side: int
    vae_slicing: bool
    cpu_offload: str
    compile: bool
    torch_threads: int
    compile_backend: str = "inductor"

    @property
    def torch_dtype(self) -> Any:
        """The torch dtype for `dtype`."""
        return torch_dtype(self.dtype)

    def describe(self) -> dict[str, Any]:
        """JSON-ready figures for the heartbeat and the ops dashboard."""
        figures = asdict(self)
        if not self.compile or self.compile_backend == "inductor":
            del figures["compile_backend"]
        return figures


class DeviceUnavailable(ValueError):
    """The configured device is not on this host (PICTOR_DEVICE=cuda on a CPU-only host)."""


@functools.cache
def resolve(settings: DeviceSettings) -> Resolved:
    """Settings resolved against this host's hardware (once per process and settings)."""
    import torch  # lazy: heavy, not loaded at Django start-up

    device = settings.device
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"PICTOR_DEVICE={device}, but torch {torch.__version__} sees no CUDA device "
                "(a CPU-only torch build, or no driver): use auto or cpu"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"PICTOR_DEVICE={device}, but this host has {torch.cuda.device_count()} CUDA "
                "device(s), numbered from 0"
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable("PICTOR_DEVICE=mps, but torch sees no Apple MPS device")
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "fp32" if device == "cpu" else "fp16"
    offload = settings.cpu_offload
    if offload != "off" and not device.startswith("cuda"):
        # Offloading moves weights between the CPU and a GPU: there is nothing to gain on a CPU
        # (or MPS) worker, and an env file shared by a mixed fleet must still start everywhere.
        log.warning(
            "PICTOR_CPU_OFFLOAD=%s ignored: it acts on CUDA only (device %s)", offload, device
        )
        offload = "off"
    return Resolved(
        device=device,
        dtype=dtype,
        attention=settings.attention,
        channels_last=settings.channels_last,
        vae_tiling_side=settings.vae_tiling_side,
        vae_slicing=settings.vae_slicing,
        cpu_offload=offload,
        compile=settings.compile,
        torch_threads=settings.threads(),
        compile_backend=settings.compile_backend,
    )


def apply_threads(resolved: Resolved) -> None:
    """Give torch the configured number of CPU threads (process-wide)."""
    import torch  # lazy: heavy, not loaded at Django start-up

    if torch.get_num_threads() != resolved.torch_threads:
        torch.set_num_threads(resolved.torch_threads)


def set_attention(pipe: Any, attention: str) -> None:
    """PyTorch's scaled-dot-product attention (sdpa) or diffusers' plain processor (default)."""
    # lazy: heavy, not loaded at Django start-up
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is not None and hasattr(module, "set_attn_processor"):
            module.set_attn_processor(
                AttnProcessor2_0() if attention == "sdpa" else AttnProcessor()
            )


def prepare_pipeline(pipe: Any, resolved: Resolved) -> None:
    """Place a freshly loaded pipeline (already in resolved.torch_dtype) as configured."""
    import torch  # lazy: heavy, not loaded at Django start-up

    if resolved.cpu_offload == "model":
        # Each model goes to the GPU only while it runs: fits SDXL on small cards, costs time.
        pipe.enable_model_cpu_offload(device=resolved.device)
    else:
        pipe.to(resolved.device)
    set_attention(pipe, resolved.attention)
    if resolved.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    # SDXL's VAE overflows in fp16: its config's `force_upcast` makes the diffusers SDXL
    # pipelines decode in fp32 (fp16-fixed VAEs set it false); bf16 has fp32's range.
    if resolved.compile:
        # In place, so pipe.unet stays a UNet2DConditionModel (LoRA loading, from_pipe, patches).
        pipe.unet.compile(backend=resolved.compile_backend)


def warm_up(pipe: Any) -> None:
    """Run one short generation at the model's native size, so the compile happens now."""
    import torch  # lazy: heavy, not loaded at Django start-up

    side = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    extra: dict[str, Any] = {}
    if getattr(pipe, "text_encoder_2", None) is not None:
        extra["prompt_2"] = "warm-up"
    with torch.inference_mode():
        pipe(
            "warm-up",
            width=side,
            height=side,
            num_inference_steps=2,
            guidance_scale=7.5,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="latent",
            **extra,
        )
    log.info("compiled UNet warmed up at %dx%d", side, side)


def apply_to_call(pipe: Any, resolved: Resolved, width: int, height: int, images: int) -> None:
    """Switch VAE tiling and slicing for one call of `images` images of width x height."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        return
    side = resolved.vae_tiling_side
    if side and max(width, height) > side:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    if resolved.vae_slicing and images > 1:
        vae.enable_slicing()
    elif hasattr(vae, "disable_slicing"):
        vae.disable_slicing()
