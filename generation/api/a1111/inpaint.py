"""img2img's init image and mask, and webui's inpaint settings as GenerationRequest's fields.

The mask is decoded and inverted here (inpainting_mask_invert); the fill, the blur of the paste
back and "only masked" (inpaint_full_res) run in the worker, around generation
(generation/engine/inpaint.py). The images go on to generation/submission.py decoded (PIL
images, not base64 again); it stores them as the PNGs the worker reads.
"""

from __future__ import annotations

from typing import Any

from PIL import ImageOps

from generation import submission
from generation.api.a1111.errors import Unprocessable
from generation.engine.request import OUTPUT_MAX_SIDE

# webui's inpainting_fill by number (2, latent noise, and 3, latent nothing, are refused in
# tables.INPAINT_NOT_HONOURED).
FILLS = {0: "fill", 1: "original"}


def inpaint_inputs(
    values: dict[str, Any], images: submission.Inputs, output_format: str
) -> dict[str, Any]:
    """init_image, mask_image and the inpaint settings for the engine, from validated values.

    Without a mask the init image stays as sent: it is decoded after the model and add-on
    checks, as every format's is (serializers.request_fields).
    """
    init_value = values["init_images"][0]
    mask_value = values.get("mask_image")
    if not mask_value:
        return {"init_image": init_value}
    init = images.load("init_images", init_value)
    mask = images.load("mask", mask_value).convert("L")
    if values["inpainting_mask_invert"]:
        mask = ImageOps.invert(mask)
    longest = OUTPUT_MAX_SIDE.get(output_format)
    if values["inpaint_full_res"] and longest and max(init.size) > longest:
        # "Only masked" answers the init image's size, which this format cannot encode.
        raise Unprocessable(
            {
                "init_images": [
                    f"With inpaint_full_res the answer has the init image's size, and "
                    f"{output_format} images are at most {longest} pixels a side."
                ]
            }
        )
    blur = values.get("mask_blur")
    return {
        "init_image": init,
        # The worker's mask is RGB, as every decoded input image is (generation/inputs.py).
        "mask_image": mask.convert("RGB"),
        "inpaint_fill": FILLS[values["inpainting_fill"]],
        "mask_blur_x": values["mask_blur_x"] if blur is None else blur,
        "mask_blur_y": values["mask_blur_y"] if blur is None else blur,
        "inpaint_full_res": values["inpaint_full_res"],
        "inpaint_padding": values["inpaint_full_res_padding"],
    }
