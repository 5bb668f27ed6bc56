"""The SDXL refiner finishes an SDXL text2img job from refiner_switch_at on, and leaves no trace."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from generation.engine.cache import PipelineCache
from generation.engine.pipelines import kind_error
from generation.engine.refiner import refiner_error
from generation.engine.request import GenerationRequest, ModelRef
from generation.engine.runner import generate
from tests.engine.base_request import BASE
from tests.engine.pixels import mean_abs_diff, pixels

SDXL = replace(BASE, model_id="demo-sdxl", steps=10)
REFINED = replace(SDXL, refiner="demo-sdxl-refiner")


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache(max_models=3, max_bytes=10**10)


@pytest.fixture(scope="module")
def sdxl(models_dir: Path) -> ModelRef:
    return ModelRef("demo-sdxl", str(models_dir / "demo-sdxl"), "sdxl", "sdxl")


@pytest.fixture(scope="module")
def addons(models_dir: Path) -> dict[str, ModelRef]:
    path = str(models_dir / "demo-sdxl-refiner")
    return {"demo-sdxl-refiner": ModelRef("demo-sdxl-refiner", path, "refiner", "sdxl")}


def run(
    req: GenerationRequest, sdxl: ModelRef, addons: dict, cache: PipelineCache, **kwargs: Any
) -> list:
    return generate(req, sdxl, addons=addons, cache=cache, **kwargs).images


def test_the_refiner_changes_the_image_and_leaves_no_trace(
    sdxl: ModelRef, addons: dict, cache: PipelineCache
) -> None:
    baseline = run(SDXL, sdxl, addons, cache)[0]

    refined = run(REFINED, sdxl, addons, cache)[0]
    after = run(SDXL, sdxl, addons, cache)[0]

    assert refined.size == baseline.size
    assert mean_abs_diff(refined, baseline) > 1.0
    assert (pixels(after) == pixels(baseline)).all()
    # The refiner uses demo-sdxl's own VAE and second text encoder, and loads once.
    assert cache.model_ids() == ["demo-sdxl-refiner", "demo-sdxl"]


def test_the_switch_point_changes_the_image(
    sdxl: ModelRef, addons: dict, cache: PipelineCache
) -> None:
    early = run(replace(REFINED, refiner_switch_at=0.5), sdxl, addons, cache)[0]
    late = run(replace(REFINED, refiner_switch_at=0.9), sdxl, addons, cache)[0]
    again = run(replace(REFINED, refiner_switch_at=0.5), sdxl, addons, cache)[0]

    assert mean_abs_diff(early, late) > 1.0
    assert (pixels(again) == pixels(early)).all()


def test_a_batch_refines_each_seed_as_alone(
    sdxl: ModelRef, addons: dict, cache: PipelineCache
) -> None:
    batch = run(replace(REFINED, samples=2), sdxl, addons, cache)
    second = run(replace(REFINED, seed=REFINED.seed + 1), sdxl, addons, cache)[0]

    assert len(batch) == 2
    assert mean_abs_diff(batch[1], second) < 1.0


def test_progress_counts_both_passes(sdxl: ModelRef, addons: dict, cache: PipelineCache) -> None:
    steps: list[tuple[int, int]] = []

    run(
        replace(REFINED, refiner_switch_at=0.7),
        sdxl,
        addons,
        cache,
        progress=lambda done, total: steps.append((done, total)),
    )

    # Euler runs each of the 10 steps once: the base's first 7, then the refiner's last 3.
    assert steps == [(n, 10) for n in range(1, 11)]


def test_what_a_refiner_cannot_finish_is_refused() -> None:
    assert refiner_error("text2img") is None
    assert refiner_error("img2img") == "A refiner finishes text2img jobs only, not img2img."
    assert "hires fix" in str(refiner_error("text2img", hires_scale=2))
    # A refiner is never a request's own model.
    assert kind_error("refiner", "text2img") == (
        "A refiner model is not a checkpoint and cannot generate images."
    )


def test_the_engine_refuses_a_refiner_on_another_family(
    models_dir: Path, addons: dict, cache: PipelineCache
) -> None:
    sd15 = ModelRef("demo-sd15", str(models_dir / "demo-sd15"))

    with pytest.raises(ValueError, match="SDXL jobs only"):
        generate(replace(BASE, refiner="demo-sdxl-refiner"), sd15, addons=addons, cache=cache)
