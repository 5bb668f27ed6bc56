"""POST /api/v6/image_editing/outpaint and /object_removal: inpaint jobs on a prepared canvas."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from PIL import Image

from billing.models import CreditEntry
from generation import editing
from generation.models import Job
from generation.service import image_cost
from tests.images import centre_mask, noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

OUTPAINT = "/api/v6/image_editing/outpaint"
ERASE = "/api/v6/image_editing/object_removal"
SIDE = 64
# Pixels near a repainted area that the soft paste back may touch (mask blur and overlap).
MARGIN = 12


def source() -> Image.Image:
    return noise_image(SIDE, SIDE, seed=3)


def outpaint_body(tenant, **fields):
    return {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "prompt": "a meadow",
        "image": png_base64(source()),
        "seed": 7,
        **fields,
    }


def erase_body(tenant, size=96, **fields):
    return {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "init_image": png_base64(noise_image(size, size)),
        "mask_image": png_base64(centre_mask(size, size)),
        "seed": 7,
        **fields,
    }


def test_outpaint_grows_the_chosen_sides_and_keeps_the_image(api, tenant, demo_models, sync_queue):
    sides = {"left": 32, "top": 16, "bottom": 8, "overlap_width": 8}
    status, data = api.post(OUTPAINT, outpaint_body(tenant, **sides))
    assert status == 200, data
    [image] = outputs(data)
    assert image.shape == (SIDE + 16 + 8, SIDE + 32, 3)

    # The image sits where the sides put it; away from the repainted seam it is untouched.
    original = np.asarray(source()).astype(np.int16)
    placed = image[16 : 16 + SIDE, 32 : 32 + SIDE]
    keep = (slice(8 + MARGIN, SIDE - 8 - MARGIN), slice(8 + MARGIN, SIDE))
    assert np.abs(placed[keep] - original[keep]).max() <= 2

    # The new border was painted, not left as the stretched edge pixels.
    plain = np.asarray(editing.extended(source(), editing.Sides(left=32, top=16, bottom=8))).astype(
        np.int16
    )
    border = np.ones(image.shape[:2], bool)
    border[16 : 16 + SIDE, 32:] = False
    assert np.abs(image[border] - plain[border]).mean() > 10

    job = Job.objects.get()
    assert (job.kind, job.params["width"], job.params["height"]) == ("inpaint", 96, 88)
    debit = CreditEntry.objects.get(key=f"job:{job.pk}:debit")
    assert -debit.amount == data["meta"]["credits"] == image_cost(96, 88, job.params["steps"])
    status, fetched = api.post(f"/api/v6/image_editing/fetch/{job.pk}", {"key": tenant.key})
    assert (status, fetched["status"]) == (200, "success")
    assert [url.split("?")[0] for url in fetched["output"]] == [
        url.split("?")[0] for url in data["output"]
    ]


def test_outpaint_centres_the_image_in_modelslabs_width_and_height(
    api, tenant, demo_models, sync_queue
):
    status, data = api.post(OUTPAINT, outpaint_body(tenant, width=128, height=96))
    assert status == 200, data
    [image] = outputs(data)
    assert image.shape == (96, 128, 3)
    original = np.asarray(source()).astype(np.int16)
    inner = slice(10 + MARGIN, SIDE - 10 - MARGIN)
    placed = image[16 : 16 + SIDE, 32 : 32 + SIDE]
    assert np.abs(placed[inner, inner] - original[inner, inner]).max() <= 2


def test_border_mask_covers_the_border_and_the_overlap():
    mask = np.asarray(editing.border_mask((64, 64), editing.Sides(left=16, bottom=8), 4))
    assert mask.shape == (72, 80)
    assert (mask[:, :20] == 255).all() and (mask[64 - 4 :, :] == 255).all()
    assert (mask[:60, 20:] == 0).all()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"left": 12}, "left"),
        ({"left": 0, "right": 0}, "left"),
        ({"left": 1024}, "left"),
        ({"left": 8, "width": 128}, "width"),
        ({}, "width"),
        ({"width": 56, "height": 64}, "width"),
        ({"width": 64, "height": 64}, "width"),
        ({"width": 100, "height": 64}, "width"),
        ({"image": None, "left": 8}, "image"),
        ({"left": 8, "mask_image": "x"}, "mask_image"),
        ({"left": 8, "overlap_width": 43}, "overlap_width"),
        ({"left": 8, "num_inference_steps": 21, "steps": 31}, "steps"),
    ],
)
def test_outpaint_refuses_bad_sides(api, tenant, demo_models, fields, field):
    status, data = api.post(OUTPAINT, outpaint_body(tenant, **fields))
    assert status == 400, data
    assert list(data["message"]) == [field]
    assert not Job.objects.exists()


def test_outpaint_stays_within_the_plans_largest_side(api, free_tenant, demo_models):
    status, data = api.post(OUTPAINT, outpaint_body(free_tenant, right=512))
    assert status == 400, data
    assert list(data["message"]) == ["right"]
    assert "512" in data["message"]["right"][0]


def test_object_removal_repaints_the_mask_and_keeps_the_rest(api, tenant, demo_models, sync_queue):
    size = 96
    status, data = api.post(ERASE, erase_body(tenant))
    assert status == 200, data
    [image] = outputs(data)
    before = np.asarray(noise_image(size, size)).astype(np.int16)
    assert image.shape == before.shape
    outside = np.ones((size, size), bool)
    outside[
        size // 4 - MARGIN : 3 * size // 4 + MARGIN, size // 4 - MARGIN : 3 * size // 4 + MARGIN
    ] = False
    inside = (slice(size // 4 + MARGIN, 3 * size // 4 - MARGIN),) * 2
    assert np.abs(image[outside] - before[outside]).max() <= 2
    assert np.abs(image[inside] - before[inside]).mean() > 20
    job = Job.objects.get()
    assert (job.kind, job.params["inpaint_fill"]) == ("inpaint", "fill")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mask_image": None}, "mask_image"),
        ({"mask_image": png_base64(Image.new("L", (96, 96), 0))}, "mask_image"),
        ({"init_image": None}, "init_image"),
        ({"strength": 0.5}, "strength"),
    ],
)
def test_object_removal_refuses_a_missing_or_empty_mask(api, tenant, demo_models, fields, field):
    status, data = api.post(ERASE, erase_body(tenant, **fields))
    assert status == 400, data
    assert list(data["message"]) == [field]
    assert not Job.objects.exists()
