"""A per-worker LRU cache of loaded models, bounded by count and bytes: warm requests load nothing.

Checkpoint pipelines and the add-on models a request names (ControlNets, VAEs, the upscaler)
share one cache, so one budget covers everything a worker holds in memory. Its limits come from
the engine config (config.py); torch is imported only inside the functions that use it, so that
importing the cache (the heartbeat does, in every process) loads no torch.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generation.engine import config, loader
from generation.engine.request import ModelRef

# Without a configured byte budget: this share of the GPU's memory, or of the host's RAM.
DEFAULT_MEMORY_SHARE = 0.6


@functools.cache
def _device_memory_share() -> int:
    """DEFAULT_MEMORY_SHARE of the device's memory (asked once: it does not change)."""
    import torch  # lazy: heavy, not loaded at Django start-up

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * DEFAULT_MEMORY_SHARE)


def _report(event: str, model_id: str) -> None:
    """Tell the configured hook (the app's metrics) of a hit, load or eviction."""
    hook = config.current().on_cache_event
    if hook is not None:
        hook(event, model_id)


def model_bytes(obj: Any) -> int:
    """Bytes held by the parameters and buffers of a pipeline's modules (or of one module)."""
    import torch  # lazy: heavy, not loaded at Django start-up

    modules = (
        [obj]
        if isinstance(obj, torch.nn.Module)
        else [c for c in getattr(obj, "components", {}).values() if isinstance(c, torch.nn.Module)]
    )
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def weights_on_disk(path: str) -> int:
    """Bytes of weight files under path: the estimate of a model's size before it is loaded."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith((".safetensors", ".bin", ".ckpt", ".pt", ".pth")):
                total += os.path.getsize(os.path.join(root, name))
    return total


@dataclass
class _Entry:
    ref: ModelRef
    model: Any
    nbytes: int


class PipelineCache:
    """Keeps loaded models within `max_models` and `max_bytes`, evicting the least recently used.

    A limit left as None follows the engine config, read when it is needed, so the process-wide
    cache built at import still obeys a `config.configure` made later at start-up.
    """

    def __init__(
        self,
        max_models: int | None = None,
        load: Callable[[ModelRef], Any] | None = None,
        max_bytes: int | None = None,
        measure: Callable[[Any], int] = model_bytes,
    ) -> None:
        if max_models is not None and max_models < 1:
            raise ValueError("max_models must be at least 1")
        self._max_models = max_models
        self._max_bytes = max_bytes
        self._load = load or loader.load_model
        self._measure = measure
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # One load at a time: two requests for a cold model must not load it twice.
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    @property
    def max_models(self) -> int:
        """Models kept at most: as constructed, else the engine config's cache_size."""
        return config.current().cache_size if self._max_models is None else self._max_models

    @property
    def max_bytes(self) -> int:
        """Bytes kept at most: as constructed, else the config's, else a share of the device's."""
        if self._max_bytes is not None:
            return self._max_bytes
        configured = config.current().cache_bytes
        # Asked only here: asking torch for the device's memory must not happen at import time.
        return _device_memory_share() if configured is None else configured

    def get(self, ref: ModelRef) -> Any:
        """The loaded model for ref, loading it (and evicting others to make room) on a miss."""
        with self._lock:
            entry = self._entries.get(ref.model_id)
            if entry is not None and entry.ref == ref:
                self._entries.move_to_end(ref.model_id)
                _report("hit", ref.model_id)
                return entry.model
            # A changed ref for a known id means the model was replaced: drop the stale one
            # before loading, so both never sit in memory together.
            evicted = self._entries.pop(ref.model_id, None) is not None
            evicted |= self._make_room(weights_on_disk(ref.path))
            if evicted:
                _release_device_memory()
            model = self._load(ref)
            self.loads += 1
            _report("load", ref.model_id)
            self._entries[ref.model_id] = _Entry(ref, model, self._measure(model))
            # The estimate from disk can be low (fp16 files loaded as fp32): settle up now.
            if self._make_room(0, keep=ref.model_id):
                _release_device_memory()
            return model

    def _make_room(self, incoming: int, keep: str | None = None) -> bool:
        """Evict least recently used entries until one more model of `incoming` bytes fits."""
        evicted = False
        while True:
            others = [mid for mid in self._entries if mid != keep]
            if not others:
                return evicted
            count = len(self._entries) + (1 if keep is None else 0)
            used = self.bytes_used() + incoming
            if count <= self.max_models and used <= self.max_bytes:
                return evicted
            del self._entries[others[0]]
            self.evictions += 1
            _report("eviction", others[0])
            evicted = True

    def bytes_used(self) -> int:
        """Measured bytes of everything cached."""
        return sum(entry.nbytes for entry in self._entries.values())

    def model_ids(self) -> list[str]:
        """Cached model ids, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget every cached model."""
        with self._lock:
            self._entries.clear()
            _release_device_memory()


def _release_device_memory() -> None:
    """Collect dropped pipelines and hand their GPU blocks back before the next load."""
    import torch  # lazy: heavy, not loaded at Django start-up

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


default_cache = PipelineCache()
