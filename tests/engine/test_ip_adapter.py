"""IP-Adapter: the image prompt acts with its scale, on every kind, and leaves no trace."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.engine.cache import PipelineCache
from generation.engine.request import GenerationRequest, ModelRef
from generation.engine.runner import generate, validate
from tests.engine.base_request import BASE
from tests.engine.pixels import mean_abs_diff, pixels

ADAPTER = "demo-ip-adapter"


def image_prompt() -> Image.Image:
    """Two flat colours side by side: an image prompt unlike anything the prompt makes."""
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    image.paste((20, 200, 220), (32, 0, 64, 64))
    return image


def noise(size: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def half_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, size // 2, size, size))
    return mask


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache(max_models=4, max_bytes=10**10)


@pytest.fixture(scope="module")
def addons(models_dir: Path) -> dict[str, ModelRef]:
    return {
        ADAPTER: ModelRef(ADAPTER, str(models_dir / ADAPTER), "ip_adapter"),
        "demo-controlnet-canny": ModelRef(
            "demo-controlnet-canny", str(models_dir / "demo-controlnet-canny"), "controlnet"
        ),
    }


@pytest.fixture(scope="module")
def checkpoint(models_dir: Path) -> ModelRef:
    return ModelRef("demo-sd15", str(models_dir / "demo-sd15"))


@pytest.fixture
def run(checkpoint: ModelRef, addons: dict[str, ModelRef], cache: PipelineCache):
    """Generate BASE with the changes given, the IP-Adapter's image and the kind's inputs."""

    def run_request(**changes: Any) -> Image.Image:
        req = replace(BASE, **changes)
        images = {
            "ip_adapter_image": image_prompt(),
            "init_image": noise(),
            "mask_image": half_mask(),
        }
        return generate(req, checkpoint, addons=addons, images=images, cache=cache).images[0]

    return run_request


def with_adapter(scale: float = 1.0, **changes: Any) -> dict[str, Any]:
    return {"ip_adapter": ADAPTER, "ip_adapter_image": "in", "ip_adapter_scale": scale, **changes}


def unet_state(cache: PipelineCache, checkpoint: ModelRef) -> tuple[dict[str, Any], Any, Any]:
    unet = cache.get(checkpoint).unet
    return dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type


def test_it_changes_pixels_with_the_scale_and_leaves_no_trace(run, cache, checkpoint) -> None:
    baseline = run()
    processors, hid_proj, hid_type = unet_state(cache, checkpoint)

    full = run(**with_adapter(1.0))
    half = run(**with_adapter(0.5))
    after = run()

    assert mean_abs_diff(full, baseline) > 10
    assert mean_abs_diff(half, baseline) > 5
    assert mean_abs_diff(full, half) > 2
    # The next plain job runs on the very processors the shared UNet had before.
    assert np.array_equal(pixels(after), pixels(baseline))
    now, now_proj, now_type = unet_state(cache, checkpoint)
    assert now.keys() == processors.keys()
    assert all(now[name] is processors[name] for name in processors)
    assert (now_proj, now_type) == (hid_proj, hid_type) == (None, None)


def test_a_scale_of_zero_gives_the_baseline(run) -> None:
    assert np.array_equal(pixels(run(**with_adapter(0.0))), pixels(run()))


def test_the_image_encoder_is_cached_not_reloaded(run, cache) -> None:
    run(**with_adapter(1.0))
    loads = cache.loads
    run(**with_adapter(0.7))
    assert cache.loads == loads
    assert ADAPTER in cache.model_ids()


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("img2img", {"init_image": "in", "strength": 0.8}),
        ("inpaint", {"init_image": "in", "mask_image": "in", "strength": 0.9}),
        (
            "controlnet",
            {
                "init_image": "in",
                "controlnet_model": "demo-controlnet-canny",
                "controlnet_type": "canny",
            },
        ),
    ],
)
def test_it_acts_on_every_kind(run, kind: str, extra: dict[str, Any]) -> None:
    plain = run(kind=kind, **extra)
    prompted = run(**with_adapter(1.0, kind=kind, **extra))
    assert mean_abs_diff(prompted, plain) > 2
    assert np.array_equal(pixels(run(kind=kind, **extra)), pixels(plain))


def test_a_failed_job_still_takes_the_adapter_off(checkpoint, addons, cache, run: Any) -> None:
    baseline = run()

    def stop(done: int, total: int) -> None:
        raise RuntimeError("canceled")

    req = replace(BASE, **with_adapter(1.0))
    with pytest.raises(RuntimeError):
        generate(
            req,
            checkpoint,
            addons=addons,
            images={"ip_adapter_image": image_prompt()},
            cache=cache,
            progress=stop,
        )
    assert np.array_equal(pixels(run()), pixels(baseline))


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"ip_adapter": ADAPTER}, "ip_adapter_image"),
        ({"ip_adapter_image": "in"}, "ip_adapter"),
        ({**with_adapter(2.5)}, "ip_adapter_scale"),
    ],
)
def test_it_refuses_a_half_or_out_of_range_adapter(changes: dict, field: str) -> None:
    req: GenerationRequest = replace(BASE, **changes)
    assert field in req.problems()
    with pytest.raises(ValueError):
        validate(req)
