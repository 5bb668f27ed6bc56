"""POST /api/v5/controlnet: what the worker could not run as asked is a 400 at submit."""

from __future__ import annotations

import uuid

import pytest
from PIL import Image

from generation.models import Job
from tests.images import centre_mask, outputs, png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "prompt": "a red fox",
        "controlnet_model": "demo-controlnet-inpaint",
        "controlnet_type": "inpaint",
        "init_image": png_base64(shapes_image(64, 64, variant=0)),
        "width": 64,
        "height": 64,
        "seed": 3,
        "base64": "yes",
        **fields,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"controlnet_model": "demo-controlnet-canny"},
        {
            "controlnet_model": "demo-controlnet-canny,demo-controlnet-inpaint",
            "controlnet_type": "canny,inpaint",
        },
        {"strength": 0.7},
    ],
)
def test_an_inpaint_controlnet_without_a_mask_is_a_400_naming_mask_image(
    api, tenant, demo_models, fields
):
    status, data = api.post("/api/v5/controlnet", body(tenant, **fields))
    assert status == 400, data
    assert list(data["message"]) == ["mask_image"], data
    assert not Job.objects.exists()


def test_with_its_mask_the_inpaint_controlnet_runs(api, tenant, demo_models, sync_queue):
    mask = png_base64(centre_mask(64, 64))
    status, data = api.post("/api/v5/controlnet", body(tenant, mask_image=mask, base64="no"))
    assert status == 200, data
    assert data["status"] == "success", data
    assert len(outputs(data)) == 1


def test_an_all_black_mask_is_a_400_naming_mask_image(api, tenant, demo_models):
    black = png_base64(Image.new("L", (64, 64), 0))
    status, data = api.post("/api/v5/controlnet", body(tenant, mask_image=black))
    assert status == 400, data
    assert list(data["message"]) == ["mask_image"], data
    assert "all black" in data["message"]["mask_image"][0]
    assert not Job.objects.exists()


def test_a_guidance_window_that_holds_no_step_is_a_400(api, tenant, demo_models):
    window = {"control_guidance_start": 0.95, "control_guidance_end": 0.96}
    canny = {"controlnet_model": "demo-controlnet-canny", "controlnet_type": "canny"}
    status, data = api.post("/api/v5/controlnet", body(tenant, **canny, **window))
    assert status == 400, data
    assert list(data["message"]) == ["control_guidance_end"], data
    assert "21 denoising steps" in data["message"]["control_guidance_end"][0]
    assert not Job.objects.exists()
    # At 41 steps step 39 lies in it (39/41 >= 0.95 and 40/41 <= 0.976).
    fits = {"control_guidance_start": 0.95, "control_guidance_end": 0.976}
    status, data = api.post(
        "/api/v5/controlnet",
        body(tenant, **canny, **fits, num_inference_steps=41, instant_response="yes"),
    )
    assert status == 200, data
