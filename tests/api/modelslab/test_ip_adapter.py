"""IP-Adapter (ip_adapter_id, ip_adapter_scale, ip_adapter_image) on text2img, img2img, inpaint."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from PIL import Image

from generation.models import AIModel, Job
from tests.images import centre_mask, noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)
SIZE = 64


def image_prompt() -> str:
    image = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
    image.paste((20, 200, 220), (SIZE // 2, 0, SIZE, SIZE))
    return png_base64(image)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "track_id": uuid.uuid4().hex,
        "prompt": "a castle on a hill",
        "width": SIZE,
        "height": SIZE,
        "seed": 21,
        **fields,
    }


def adapter(**fields):
    return {"ip_adapter_id": "demo-ip-adapter", "ip_adapter_image": image_prompt(), **fields}


def image(api, tenant, path="/api/v3/text2img", **fields) -> np.ndarray:
    status, data = api.post(path, body(tenant, **fields))
    assert status == 200, data
    [pixels] = outputs(data)
    return pixels


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a - b).mean() > 1


def test_it_prompts_with_the_image_and_leaves_nothing_behind(api, tenant, demo_models, sync_queue):
    before = image(api, tenant)
    full = image(api, tenant, **adapter())
    half = image(api, tenant, **adapter(ip_adapter_scale=0.5))
    listed = image(api, tenant, **adapter(ip_adapter_scale=[0.5]))
    after = image(api, tenant)

    assert differ(before, full) and differ(before, half) and differ(full, half)
    assert np.array_equal(half, listed)
    assert np.array_equal(before, after)
    job = Job.objects.order_by("-pk")[1]
    assert job.params["ip_adapter"] == "demo-ip-adapter"
    assert job.params["ip_adapter_scale"] == 0.5
    status, data = api.post("/api/v3/text2img", body(tenant, **adapter(ip_adapter_scale="0.5")))
    assert data["meta"]["ip_adapter_id"] == "demo-ip-adapter"
    assert data["meta"]["ip_adapter_scale"] == 0.5


@pytest.mark.parametrize(
    "path, fields",
    [
        ("/api/v3/img2img", {"init_image": png_base64(noise_image(SIZE, SIZE)), "strength": 0.8}),
        (
            "/api/v3/inpaint",
            {
                "init_image": png_base64(noise_image(SIZE, SIZE)),
                "mask_image": png_base64(centre_mask(SIZE, SIZE)),
                "strength": 1,
            },
        ),
    ],
)
def test_it_works_with_img2img_and_inpaint(api, tenant, demo_models, sync_queue, path, fields):
    plain = image(api, tenant, path, **fields)
    prompted = image(api, tenant, path, **fields, **adapter())
    assert differ(plain, prompted)


def refusal(api, tenant, path="/api/v3/text2img", **fields) -> dict:
    status, data = api.post(path, body(tenant, **fields))
    assert status == 400, data
    assert not Job.objects.exists()
    return data


def test_it_refuses_an_unknown_or_invisible_adapter(api, tenant, outsider, demo_models):
    data = refusal(api, tenant, **adapter(ip_adapter_id="no-such-adapter"))
    assert "ip_adapter_id" in str(data)
    assert "no-such-adapter" in str(data)

    AIModel.objects.filter(model_id="demo-ip-adapter").update(organization=outsider.org)
    data = refusal(api, tenant, **adapter())
    assert "ip_adapter_id" in str(data)


def test_it_refuses_another_family_or_base(api, tenant, demo_models):
    data = refusal(api, tenant, **adapter(ip_adapter_id="demo-lora-a"))
    assert "ip_adapter_id" in str(data) and "IP-Adapter" in str(data)

    data = refusal(api, tenant, model_id="demo-sdxl", width=64, height=64, **adapter())
    assert "ip_adapter_id" in str(data) and "does not fit demo-sdxl" in str(data)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"ip_adapter_image": image_prompt()}, "ip_adapter_image"),
        ({"ip_adapter_scale": 0.5}, "ip_adapter_scale"),
        ({"ip_adapter_id": "demo-ip-adapter"}, "ip_adapter_image"),
        (adapter(ip_adapter_id="demo-ip-adapter,other"), "ip_adapter_id"),
        (adapter(ip_adapter_scale="0.5,0.7"), "ip_adapter_scale"),
        (adapter(ip_adapter_scale=3), "ip_adapter_scale"),
        (adapter(ip_adapter_image="bm90IGFuIGltYWdl"), "ip_adapter_image"),
    ],
)
def test_it_refuses_half_or_bad_adapter_fields(api, tenant, demo_models, fields, field):
    data = refusal(api, tenant, **fields)
    assert field in str(data)


def test_super_resolution_names_where_the_fields_belong(api, tenant, demo_models):
    data = refusal(
        api,
        tenant,
        "/api/v6/image_editing/super_resolution",
        init_image=png_base64(noise_image(16, 16)),
        **adapter(),
    )
    assert "ip_adapter_id" in str(data) and "belongs to" in str(data)
