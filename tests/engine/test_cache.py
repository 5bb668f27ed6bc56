"""The pipeline cache: a warm request loads nothing, and the least recently used model goes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from generation.engine import config
from generation.engine.cache import PipelineCache
from generation.engine.config import EngineConfig
from generation.engine.request import ModelRef
from generation.engine.runner import generate
from tests.engine.base_request import BASE
from tests.scrape import local_metrics, sample


def test_it_loads_nothing_for_a_warm_request(demo_path: str) -> None:
    cache = PipelineCache(max_models=2)

    generate(BASE, demo_path, cache=cache)
    pipe = cache.get(ModelRef(BASE.model_id, demo_path))
    generate(replace(BASE, seed=7, scheduler="EulerDiscreteScheduler"), demo_path, cache=cache)

    assert cache.loads == 1
    assert cache.get(ModelRef(BASE.model_id, demo_path)) is pipe


def cache_counts() -> dict[tuple[str, str], float]:
    """pictor_pipeline_cache_{hits,loads,evictions}_total of the models "first" and "second"."""
    text = local_metrics()
    return {
        (event, model): sample(text, f"pictor_pipeline_cache_{event}_total", model=model)
        for event in ("hits", "loads", "evictions")
        for model in ("first", "second")
    }


def test_it_evicts_the_least_recently_used_model(demo_path: str, second_demo_path: str) -> None:
    cache = PipelineCache(max_models=1)
    first = replace(BASE, model_id="first")
    second = replace(BASE, model_id="second")
    before = cache_counts()

    generate(first, demo_path, cache=cache)
    generate(second, second_demo_path, cache=cache)
    assert (cache.loads, cache.model_ids()) == (2, ["second"])

    generate(first, demo_path, cache=cache)
    generate(first, demo_path, cache=cache)
    assert (cache.loads, cache.model_ids()) == (3, ["first"])

    counted = {key: value - before[key] for key, value in cache_counts().items()}
    assert counted == {
        ("hits", "first"): 1,
        ("hits", "second"): 0,
        ("loads", "first"): 2,
        ("loads", "second"): 1,
        ("evictions", "first"): 1,
        ("evictions", "second"): 1,
    }


def test_it_keeps_the_most_recently_used_models() -> None:
    cache = PipelineCache(max_models=2, load=lambda ref: object(), max_bytes=10**9)
    a = cache.get(ModelRef("a", "/models/a"))
    cache.get(ModelRef("b", "/models/b"))
    assert cache.get(ModelRef("a", "/models/a")) is a  # a is now the most recent

    cache.get(ModelRef("c", "/models/c"))

    assert cache.model_ids() == ["a", "c"]
    assert cache.loads == 3


def test_it_reloads_a_model_whose_folder_changed() -> None:
    cache = PipelineCache(max_models=2, load=lambda ref: object(), max_bytes=10**9)
    old = cache.get(ModelRef("a", "/models/a-v1"))

    assert cache.get(ModelRef("a", "/models/a-v2")) is not old
    assert (cache.loads, cache.model_ids()) == (2, ["a"])


@pytest.fixture
def engine_config() -> Iterator[None]:
    """Put back the configuration the app gave the engine after the test."""
    saved = config.current()
    yield
    config.configure(saved)


@pytest.mark.usefixtures("engine_config")
def test_it_takes_its_limits_from_the_engine_config() -> None:
    # (tests/test_settings.py checks that PICTOR_PIPELINE_CACHE_SIZE/_BYTES reach the config.)
    config.configure(EngineConfig(cache_size=3, cache_bytes=12345))
    assert (PipelineCache().max_models, PipelineCache().max_bytes) == (3, 12345)

    config.configure(EngineConfig())
    assert PipelineCache().max_models == 2
    assert PipelineCache().max_bytes > 0  # a share of the device's memory


@pytest.mark.usefixtures("engine_config")
def test_its_limits_follow_a_config_made_after_it_was_built() -> None:
    cache = PipelineCache()  # like the process-wide cache, built when the module is imported

    config.configure(EngineConfig(cache_size=5))

    assert cache.max_models == 5


@pytest.mark.usefixtures("engine_config")
def test_it_tells_the_configured_hook_of_hits_loads_and_evictions() -> None:
    events: list[tuple[str, str]] = []
    config.configure(EngineConfig(on_cache_event=lambda *event: events.append(event)))
    cache = PipelineCache(max_models=1, load=lambda ref: object(), max_bytes=10**9)

    cache.get(ModelRef("a", "/models/a"))
    cache.get(ModelRef("a", "/models/a"))
    cache.get(ModelRef("b", "/models/b"))

    assert events == [("load", "a"), ("hit", "a"), ("eviction", "a"), ("load", "b")]


def test_the_config_refuses_impossible_limits() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        EngineConfig(cache_size=0)
    with pytest.raises(ValueError, match="torch_threads"):
        EngineConfig(torch_threads=0)
