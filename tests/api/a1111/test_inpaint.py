"""A1111 inpainting on the demo model: "only masked", mask blur, invert, fill, and their bounds.

Every generation runs the real pipeline with the queue inline; the pixels answered are compared
with the init image sent.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from generation.engine.inpaint import crop_region, fit_aspect
from generation.models import Job
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

IMG2IMG = "/sdapi/v1/img2img"
# The mask's white square, off centre in a 128 × 128 init image.
BOX = (80, 24, 96, 40)
# The blur of 4 px (webui's default) reaches this far past the mask's edge.
BAND = 12


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def square_mask(size: tuple[int, int] = (128, 128), box: tuple[int, ...] = BOX) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def grown(box: tuple[int, ...], by: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return x1 - by, y1 - by, x2 + by, y2 + by


def outside(pixels: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """The pixels outside `box`, flattened (the box's area left out)."""
    x1, y1, x2, y2 = box
    keep = np.ones(pixels.shape[:2], dtype=bool)
    keep[max(y1, 0) : y2, max(x1, 0) : x2] = False
    return pixels[keep]


def inside(pixels: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return pixels[y1:y2, x1:x2]


def inpaint(api, tenant, init: Image.Image, mask: Image.Image, **fields) -> tuple[int, dict]:
    body = {
        "prompt": "a brass door knob",
        "init_images": [png_base64(init)],
        "mask": png_base64(mask),
        "seed": 7,
        "steps": 10,
        "denoising_strength": 0.9,
        "width": 64,
        "height": 64,
        **fields,
    }
    return api.post(IMG2IMG, body, **basic(tenant.key))


def image_of(data: dict) -> Image.Image:
    (b64,) = data["images"]
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.fixture
def init() -> Image.Image:
    return noise_image(128, 128, seed=3)


def test_only_masked_repaints_the_masks_box_and_answers_the_init_size(
    api, tenant, demo_models, sync_queue, init
):
    status, data = inpaint(api, tenant, init, square_mask(), inpaint_full_res=True)

    assert status == 200, data
    result = image_of(data)
    # Generated at 64 × 64, pasted back into the 128 × 128 init image, as webui answers it.
    assert result.size == (128, 128)
    painted, original = array(result), array(init)
    assert np.array_equal(outside(painted, grown(BOX, BAND)), outside(original, grown(BOX, BAND)))
    assert np.abs(inside(painted, BOX) - inside(original, BOX)).mean() > 10
    job = Job.objects.get()
    assert (job.kind, job.params["inpaint_full_res"], job.params["inpaint_padding"]) == (
        "inpaint",
        True,
        0,
    )
    assert data["parameters"]["inpaint_full_res"] is True


def test_the_padding_changes_what_is_painted_but_not_what_lies_outside_it(
    api, tenant, demo_models, sync_queue, init
):
    painted = {}
    for padding in (0, 32):
        status, data = inpaint(
            api,
            tenant,
            init,
            square_mask(),
            inpaint_full_res=True,
            inpaint_full_res_padding=padding,
            prompt=f"a brass door knob {padding}",
        )
        assert status == 200, data
        painted[padding] = array(image_of(data))
    original = array(init)
    for padding, pixels in painted.items():
        box = grown(BOX, BAND + padding)
        assert np.array_equal(outside(pixels, box), outside(original, box)), padding
    # More context around the mask: the crop is scaled less, and so painted otherwise.
    assert np.abs(inside(painted[0], BOX) - inside(painted[32], BOX)).mean() > 1


def test_only_masked_differs_from_the_whole_picture(api, tenant, demo_models, sync_queue, init):
    results = {}
    for full_res in (False, True):
        status, data = inpaint(
            api, tenant, init, square_mask(), inpaint_full_res=full_res, width=128, height=128
        )
        assert status == 200, data
        results[full_res] = array(image_of(data))
    assert results[False].shape == results[True].shape == (128, 128, 3)
    assert np.abs(inside(results[False], BOX) - inside(results[True], BOX)).mean() > 1


def test_an_empty_mask_keeps_the_init_image(api, tenant, demo_models, sync_queue, init):
    # As webui: "only masked" with nothing masked falls back to the whole picture.
    status, data = inpaint(
        api,
        tenant,
        init,
        square_mask(box=(0, 0, 0, 0)),
        inpaint_full_res=True,
        width=128,
        height=128,
    )
    assert status == 200, data
    assert np.array_equal(array(image_of(data)), array(init))


def test_the_mask_blur_widens_the_soft_edge(api, tenant, demo_models, sync_queue, init):
    painted = {}
    for blur in (0, 16):
        status, data = inpaint(
            api, tenant, init, square_mask(), mask_blur=blur, width=128, height=128
        )
        assert status == 200, data
        painted[blur] = array(image_of(data))
    original = array(init)
    # No blur: every pixel outside the mask is the init's; 16 px: the edge reaches past it.
    assert np.array_equal(outside(painted[0], BOX), outside(original, BOX))
    ring = outside(inside(painted[16], grown(BOX, 4)), (4, 4, 20, 20))
    assert np.abs(ring - outside(inside(original, grown(BOX, 4)), (4, 4, 20, 20))).mean() > 5
    job = Job.objects.order_by("pk").last()
    assert (job.params["mask_blur_x"], job.params["mask_blur_y"]) == (16, 16)


def test_mask_blur_x_and_y_reach_the_job(api, tenant, demo_models, sync_queue, init):
    status, data = inpaint(api, tenant, init, square_mask(), mask_blur_x=2, mask_blur_y=9)
    assert status == 200, data
    job = Job.objects.get()
    assert (job.params["mask_blur_x"], job.params["mask_blur_y"]) == (2, 9)


def test_an_inverted_mask_keeps_the_square_and_repaints_around_it(
    api, tenant, demo_models, sync_queue, init
):
    square = (32, 32, 96, 96)
    status, data = inpaint(
        api,
        tenant,
        init,
        square_mask(box=square),
        inpainting_mask_invert=1,
        width=128,
        height=128,
    )
    assert status == 200, data
    painted, original = array(image_of(data)), array(init)
    # The square (less the soft edge reaching into it) is kept; the rest is repainted.
    core = grown(square, -BAND)
    assert np.array_equal(inside(painted, core), inside(original, core))
    assert np.abs(painted[:20, :20] - original[:20, :20]).mean() > 10


def test_fill_and_original_start_from_different_pixels_in_only_masked(
    api, tenant, demo_models, sync_queue, init
):
    painted = {}
    for fill in (0, 1):
        status, data = inpaint(
            api,
            tenant,
            init,
            square_mask(),
            inpaint_full_res=True,
            inpainting_fill=fill,
            # On the demo model a strong denoise leaves little of the start to see.
            denoising_strength=0.5,
        )
        assert status == 200, data
        painted[fill] = array(image_of(data))
    assert np.abs(inside(painted[0], BOX) - inside(painted[1], BOX)).mean() > 1


BAD = [
    ({"mask_blur": 65}, 422, "mask_blur"),
    ({"mask_blur": -1}, 422, "mask_blur"),
    ({"mask_blur_x": 100}, 422, "mask_blur_x"),
    ({"mask_blur_y": "wide"}, 422, "mask_blur_y"),
    ({"inpaint_full_res": "maybe"}, 422, "inpaint_full_res"),
    ({"inpaint_full_res_padding": 257}, 422, "inpaint_full_res_padding"),
    ({"inpaint_full_res_padding": -4}, 422, "inpaint_full_res_padding"),
    ({"inpainting_mask_invert": 2}, 422, "inpainting_mask_invert"),
    ({"inpainting_fill": 4}, 422, "inpainting_fill"),
    ({"inpainting_fill": 2}, 400, "inpainting_fill"),
    ({"inpainting_fill": 3}, 400, "inpainting_fill"),
    ({"mask_round": False}, 400, "mask_round"),
]


@pytest.mark.parametrize(("fields", "status", "field"), BAD)
def test_a_bad_inpaint_setting_is_a_4xx_in_webuis_shape(
    api, tenant, demo_models, init, fields, status, field
):
    got, data = inpaint(api, tenant, init, square_mask(), **fields)

    assert got == status, data
    if status == 422:
        (entry,) = data["detail"]
        assert entry["loc"] == ["body", field]
        assert entry["msg"] and entry["type"] == "value_error"
    else:
        assert data == {
            "error": "ValidationError",
            "detail": data["detail"],
            "body": "",
            "errors": data["detail"],
        }
        assert data["detail"].startswith(f"{field}: ")
    assert Job.objects.count() == 0


def test_the_crop_is_widened_to_the_requests_aspect_ratio_inside_the_image():
    mask = square_mask()
    assert crop_region(mask, 0) == BOX
    assert crop_region(mask, 8) == (72, 16, 104, 48)
    # Clamped to the image.
    assert crop_region(mask, 100) == (0, 0, 128, 128)
    # 2:1 asked: a 16 × 16 box grows to 32 × 16 around its centre ...
    assert fit_aspect(BOX, 64, 32, (128, 128)) == (72, 24, 104, 40)
    # ... 1:2 grows the height; at the image's border it is shifted inward.
    assert fit_aspect(BOX, 32, 64, (128, 128)) == (80, 16, 96, 48)
    assert fit_aspect((0, 0, 16, 16), 64, 32, (128, 128)) == (0, 0, 32, 16)
    assert fit_aspect((112, 0, 128, 16), 64, 32, (128, 128)) == (96, 0, 128, 16)
    # Wider than the image allows: clamped.
    assert fit_aspect((0, 0, 16, 64), 512, 64, (128, 128)) == (0, 0, 128, 64)


def test_only_masked_past_the_output_formats_longest_side_is_a_422_and_charges_nothing(
    api, tenant, demo_models, sync_queue
):
    wide = (16392, 8)  # webp stops at 16383 pixels a side, png does not
    init, mask = Image.new("RGB", wide, "gray"), square_mask(wide, (8, 0, 16, 8))
    before = tenant.org.credit_balance
    status, data = inpaint(
        api, tenant, init, mask, override_settings={"samples_format": "webp"}, steps=4
    )
    assert status == 422, data
    assert data["detail"][0]["loc"][-1] == "init_images"
    assert "at most 16383 pixels a side" in data["detail"][0]["msg"]
    tenant.org.refresh_from_db()
    assert tenant.org.credit_balance == before
    assert not Job.objects.exists()
    status, data = inpaint(api, tenant, init, mask, inpaint_full_res=False, steps=4)
    assert status == 200, data
