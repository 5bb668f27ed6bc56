"""POST /api/v6/image_editing/super_resolution: exactly `scale` times the input's size."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from generation.models import Job
from tests.images import noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        "init_image": png_base64(noise_image(40, 24)),
        "seed": 1,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "track_id": uuid.uuid4().hex,
        **fields,
    }


@pytest.mark.parametrize("scale", [2, 4])
def test_it_upscales_by_exactly_the_scale(api, tenant, demo_models, sync_queue, scale):
    status, data = api.post("/api/v6/image_editing/super_resolution", body(tenant, scale=scale))
    assert status == 200, data
    [image] = outputs(data)
    assert image.shape == (24 * scale, 40 * scale, 3)
    assert data["meta"]["scale"] == scale
    job = Job.objects.get()
    assert (job.kind, job.model.model_id) == ("upscale", "demo-upscaler-x4")


def test_it_follows_the_input(api, tenant, demo_models, sync_queue):
    [a] = outputs(api.post("/api/v6/image_editing/super_resolution", body(tenant))[1])
    [b] = outputs(api.post("/api/v6/image_editing/super_resolution", body(tenant))[1])
    other = png_base64(noise_image(40, 24, seed=9))
    [c] = outputs(
        api.post("/api/v6/image_editing/super_resolution", body(tenant, init_image=other))[1]
    )
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.3


@pytest.mark.parametrize(
    ("fields", "field", "status"),
    [
        ({"scale": 3}, "scale", 400),
        ({"init_image": None}, "init_image", 400),
        ({"init_image": png_base64(noise_image(600, 16))}, "init_image", 400),
        ({"init_image": png_base64(noise_image(4, 16))}, "init_image", 400),
        ({"face_enhance": "yes"}, "face_enhance", 400),
        ({"model_id": "demo-sd15"}, None, 404),
    ],
)
def test_it_refuses_bad_input(api, tenant, demo_models, fields, field, status):
    got, data = api.post("/api/v6/image_editing/super_resolution", body(tenant, **fields))
    assert got == status, data
    if field:
        assert field in data["message"]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "a cat"),
        ("negative_prompt", "blur"),
        ("width", 512),
        ("height", 512),
        ("samples", 4),
        ("num_inference_steps", 41),
        ("steps", 31),
        ("guidance_scale", 7.5),
        ("scheduler", "EulerDiscreteScheduler"),
        ("lora_model", "demo-lora-a"),
        ("instant_response", "yes"),
        ("url", "https://example.com/cat.png"),
    ],
)
def test_it_refuses_the_fields_it_does_not_take(api, tenant, demo_models, field, value):
    """The upscaler takes no prompt, size, samples or sampling: they would be ignored."""
    got, data = api.post(
        "/api/v6/image_editing/super_resolution", body(tenant, scale=2, **{field: value})
    )
    assert got == 400, data
    assert list(data["message"]) == [field]
    assert not Job.objects.exists()


def test_it_refuses_a_fuzzed_body_naming_each_stray_field(api, tenant, demo_models):
    fields = {
        "scale": 2,
        "width": 512,
        "height": 512,
        "prompt": "a cat",
        "samples": 4,
        "num_inference_steps": 41,
    }
    got, data = api.post("/api/v6/image_editing/super_resolution", body(tenant, **fields))
    assert got == 400, data
    assert set(data["message"]) == {"width", "height", "prompt", "samples", "num_inference_steps"}
    assert "super_resolution" in data["message"]["prompt"][0]
    assert not Job.objects.exists()


def test_it_takes_default_values_of_fields_it_does_not_use(api, tenant, demo_models, sync_queue):
    fields = {"scale": 2, "prompt": "", "samples": 1, "highres_fix": "no", "upscale": 1}
    got, data = api.post("/api/v6/image_editing/super_resolution", body(tenant, **fields))
    assert got == 200, data
    assert Job.objects.get().kind == "upscale"
