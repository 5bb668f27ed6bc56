"""img2img's init image and mask: decoded once, the mask inverted and the init filled as asked.

The images go on to generation/submission.py decoded (PIL images, not base64 again); it stores
them as the PNGs the worker reads.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageFilter, ImageOps

from generation import submission
from generation.api.a1111.serializers import refuse_unhonoured
from generation.api.a1111.tables import INPAINT_NOT_HONOURED


def filled(image: Image.Image, mask: Image.Image) -> Image.Image:
    """webui's inpainting_fill 0: the masked area painted with the colours around it.

    The kept pixels are blurred at shrinking radii with premultiplied alpha (so the empty area
    takes the neighbours' colours, not black) and layered, the sharp original last.
    """
    keep = ImageOps.invert(mask.convert("L").resize(image.size))
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    result = Image.new("RGBA", image.size)
    for radius, times in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(times):
            result.alpha_composite(layer)
    return result.convert("RGB")


def inpaint_inputs(
    body: dict[str, Any], values: dict[str, Any], images: submission.Inputs
) -> dict[str, Any]:
    """init_image and mask_image for the engine: the mask inverted and the init filled as asked.

    Without a mask the init image stays as sent: it is decoded after the model and add-on
    checks, as every format's is (fields.py).
    """
    init_value = values["init_images"][0]
    mask_value = values.get("mask_image")
    if not mask_value:
        return {"init_image": init_value}
    refuse_unhonoured(body, INPAINT_NOT_HONOURED)
    init = images.load("init_images", init_value)
    mask = images.load("mask", mask_value).convert("L")
    if values["inpainting_mask_invert"]:
        mask = ImageOps.invert(mask)
    if values["inpainting_fill"] == 0:
        init = filled(init, mask)
    # The worker's mask is RGB, as every decoded input image is (generation/inputs.py).
    return {"init_image": init, "mask_image": mask.convert("RGB")}
