"""Engine fixtures: the demo model built once, one warm pipeline cache, a request runner."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub, so a stray download fails instead of running.
os.environ["HF_HUB_OFFLINE"] = "1"

from generation.engine.cache import PipelineCache  # noqa: E402
from generation.engine.demo import build_demo_sd15  # noqa: E402
from generation.engine.runner import generate  # noqa: E402
from tests.engine.base_request import BASE  # noqa: E402


@pytest.fixture(scope="session")
def demo_path(models_dir: Path) -> str:
    """The demo model folder, built once per session by the suite's `models_dir` fixture."""
    path = models_dir / "demo-sd15"
    assert (path / "model_index.json").is_file()
    return str(path)


@pytest.fixture(scope="session")
def second_demo_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another demo model folder with the same weights, for cache eviction tests."""
    path = tmp_path_factory.mktemp("engine-models") / "demo-sd15-b"
    build_demo_sd15(str(path))
    return str(path)


@pytest.fixture(scope="session")
def warm_cache() -> PipelineCache:
    """A cache shared by the session, so most tests reuse one loaded pipeline."""
    return PipelineCache(max_models=2)


@pytest.fixture
def run(demo_path: str, warm_cache: PipelineCache):
    """Generate BASE with fields overridden by keyword arguments; returns the result."""

    def run_request(nsfw_threshold: float = 0.5, **changes):
        request = replace(BASE, **changes)
        return generate(request, demo_path, cache=warm_cache, nsfw_threshold=nsfw_threshold)

    return run_request
