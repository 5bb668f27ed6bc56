"""Several ControlNets per job, ControlNet on img2img and inpaint, guess mode, preprocessors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from generation.engine import control
from generation.engine.cache import PipelineCache
from generation.engine.pipelines import kind_error, pipeline_for
from generation.engine.request import ControlNetUnit, GenerationRequest, ModelRef
from generation.engine.runner import generate
from tests.engine.base_request import BASE
from tests.engine.pixels import mean_abs_diff, pixels

NETS = ("canny", "tile", "shuffle", "inpaint")


def shapes(variant: int = 0, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (20, 30, 40))
    draw = ImageDraw.Draw(image)
    for i in range(3):
        x = (variant * 7 + i * 3) % 6 * 8
        y = (variant * 5 + i * 2) % 6 * 8
        draw.rectangle([x, y, x + 16, y + 16], fill=(200, 60 * i, 255 - 40 * variant))
    return image


def centre_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return mask


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache(max_models=6, max_bytes=10**10)


@pytest.fixture
def cn(models_dir: Path, cache: PipelineCache):
    """Run a ControlNet request (model, add-ons and images given by name)."""
    addons = {
        f"demo-controlnet-{name}": ModelRef(
            f"demo-controlnet-{name}", str(models_dir / f"demo-controlnet-{name}"), "controlnet"
        )
        for name in NETS
    }
    model = ModelRef("demo-sd15", str(models_dir / "demo-sd15"))

    def run(images: dict | None = None, **changes):
        fields = {
            "kind": "controlnet",
            "controlnet_model": "demo-controlnet-canny",
            "controlnet_type": "canny",
            "init_image": "init",
            **changes,
        }
        req = replace(BASE, **fields)
        given = {"init_image": shapes(0), **(images or {})}
        return generate(req, model, addons=addons, images=given, cache=cache).images[0]

    return run


def test_the_preprocessors_make_their_maps() -> None:
    picture = shapes(1)
    edges = np.asarray(control.canny(picture))
    assert set(np.unique(edges)) <= {0, 255} and edges.max() == 255

    blurred = control.tile(picture, rate=4)
    assert blurred.size == picture.size
    # A quarter-size copy enlarged again: the sharp rectangle edges are gone.
    assert (
        np.abs(np.diff(pixels(blurred), axis=1)).max()
        < np.abs(np.diff(pixels(picture), axis=1)).max()
    )
    assert np.array_equal(pixels(control.tile(picture, rate=1)), pixels(picture))

    shuffled = control.shuffle(picture, seed=3)
    assert shuffled.size == picture.size
    assert np.array_equal(pixels(shuffled), pixels(control.shuffle(picture, seed=3)))
    assert mean_abs_diff(shuffled, control.shuffle(picture, seed=4)) > 1
    assert mean_abs_diff(shuffled, picture) > 1
    # Content shuffle moves pixels, it does not invent colours: the palette stays within range.
    assert pixels(shuffled).max() <= pixels(picture).max()

    masked = control.inpaint(picture, centre_mask())
    assert masked.shape == (64, 64, 3) and masked.dtype == np.float32
    assert (masked[16:48, 16:48] == -1).all()
    assert np.allclose(masked[:16], np.asarray(picture)[:16] / 255.0)


def test_two_controlnets_differ_from_either_alone(cn) -> None:
    canny = cn()
    tile = cn(controlnet_model="demo-controlnet-tile", controlnet_type="tile")
    unit = ControlNetUnit(model="demo-controlnet-tile", type="tile")
    both = cn(controlnet_units=(unit,))
    assert mean_abs_diff(both, canny) > 0.5
    assert mean_abs_diff(both, tile) > 0.5
    again = cn(controlnet_units=(unit,))
    assert np.array_equal(pixels(both), pixels(again))

    weaker = cn(controlnet_units=(replace(unit, scale=0.3),))
    assert mean_abs_diff(both, weaker) > 0.5
    # A unit at scale 0 adds nothing: the first ControlNet alone.
    silent = cn(controlnet_units=(replace(unit, scale=0.0),))
    assert np.abs(pixels(silent) - pixels(canny)).max() <= 1
    late = cn(controlnet_units=(replace(unit, start=0.5),))
    assert mean_abs_diff(both, late) > 0.3


def test_a_unit_with_its_own_image_follows_it(cn) -> None:
    unit = ControlNetUnit(model="demo-controlnet-tile", image="unit-image")
    one = cn(controlnet_units=(unit,), images={"controlnet_units.0.image": shapes(2)})
    other = cn(controlnet_units=(unit,), images={"controlnet_units.0.image": shapes(4)})
    assert mean_abs_diff(one, other) > 0.5


def test_controlnet_img2img_follows_the_init_image(cn) -> None:
    alone = cn()
    first = cn(kind="controlnet-img2img", strength=0.6)
    second = cn(
        kind="controlnet-img2img",
        strength=0.6,
        control_image="hint",
        images={"init_image": shapes(3), "control_image": control.canny(shapes(0))},
    )
    assert mean_abs_diff(first, alone) > 0.5
    assert mean_abs_diff(first, second) > 0.5


def test_controlnet_inpaint_keeps_the_pixels_outside_the_mask(cn) -> None:
    init = shapes(2)
    painted = cn(
        kind="controlnet-inpaint",
        controlnet_model="demo-controlnet-inpaint",
        controlnet_type="inpaint",
        mask_image="mask",
        strength=1.0,
        mask_blur_x=0,
        mask_blur_y=0,
        images={"init_image": init, "mask_image": centre_mask()},
    )
    out, kept = pixels(painted), pixels(init)
    assert np.abs(out[:12] - kept[:12]).max() <= 1
    assert np.abs(out[20:44, 20:44] - kept[20:44, 20:44]).mean() > 5
    # The ControlNet acts inside the mask: plain inpainting of the same request differs there.
    plain = cn(
        kind="controlnet-inpaint",
        controlnet_model="demo-controlnet-inpaint",
        controlnet_type="inpaint",
        controlnet_conditioning_scale=0.0,
        mask_image="mask",
        strength=1.0,
        mask_blur_x=0,
        mask_blur_y=0,
        images={"init_image": init, "mask_image": centre_mask()},
    )
    assert np.abs(out[20:44, 20:44] - pixels(plain)[20:44, 20:44]).mean() > 0.5


def test_guess_mode_changes_the_pixels(cn) -> None:
    assert mean_abs_diff(cn(), cn(guess_mode=True)) > 0.5


@pytest.mark.parametrize("net", ["tile", "shuffle", "inpaint"])
def test_each_computed_map_acts(cn, net: str) -> None:
    extra = {"mask_image": "mask"} if net == "inpaint" else {}
    images = {"mask_image": centre_mask()} if net == "inpaint" else {}
    computed = cn(
        controlnet_model=f"demo-controlnet-{net}", controlnet_type=net, images=images, **extra
    )
    # The init image itself as a ready map: what the ControlNet sees without the preprocessor.
    ready = cn(
        controlnet_model=f"demo-controlnet-{net}",
        controlnet_type="",
        control_image="ready",
        images={"control_image": shapes(0)},
    )
    assert mean_abs_diff(computed, ready) > 0.3


def test_a_plain_job_after_them_has_the_baseline_pixels(cn, models_dir: Path, cache) -> None:
    model = ModelRef("demo-sd15", str(models_dir / "demo-sd15"))
    before = generate(BASE, model, cache=cache).images[0]
    cn(
        controlnet_units=(ControlNetUnit(model="demo-controlnet-tile", type="tile"),),
        guess_mode=True,
    )
    cn(kind="controlnet-img2img", strength=0.6)
    after = generate(BASE, model, cache=cache).images[0]
    assert np.array_equal(pixels(before), pixels(after))


def test_units_round_trip_through_json_and_are_bounded() -> None:
    unit = ControlNetUnit(model="b", type="tile", image="inputs/1/x.png", scale=0.5, end=0.8)
    req = replace(
        BASE,
        kind="controlnet",
        controlnet_model="a",
        controlnet_units=(unit,),
        guess_mode=True,
    )
    back = GenerationRequest.from_params(json.loads(json.dumps(req.to_params())))
    assert back == req
    assert back.input_images()["controlnet_units.0.image"] == "inputs/1/x.png"
    assert hash(back)

    assert (
        "controlnet_units" in replace(req, controlnet_units=(replace(unit, scale=11),)).problems()
    )
    assert "controlnet_units" in replace(req, controlnet_units=(unit,) * 4).problems()
    flipped = replace(unit, start=0.9, end=0.2)
    assert "control_guidance_end" in replace(req, controlnet_units=(flipped,)).problems()
    assert "guess_mode" in replace(BASE, guess_mode=True).problems()


def test_the_table_serves_controlnet_on_img2img_and_inpaint(models_dir: Path, cache) -> None:
    assert kind_error("sd15", "controlnet-img2img") is None
    assert kind_error("inpaint", "controlnet-inpaint") is None
    assert kind_error("sdxl", "controlnet-inpaint") is None
    assert kind_error("inpaint", "controlnet-img2img") is not None
    base = cache.get(ModelRef("demo-sd15", str(models_dir / "demo-sd15")))
    net = cache.get(
        ModelRef("demo-controlnet-tile", str(models_dir / "demo-controlnet-tile"), "controlnet")
    )
    for kind in ("controlnet-img2img", "controlnet-inpaint"):
        derived = pipeline_for(base, "sd15", kind, controlnet=[net, net])
        assert derived.unet is base.unet
        assert type(derived.controlnet).__name__ == "MultiControlNetModel"
