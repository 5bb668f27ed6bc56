"""The SDXL refiner through the wire formats: Hyperbolic's enable_refiner, A1111's
refiner_checkpoint and refiner_switch_at; what cannot be refined is a 400 naming the field.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from generation.models import AIModel, Job
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

HYPERBOLIC = "/v1/image/generation"
TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
SDXL = {"width": 64, "height": 64, "steps": 8, "seed": 3}
REFINER_TITLE = "demo-sdxl-refiner.safetensors"


def pixels(b64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    return np.asarray(image.convert("RGB")).astype(np.int16)


def hyperbolic(api, tenant, **fields):
    body = {"model_name": "demo-sdxl", "prompt": "a lighthouse at dusk", **SDXL, **fields}
    return api.post(HYPERBOLIC, body, Authorization=f"Bearer {tenant.key}")


def webui(api, tenant, path=TXT2IMG, **fields):
    body = {
        "prompt": "a lighthouse at dusk",
        "override_settings": {"sd_model_checkpoint": "demo-sdxl"},
        **SDXL,
        **fields,
    }
    token = base64.b64encode(f"webui:{tenant.key}".encode()).decode()
    return api.post(path, body, Authorization=f"Basic {token}")


def test_hyperbolic_enable_refiner_runs_the_refiner(api, tenant, demo_models, sync_queue):
    status, plain = hyperbolic(api, tenant)
    assert status == 200, plain
    status, refined = hyperbolic(api, tenant, enable_refiner=True)
    assert status == 200, refined
    status, again = hyperbolic(api, tenant, cfg_scale=5)  # the same body as the first

    first, second = Job.objects.order_by("pk")[:2]
    assert first.params["refiner"] == ""
    assert (second.params["refiner"], second.params["refiner_switch_at"]) == (
        "demo-sdxl-refiner",
        0.8,
    )
    base_pixels = pixels(plain["images"][0]["image"])
    assert np.abs(pixels(refined["images"][0]["image"]) - base_pixels).mean() > 1
    assert np.array_equal(pixels(again["images"][0]["image"]), base_pixels)


def test_a1111_refiner_checkpoint_runs_the_refiner(api, tenant, demo_models, sync_queue):
    status, plain = webui(api, tenant)
    assert status == 200, plain
    status, refined = webui(api, tenant, refiner_checkpoint=REFINER_TITLE, refiner_switch_at=0.6)
    assert status == 200, refined
    status, off = webui(api, tenant, refiner_checkpoint="None", refiner_switch_at=1)
    assert status == 200, off

    jobs = list(Job.objects.order_by("pk"))
    assert (jobs[1].params["refiner"], jobs[1].params["refiner_switch_at"]) == (
        "demo-sdxl-refiner",
        0.6,
    )
    assert jobs[2].params["refiner"] == ""
    base_pixels = pixels(plain["images"][0])
    assert np.abs(pixels(refined["images"][0]) - base_pixels).mean() > 1
    assert np.array_equal(pixels(off["images"][0]), base_pixels)
    assert refined["parameters"]["refiner_checkpoint"] == REFINER_TITLE
    extra = json.loads(refined["info"])["extra_generation_params"]
    assert extra == {"Refiner": "demo-sdxl-refiner", "Refiner switch at": 0.6}


def test_a1111_lists_the_refiner_among_the_checkpoints(api, tenant, demo_models):
    token = base64.b64encode(f"webui:{tenant.key}".encode()).decode()
    status, data = api.get("/sdapi/v1/sd-models", Authorization=f"Basic {token}")
    assert status == 200
    titles = [m["title"] for m in data if m["model_name"] == "demo-sdxl-refiner"]
    assert len(titles) == 1 and titles[0].startswith(REFINER_TITLE + " [")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_name": "demo-sd15"}, "SDXL jobs only; demo-sd15"),
        ({"image": png_base64(noise_image(64, 64))}, "text2img jobs only, not img2img"),
    ],
)
def test_hyperbolic_refuses_what_cannot_be_refined(
    api, tenant, demo_models, queued_only, fields, message
):
    status, data = hyperbolic(api, tenant, enable_refiner=True, **fields)
    assert status == 400, data
    assert data["param"] == "enable_refiner"
    assert message in data["message"]
    assert Job.objects.count() == 0


def test_a_refiner_is_no_request_model(api, tenant, demo_models, queued_only):
    status, data = hyperbolic(api, tenant, model_name="demo-sdxl-refiner")
    assert (status, data["param"]) == (400, "model_name")
    assert "not a checkpoint" in data["message"]
    status, data = webui(api, tenant, override_settings={"sd_model_checkpoint": REFINER_TITLE})
    assert status == 400
    assert data["detail"].startswith("override_settings.sd_model_checkpoint: ")
    assert Job.objects.count() == 0


def test_hyperbolic_refuses_enable_refiner_without_a_refiner(api, tenant, demo_models, queued_only):
    AIModel.objects.filter(family=AIModel.Family.REFINER).update(enabled=False)
    status, data = hyperbolic(api, tenant, enable_refiner=True)
    assert (status, data["param"]) == (400, "enable_refiner")
    assert "No refiner model" in data["message"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"refiner_checkpoint": "no-such-refiner"}, "refiner_checkpoint", "not found"),
        ({"refiner_checkpoint": "demo-sdxl"}, "refiner_checkpoint", "not a SDXL refiner"),
        (
            {
                "refiner_checkpoint": REFINER_TITLE,
                "override_settings": {"sd_model_checkpoint": "demo-sd15"},
            },
            "refiner_checkpoint",
            "SDXL jobs only",
        ),
        (
            {"refiner_checkpoint": REFINER_TITLE, "enable_hr": True},
            "refiner_checkpoint",
            "hires fix",
        ),
        (
            {"refiner_checkpoint": REFINER_TITLE, "refiner_switch_at": 1},
            "refiner_switch_at",
            "between 0.01 and 0.99",
        ),
    ],
)
def test_a1111_refuses_what_cannot_be_refined(
    api, tenant, demo_models, queued_only, fields, field, message
):
    status, data = webui(api, tenant, **fields)
    assert status == 400, data
    assert data["detail"].startswith(f"{field}: ")
    assert message in data["detail"]
    assert Job.objects.count() == 0


def test_a1111_refuses_a_refiner_on_img2img(api, tenant, demo_models, queued_only):
    status, data = webui(
        api,
        tenant,
        IMG2IMG,
        init_images=[png_base64(noise_image(64, 64))],
        refiner_checkpoint=REFINER_TITLE,
    )
    assert status == 400, data
    assert data["detail"].startswith("refiner_checkpoint: ")
    assert Job.objects.count() == 0
