"""POST /api/v5/controlnet: canny computed from init_image, or a ready control image."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from generation.models import Job
from tests.images import noise_image, outputs, png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "track_id": uuid.uuid4().hex,
        "prompt": "a lighthouse at dusk",
        "controlnet_model": "demo-controlnet-canny",
        "controlnet_type": "canny",
        "init_image": png_base64(shapes_image(64, 64, variant=0)),
        "width": 64,
        "height": 64,
        "seed": 3,
        **fields,
    }


def test_it_follows_the_control_image(api, tenant, demo_models, sync_queue):
    status, data = api.post("/api/v5/controlnet", body(tenant))
    assert status == 200, data
    [first] = outputs(data)
    [again] = outputs(api.post("/api/v5/controlnet", body(tenant))[1])
    other = png_base64(shapes_image(64, 64, variant=3))
    [edges] = outputs(api.post("/api/v5/controlnet", body(tenant, init_image=other))[1])

    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, again)
    assert np.abs(first - edges).mean() > 0.3
    meta = data["meta"]
    assert (meta["controlnet_model"], meta["controlnet_type"]) == ("demo-controlnet-canny", "canny")
    assert Job.objects.filter(kind="controlnet").count() == 3


def test_the_conditioning_scale_and_guidance_window_act(api, tenant, demo_models, sync_queue):
    [full] = outputs(api.post("/api/v5/controlnet", body(tenant))[1])
    [off] = outputs(
        api.post("/api/v5/controlnet", body(tenant, controlnet_conditioning_scale=0))[1]
    )
    [late] = outputs(api.post("/api/v5/controlnet", body(tenant, control_guidance_start=0.5))[1])
    [plain] = outputs(
        api.post(
            "/api/v3/text2img",
            {
                "key": tenant.key,
                "prompt": "a lighthouse at dusk",
                "width": 64,
                "height": 64,
                "seed": 3,
            },
        )[1]
    )
    assert np.abs(full - off).mean() > 0.3
    assert np.abs(full - late).mean() > 0.3
    # With the ControlNet's residuals scaled to zero it is plain text2img.
    assert np.abs(off - plain).max() <= 1


def test_a_ready_control_image_is_used_as_is(api, tenant, demo_models, sync_queue):
    hint = png_base64(noise_image(64, 64, seed=4))
    [with_hint] = outputs(
        api.post("/api/v5/controlnet", body(tenant, control_image=hint, init_image=None))[1]
    )
    [no_auto] = outputs(
        api.post("/api/v5/controlnet", body(tenant, init_image=hint, auto_hint="no"))[1]
    )
    [canny] = outputs(api.post("/api/v5/controlnet", body(tenant, init_image=hint))[1])
    assert np.array_equal(with_hint, no_auto)
    assert np.abs(with_hint - canny).mean() > 0.3


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"controlnet_model": None}, "controlnet_model"),
        ({"controlnet_model": "demo-controlnet-depth"}, "controlnet_model"),
        ({"controlnet_model": "demo-lora-a"}, "controlnet_model"),
        ({"controlnet_model": "demo-controlnet-canny,demo-controlnet-canny"}, "controlnet_model"),
        ({"init_image": None}, "init_image"),
        ({"controlnet_conditioning_scale": 3}, "controlnet_conditioning_scale"),
        ({"control_guidance_start": 0.8, "control_guidance_end": 0.2}, "control_guidance_end"),
        ({"model_id": "demo-sdxl"}, "controlnet_model"),
    ],
)
def test_it_refuses_bad_input_with_a_400(api, tenant, demo_models, fields, field):
    status, data = api.post("/api/v5/controlnet", body(tenant, **fields))
    assert status == 400, data
    assert field in data["message"]
    assert not Job.objects.exists()


def test_without_a_size_the_output_takes_the_control_images(api, tenant, demo_models, sync_queue):
    hint = png_base64(noise_image(96, 64, seed=4))
    fields = body(tenant, control_image=hint, init_image=None, width=None, height=None)
    [image] = outputs(api.post("/api/v5/controlnet", fields)[1])
    assert image.shape == (64, 96, 3)
