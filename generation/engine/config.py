"""The engine's knobs, handed to it by whoever runs it: the engine reads no environment itself.

Django reads the PICTOR_* variables in sdplatform/settings.py and the app configures the engine
at start-up (generation/apps.py); a script or test that never calls `configure` gets the
defaults below, which are the documented defaults of those variables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from generation.engine.device import DeviceSettings

# A cache event ("hit", "load" or "eviction") and the model id it concerns.
CacheEventHook = Callable[[str, str], None]


@dataclass(frozen=True)
class EngineConfig:
    """Everything about a worker's engine that a deployment may choose."""

    # Models (checkpoints, ControlNets, VAEs, upscalers) a worker keeps loaded.
    cache_size: int = 2
    # Bytes of weights a worker keeps loaded; None: a share of the GPU's memory (or of RAM).
    cache_bytes: int | None = None
    # PICTOR_TORCH_THREADS as set (None: unset); `device` carries it too, and applies it.
    torch_threads: int | None = None
    # Device, dtype, attention, VAE tiling, offload, compile and the host's worker count.
    device: DeviceSettings = DeviceSettings()
    # Told of every cache hit, load and eviction (the app counts them as metrics).
    on_cache_event: CacheEventHook | None = None

    def __post_init__(self) -> None:
        if self.cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be a positive integer, got {self.torch_threads}")


_current = EngineConfig()


def configure(config: EngineConfig) -> None:
    """Make `config` the engine's configuration for this process."""
    global _current
    _current = config


def current() -> EngineConfig:
    """The configuration in force: the last one configured, else the defaults."""
    return _current
