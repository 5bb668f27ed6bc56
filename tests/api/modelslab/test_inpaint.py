"""POST /api/v3/inpaint: the masked area is repainted, the rest stays the input's."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from PIL import Image

from billing.models import CreditEntry
from generation.models import Job
from tests.images import centre_mask, noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)
SIZE = 96


def body(tenant, **fields):
    return {
        "key": tenant.key,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "track_id": uuid.uuid4().hex,
        "prompt": "a stone bridge",
        "init_image": png_base64(noise_image(SIZE, SIZE)),
        "mask_image": png_base64(centre_mask(SIZE, SIZE)),
        "seed": 11,
        **fields,
    }


@pytest.mark.parametrize("model_id", ["demo-sd15", "demo-sd15-inpaint"])
def test_it_repaints_the_mask_and_keeps_the_rest(api, tenant, demo_models, sync_queue, model_id):
    status, data = api.post("/api/v3/inpaint", body(tenant, model_id=model_id, strength=1))
    assert status == 200, data
    [image] = outputs(data)
    source = np.asarray(noise_image(SIZE, SIZE)).astype(np.int16)
    assert image.shape == source.shape

    # Away from the mask's soft edge the input survives; inside, the model painted.
    border = np.ones((SIZE, SIZE), bool)
    border[SIZE // 4 - 12 : 3 * SIZE // 4 + 12, SIZE // 4 - 12 : 3 * SIZE // 4 + 12] = False
    inside = (slice(SIZE // 4 + 12, 3 * SIZE // 4 - 12),) * 2
    assert np.abs(image[border] - source[border]).max() <= 2
    assert np.abs(image[inside] - source[inside]).mean() > 20
    assert Job.objects.get().kind == "inpaint"


def test_it_reproduces_pixels_and_follows_the_seed(api, tenant, demo_models, sync_queue):
    [a] = outputs(api.post("/api/v3/inpaint", body(tenant))[1])
    [b] = outputs(api.post("/api/v3/inpaint", body(tenant))[1])
    [c] = outputs(api.post("/api/v3/inpaint", body(tenant, seed=12))[1])
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.3


def test_dreambooth_inpaint_runs_the_inpainting_model(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        "/api/v4/dreambooth/inpaint", body(tenant, model_id="demo-sd15-inpaint", samples=2)
    )
    assert status == 200, data
    assert len(outputs(data)) == 2
    assert data["meta"]["model_id"] == "demo-sd15-inpaint"


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"mask_image": None}, "mask_image"), ({"mask_image": "%%%", "base64": "yes"}, "mask_image")],
)
def test_it_refuses_a_missing_or_broken_mask(api, tenant, demo_models, fields, field):
    status, data = api.post("/api/v3/inpaint", body(tenant, **fields))
    assert status == 400
    assert field in data["message"]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v3/inpaint",
        "/api/v6/realtime/inpaint",
        "/api/v7/images/inpaint",
        "/api/v6/images/inpaint",
    ],
)
def test_it_refuses_an_all_black_mask_and_charges_nothing(api, tenant, demo_models, path):
    black = png_base64(Image.new("L", (SIZE, SIZE), 0))
    status, data = api.post(path, body(tenant, mask_image=black))
    assert status == 400, data
    assert data["message"] == {
        "mask_image": ["The mask_image is all black: it marks nothing to repaint."]
    }
    assert not Job.objects.exists()
    assert not CreditEntry.objects.filter(kind=CreditEntry.Kind.DEBIT).exists()


def test_a_mask_of_another_size_is_stretched_to_the_image(api, tenant, demo_models, sync_queue):
    """As documented: the mask is resized to the init image, so its centre stays the centre."""
    status, data = api.post(
        "/api/v3/inpaint", body(tenant, mask_image=png_base64(centre_mask(32, 32)), strength=1)
    )
    assert status == 200, data
    [image] = outputs(data)
    source = np.asarray(noise_image(SIZE, SIZE)).astype(np.int16)
    border = np.ones((SIZE, SIZE), bool)
    border[SIZE // 4 - 12 : 3 * SIZE // 4 + 12, SIZE // 4 - 12 : 3 * SIZE // 4 + 12] = False
    inside = (slice(SIZE // 4 + 12, 3 * SIZE // 4 - 12),) * 2
    assert np.abs(image[border] - source[border]).max() <= 2
    assert np.abs(image[inside] - source[inside]).mean() > 20


def test_an_inpainting_model_refuses_text2img(api, tenant, demo_models):
    status, data = api.post(
        "/api/v4/dreambooth",
        {"key": tenant.key, "prompt": "a", "model_id": "demo-sd15-inpaint"},
    )
    assert status == 400
    assert "inpaint" in data["message"]["model_id"][0]
