"""Several ControlNet units, units on img2img and inpaint, control modes, more preprocessors and
IP-Adapter units on the A1111 format (a1111/controlnet.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from generation.models import AIModel, Job
from tests.api.a1111.test_controlnet import IMG2IMG, basic, image_of, list_name, txt2img, unit
from tests.images import centre_mask, noise_image, png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)

TILE = "demo-controlnet-tile"
FEW = {"steps": 6}


def tile_unit(**fields) -> dict:
    return unit(module="tile_resample", model=list_name(TILE), threshold_a=2, **fields)


def decoded(data: dict) -> np.ndarray:
    import base64

    [image] = data["images"]
    raw = Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")
    return np.asarray(raw).astype(np.int16)


def img2img(api, tenant, *units, **fields):
    init = png_base64(noise_image(64, 64, seed=9))
    return txt2img(api, tenant, *units, path=IMG2IMG, init_images=[init], **fields)


def stored(name: str) -> np.ndarray:
    with default_storage.open(name, "rb") as handle:
        return np.asarray(Image.open(io.BytesIO(handle.read())).convert("RGB")).astype(np.int16)


def test_two_units_act_together_each_with_its_weight(api, tenant, demo_models, sync_queue):
    canny = image_of(api, tenant, unit(), **FEW)
    both = image_of(api, tenant, unit(), tile_unit(), **FEW)
    weaker = image_of(api, tenant, unit(), tile_unit(weight=0.3), **FEW)
    assert np.abs(both - canny).mean() > 0.3
    assert np.abs(both - weaker).mean() > 0.3
    job = Job.objects.filter(kind="controlnet").order_by("pk")[1]
    [extra] = job.params["controlnet_units"]
    assert (extra["model"], extra["type"], extra["scale"]) == (TILE, "tile", 1.0)
    # The tile map was made here: the picture, blurred, stored for the worker.
    tile_map = stored(extra["image"])
    assert tile_map.shape == (64, 64, 3)
    assert np.abs(np.diff(tile_map, axis=1)).max() < 255


def test_a_unit_guides_img2img_and_takes_the_init_image_without_one(
    api, tenant, demo_models, sync_queue
):
    status, plain = img2img(api, tenant, denoising_strength=0.7, **FEW)
    assert status == 200, plain
    status, guided = img2img(api, tenant, unit(image=""), denoising_strength=0.7, **FEW)
    assert status == 200, guided
    assert np.abs(decoded(plain) - decoded(guided)).mean() > 0.3
    job = Job.objects.order_by("pk").last()
    assert job.kind == "controlnet-img2img"
    assert job.params["control_image"] and job.params["init_image"]


def test_inpaint_only_inpaints_with_the_img2img_mask(api, tenant, demo_models, sync_queue):
    init = noise_image(64, 64, seed=9)
    inpaint_unit = unit(module="inpaint_only", model=list_name("demo-controlnet-inpaint"), image="")
    status, data = img2img(
        api,
        tenant,
        inpaint_unit,
        mask=png_base64(centre_mask(64, 64)),
        denoising_strength=1.0,
        # "Only masked" crops the picture, which the control maps do not follow: a 400 below.
        inpaint_full_res=False,
        **FEW,
    )
    assert status == 200, data
    out, kept = decoded(data), np.asarray(init).astype(np.int16)
    assert np.abs(out[:8] - kept[:8]).max() <= 2
    assert np.abs(out[20:44, 20:44] - kept[20:44, 20:44]).mean() > 5
    job = Job.objects.get()
    assert (job.kind, job.params["controlnet_type"]) == ("controlnet-inpaint", "inpaint")
    # Its map (with -1s) is the worker's: no control image was stored.
    assert job.params["control_image"] == ""
    status, data = img2img(
        api, tenant, inpaint_unit, mask=png_base64(centre_mask(64, 64)), inpaint_full_res=True
    )
    assert status == 400, data
    assert data["detail"].startswith("inpaint_full_res: ")


def test_control_mode_2_is_guess_mode(api, tenant, demo_models, sync_queue):
    balanced = image_of(api, tenant, unit(), **FEW)
    guessed = image_of(api, tenant, unit(control_mode="ControlNet is more important"), **FEW)
    assert np.abs(balanced - guessed).mean() > 0.3
    assert Job.objects.order_by("pk").last().params["guess_mode"] is True
    status, data = txt2img(api, tenant, unit(control_mode=2), tile_unit())
    assert status == 400, data
    assert data["detail"].startswith("alwayson_scripts.controlnet.args[1].control_mode: ")


def test_shuffle_maps_are_seeded_by_the_job(api, tenant, demo_models, queued_only):
    shuffle = unit(module="shuffle", model=list_name("demo-controlnet-shuffle"))
    for seed in (3, 3, 4):
        status, _ = txt2img(api, tenant, shuffle, seed=seed)
        assert status == 504
    maps = [stored(job.params["control_image"]) for job in Job.objects.order_by("pk")]
    assert np.array_equal(maps[0], maps[1])
    assert np.abs(maps[0] - maps[2]).mean() > 1
    assert np.abs(maps[0] - np.asarray(shapes_image(64, 64, variant=0))).mean() > 1


def test_inpaint_only_without_a_mask_is_refused(api, tenant, demo_models):
    inpaint_unit = unit(module="inpaint_only", model=list_name("demo-controlnet-inpaint"))
    status, data = txt2img(api, tenant, inpaint_unit)
    assert status == 400, data
    assert data["detail"].startswith("alwayson_scripts.controlnet.args[0].module: ")


def ip_unit(**fields) -> dict:
    return unit(module="ip-adapter_clip_sd15", model="fake-ip-adapter", weight=0.6, **fields)


def test_an_ip_adapter_unit_sets_the_request_ip_adapter(api, tenant, demo_models, queued_only):
    AIModel.objects.filter(family=AIModel.Family.IP_ADAPTER).delete()
    status, data = txt2img(api, tenant, ip_unit())
    assert status == 400, data
    assert data["detail"].startswith("alwayson_scripts.controlnet.args[0].model: No IP-Adapter")

    AIModel.objects.create(
        model_id="fake-ip-adapter",
        name="fake-ip-adapter",
        family=AIModel.Family.IP_ADAPTER,
        base=AIModel.Base.SD15,
        path="fake-ip-adapter",
    )
    status, data = txt2img(api, tenant, ip_unit(), unit())
    assert status == 504, data
    job = Job.objects.get()
    assert job.kind == "controlnet"
    assert (job.params["ip_adapter"], job.params["ip_adapter_scale"]) == ("fake-ip-adapter", 0.6)
    assert job.params["ip_adapter_image"].startswith(f"inputs/{tenant.org.pk}/")
    assert job.params["controlnet_model"] == "demo-controlnet-canny"

    status, data = txt2img(api, tenant, ip_unit(), ip_unit())
    assert status == 400, data
    assert data["detail"].startswith("alwayson_scripts.controlnet.args[1]: ")
    status, data = txt2img(api, tenant, ip_unit(guidance_start=0.5))
    assert status == 400, data


def test_the_lists_name_the_new_modules(api, tenant, demo_models):
    status, data = api.get("/controlnet/module_list", **basic(tenant.key))
    assert status == 200
    sliders = data["module_detail"]["tile_resample"]["sliders"]
    assert [s["name"] for s in sliders] == ["Resolution", "Down Sampling Rate"]
