"""img2img, inpaint, ControlNet and hires share the cached checkpoint; the cache stays bounded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.engine.cache import PipelineCache, model_bytes
from generation.engine.pipelines import kind_error, pipeline_for
from generation.engine.request import ModelRef
from generation.engine.runner import generate
from tests.engine.base_request import BASE


def ref(models_dir: Path, model_id: str, family: str = "sd15", base: str = "sd15") -> ModelRef:
    return ModelRef(model_id, str(models_dir / model_id), family, base)


def noise(size: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_derived_pipelines_share_the_checkpoint_modules(models_dir: Path) -> None:
    cache = PipelineCache(max_models=2, max_bytes=10**10)
    base = cache.get(ref(models_dir, "demo-sd15"))
    controlnet = cache.get(ref(models_dir, "demo-controlnet-canny", "controlnet"))

    for kind in ("img2img", "inpaint", "controlnet"):
        extra = {"controlnet": controlnet} if kind == "controlnet" else {}
        derived = pipeline_for(base, "sd15", kind, **extra)
        assert derived.unet is base.unet
        assert derived.vae is base.vae
        assert derived.text_encoder is base.text_encoder
    assert cache.loads == 2


def test_img2img_and_hires_load_nothing_more(models_dir: Path) -> None:
    cache = PipelineCache(max_models=2, max_bytes=10**10)
    model = ref(models_dir, "demo-sd15")
    generate(BASE, model, cache=cache)
    generate(
        replace(BASE, kind="img2img", init_image="in"),
        model,
        images={"init_image": noise()},
        cache=cache,
    )
    hires = generate(replace(BASE, hires_scale=2), model, cache=cache)
    assert cache.loads == 1
    assert hires.images[0].size == (128, 128)


def test_hires_progress_counts_both_passes(models_dir: Path) -> None:
    steps: list[tuple[int, int]] = []
    generate(
        replace(BASE, hires_scale=2, steps=10, hires_strength=0.5),
        ref(models_dir, "demo-sd15"),
        cache=PipelineCache(max_models=1, max_bytes=10**10),
        progress=lambda done, total: steps.append((done, total)),
    )
    assert steps[-1] == (15, 15)
    assert [done for done, _total in steps] == list(range(1, 16))


@pytest.mark.parametrize(
    ("family", "kind", "ok"),
    [
        ("sd15", "inpaint", True),
        ("sdxl", "controlnet", True),
        ("inpaint", "text2img", False),
        ("lora", "text2img", False),
    ],
)
def test_it_knows_which_kinds_a_family_serves(family: str, kind: str, ok: bool) -> None:
    assert (kind_error(family, kind) is None) == ok


def test_the_cache_evicts_by_bytes_least_recently_used_first(models_dir: Path) -> None:
    sd15 = ref(models_dir, "demo-sd15")
    inpaint = ref(models_dir, "demo-sd15-inpaint", "inpaint")
    sdxl = ref(models_dir, "demo-sdxl", "sdxl", "sdxl")
    sizes = {
        r.model_id: model_bytes(PipelineCache(max_models=1, max_bytes=10**10).get(r))
        for r in (sd15, inpaint, sdxl)
    }
    # Room for any two of the three models, never for all three.
    budget = sum(sizes.values()) - min(sizes.values()) + 1
    cache = PipelineCache(max_models=10, max_bytes=budget)

    for r in (sd15, inpaint, sdxl, sd15, inpaint):
        cache.get(r)
        assert cache.bytes_used() <= budget
    # sd15 and inpaint came last; sdxl was the least recently used when room was needed.
    assert cache.model_ids() == ["demo-sd15", "demo-sd15-inpaint"]
    assert cache.loads == 5
    assert cache.evictions == 3

    cache.get(inpaint)
    cache.get(sd15)
    assert cache.loads == 5


def test_the_cache_evicts_by_count(models_dir: Path) -> None:
    cache = PipelineCache(max_models=2, max_bytes=10**10)
    for model_id in ("demo-sd15", "demo-vae", "demo-controlnet-canny"):
        family = {"demo-vae": "vae", "demo-controlnet-canny": "controlnet"}.get(model_id, "sd15")
        cache.get(ref(models_dir, model_id, family))
    assert cache.model_ids() == ["demo-vae", "demo-controlnet-canny"]


def test_upscale_gives_exact_multiples_of_odd_sizes(models_dir: Path) -> None:
    cache = PipelineCache(max_models=1, max_bytes=10**10)
    upscaler = ref(models_dir, "demo-upscaler-x4", "upscaler")
    for width, height, scale in ((37, 23, 4), (33, 17, 2)):
        source = noise(64).crop((0, 0, width, height))
        request = replace(
            BASE,
            prompt="",
            kind="upscale",
            init_image="in",
            scale=scale,
            width=width * scale,
            height=height * scale,
            guidance_scale=1.0,
        )
        result = generate(request, upscaler, images={"init_image": source}, cache=cache)
        assert result.images[0].size == (width * scale, height * scale)
