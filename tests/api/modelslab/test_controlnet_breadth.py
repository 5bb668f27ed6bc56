"""POST /api/v5/controlnet: several ControlNets, with img2img or inpaint, guess mode."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from generation.models import Job
from tests.images import centre_mask, noise_image, outputs, png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "prompt": "a lighthouse at dusk",
        "controlnet_model": "demo-controlnet-canny",
        "controlnet_type": "canny",
        "init_image": png_base64(shapes_image(64, 64, variant=0)),
        "width": 64,
        "height": 64,
        "seed": 3,
        **{k: v for k, v in fields.items() if v is not None},
    }


def image(api, tenant, **fields):
    status, data = api.post("/api/v5/controlnet", body(tenant, **fields))
    assert status == 200, data
    [pixels] = outputs(data)
    return pixels, data


def differ(a, b) -> float:
    return float(np.abs(a - b).mean())


def test_several_controlnets_act_together(api, tenant, demo_models, sync_queue):
    canny, _ = image(api, tenant)
    tile, _ = image(api, tenant, controlnet_model="demo-controlnet-tile", controlnet_type="tile")
    both, data = image(
        api,
        tenant,
        controlnet_model="demo-controlnet-canny,demo-controlnet-tile",
        controlnet_type="canny,tile",
    )
    weaker, _ = image(
        api,
        tenant,
        controlnet_model="demo-controlnet-canny,demo-controlnet-tile",
        controlnet_type="canny,tile",
        controlnet_conditioning_scale="1,0.3",
    )
    assert differ(both, canny) > 0.3
    assert differ(both, tile) > 0.3
    assert differ(both, weaker) > 0.3
    meta = data["meta"]
    assert meta["controlnet_model"] == "demo-controlnet-canny,demo-controlnet-tile"
    assert meta["controlnet_type"] == "canny,tile"
    assert meta["controlnet_units"][0]["model"] == "demo-controlnet-tile"
    job = Job.objects.get(pk=data["id"])
    [unit] = job.params["controlnet_units"]
    # The tile map is computed by the worker from the shared init image.
    assert (unit["model"], unit["type"], unit["image"]) == ("demo-controlnet-tile", "tile", "")


def test_each_controlnet_may_have_its_own_image(api, tenant, demo_models, sync_queue):
    hints = [png_base64(noise_image(64, 64, seed=s)) for s in (1, 2)]
    other = [hints[0], png_base64(noise_image(64, 64, seed=5))]
    models = "demo-controlnet-canny,demo-controlnet-shuffle"
    one, data = image(
        api, tenant, controlnet_model=models, control_image=hints, init_image="", auto_hint="no"
    )
    two, _ = image(
        api, tenant, controlnet_model=models, control_image=other, init_image="", auto_hint="no"
    )
    assert differ(one, two) > 0.3
    job = Job.objects.get(pk=data["id"])
    assert job.params["controlnet_units"][0]["image"].startswith(f"inputs/{tenant.org.pk}/")


def test_controlnet_img2img_follows_the_init_image(api, tenant, demo_models, sync_queue):
    hint = png_base64(shapes_image(64, 64, variant=0))
    alone, _ = image(api, tenant, control_image=hint, init_image="")
    first, data = image(
        api, tenant, control_image=hint, init_image=png_base64(noise_image(64, 64, 1)), strength=0.7
    )
    second, _ = image(
        api, tenant, control_image=hint, init_image=png_base64(noise_image(64, 64, 2)), strength=0.7
    )
    assert differ(first, alone) > 0.3
    assert differ(first, second) > 0.3
    assert Job.objects.get(pk=data["id"]).kind == "controlnet-img2img"
    assert data["meta"]["strength"] == 0.7


def test_controlnet_inpaint_keeps_the_pixels_outside_the_mask(api, tenant, demo_models, sync_queue):
    init = noise_image(64, 64, seed=7)
    painted, data = image(
        api,
        tenant,
        controlnet_model="demo-controlnet-inpaint",
        controlnet_type="inpaint",
        init_image=png_base64(init),
        mask_image=png_base64(centre_mask(64, 64)),
    )
    kept = np.asarray(init).astype(np.int16)
    # Outside the mask and its 4 px soft edge the init image comes back as it was.
    assert np.abs(painted[:8] - kept[:8]).max() <= 2
    assert differ(painted[20:44, 20:44], kept[20:44, 20:44]) > 5
    assert Job.objects.get(pk=data["id"]).kind == "controlnet-inpaint"


def test_guess_mode_acts_and_leaves_no_trace(api, tenant, demo_models, sync_queue):
    plain = {"key": tenant.key, "prompt": "a lighthouse at dusk", "width": 64, "height": 64}
    [before] = outputs(api.post("/api/v3/text2img", {**plain, "seed": 3})[1])
    normal, _ = image(api, tenant)
    guessed, data = image(
        api,
        tenant,
        guess_mode="yes",
        controlnet_model="demo-controlnet-canny,demo-controlnet-tile",
    )
    assert data["meta"]["guess_mode"] == "yes"
    assert differ(normal, guessed) > 0.3
    [after] = outputs(api.post("/api/v3/text2img", {**plain, "seed": 3, "track_id": "x"})[1])
    assert np.array_equal(before, after)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"controlnet_model": "demo-controlnet-canny,demo-controlnet-canny"}, "controlnet_model"),
        (
            {"controlnet_model": ",".join(f"demo-controlnet-{n}" for n in "abcde")},
            "controlnet_model",
        ),
        (
            {
                "controlnet_model": "demo-controlnet-canny,demo-controlnet-tile",
                "controlnet_type": "a,b,c",
            },
            "controlnet_type",
        ),
        (
            {
                "controlnet_model": "demo-controlnet-canny,demo-controlnet-tile",
                "controlnet_conditioning_scale": "1,3",
            },
            "controlnet_conditioning_scale",
        ),
        ({"controlnet_model": "demo-controlnet-canny,demo-lora-a"}, "controlnet_model"),
        (
            {
                "controlnet_model": "demo-controlnet-canny,demo-controlnet-tile",
                "control_image": ["a"] * 3,
            },
            "control_image",
        ),
        ({"strength": 0.5, "init_image": "", "control_image": "x"}, "init_image"),
        ({"strength": 2}, "strength"),
        (
            {"mask_image": png_base64(centre_mask(64, 64)), "model_id": "demo-sdxl"},
            "controlnet_model",
        ),
        # diffusers' PAG ControlNet pipeline fails mid-call on guess mode's map.
        ({"guess_mode": "yes", "self_attention": "yes"}, "guess_mode"),
    ],
)
def test_it_refuses_bad_units_with_a_400(api, tenant, demo_models, fields, field):
    status, data = api.post("/api/v5/controlnet", body(tenant, **fields))
    assert status == 400, data
    assert field in data["message"], data
    assert not Job.objects.exists()
