"""The pipeline cache: a warm request loads nothing, and the least recently used model goes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from generation.engine.cache import PipelineCache
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


def test_it_reads_its_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICTOR_PIPELINE_CACHE_SIZE", "3")
    assert PipelineCache().max_models == 3

    monkeypatch.delenv("PICTOR_PIPELINE_CACHE_SIZE")
    assert PipelineCache().max_models == 2
