"""A per-worker LRU cache of loaded pipelines, so a warm request loads nothing."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from generation.engine import loader

CACHE_SIZE_ENV = "PICTOR_PIPELINE_CACHE_SIZE"


def _default_max_models() -> int:
    """The cache size from PICTOR_PIPELINE_CACHE_SIZE, else 2."""
    return int(os.environ.get(CACHE_SIZE_ENV, "") or 2)


class PipelineCache:
    """Keeps up to `max_models` pipelines, evicting the least recently used."""

    def __init__(
        self,
        max_models: int | None = None,
        load: Callable[[str], Any] | None = None,
    ) -> None:
        self.max_models = _default_max_models() if max_models is None else max_models
        if self.max_models < 1:
            raise ValueError("max_models must be at least 1")
        self._load = load or loader.load_pipeline
        self._entries: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        # One load at a time: two requests for a cold model must not load it twice.
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, model_id: str, path: str) -> Any:
        """The pipeline for model_id, loading it from path on a miss."""
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is not None and entry[0] == path:
                self._entries.move_to_end(model_id)
                return entry[1]
            # A new path for a known id means the model was replaced: drop the stale pipeline
            # before loading, so both never sit in memory together.
            evicted = self._entries.pop(model_id, None) is not None
            while len(self._entries) >= self.max_models:
                self._entries.popitem(last=False)
                evicted = True
            if evicted:
                _release_device_memory()
            pipe = self._load(path)
            self.loads += 1
            self._entries[model_id] = (path, pipe)
            return pipe

    def model_ids(self) -> list[str]:
        """Cached model ids, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget every cached pipeline."""
        with self._lock:
            self._entries.clear()
            _release_device_memory()


def _release_device_memory() -> None:
    """Collect dropped pipelines and hand their GPU blocks back before the next load."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


default_cache = PipelineCache()
