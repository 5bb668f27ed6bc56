"""ModelsLab's clip_skip_2 (SDXL only) and A1111 prompt weighting, checked at submit."""

from __future__ import annotations

import pytest

from generation.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        "prompt": "a red fox in the snow",
        "width": 64,
        "height": 64,
        **fields,
    }


def test_it_generates_with_clip_skip_2_on_sdxl(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        "/api/v3/text2img",
        body(tenant, model_id="demo-sdxl", clip_skip_2=2, prompt="a (red:1.3) fox BREAK snow"),
    )

    assert status == 200, data
    assert data["status"] == "success", data
    job = Job.objects.get()
    assert job.params["clip_skip_2"] == 2
    assert job.params["prompt"] == "a (red:1.3) fox BREAK snow"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"model_id": "demo-sd15", "clip_skip_2": 2}, "needs an SDXL model"),
        ({"model_id": "demo-sdxl", "clip_skip_2": 5}, "at most 4"),
        ({"model_id": "demo-sdxl", "clip_skip_2": 13}, "12"),
        ({"model_id": "demo-sdxl", "clip_skip_2": 0}, "1"),
    ],
)
def test_it_refuses_a_clip_skip_2_it_cannot_honour(
    api, tenant, demo_models, no_wait, fields, words
):
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))

    assert status == 400, data
    assert data["status"] == "error"
    assert words in data["message"]["clip_skip_2"][0], data
    assert not Job.objects.exists()


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_it_refuses_a_weight_that_is_no_number(api, tenant, demo_models, no_wait, field):
    status, data = api.post("/api/v3/text2img", body(tenant, **{field: "a (fox:1.2.3)"}))

    assert status == 400, data
    assert "not a number" in data["message"][field][0], data
    assert not Job.objects.exists()
