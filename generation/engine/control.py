"""Control images for ControlNet: canny edges computed here, other types arrive ready-made."""

from __future__ import annotations

from typing import Any

# Types whose control image Pictor computes from the init image itself.
COMPUTED_TYPES = ("canny",)
# OpenCV's usual thresholds for the canny annotator (as in the ControlNet reference code).
CANNY_LOW = 100
CANNY_HIGH = 200


def canny(image: Any, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Any:
    """The canny edge map of a PIL image, as a 3-channel PIL image (white edges on black)."""
    import cv2  # lazy: heavy, not loaded at Django start-up
    import numpy as np
    from PIL import Image

    gray = np.asarray(image.convert("L"))
    edges = cv2.Canny(gray, low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def control_image(controlnet_type: str, init_image: Any | None, ready: Any | None) -> Any:
    """The image to condition on: the ready one if given, else computed from init_image."""
    if ready is not None:
        return ready.convert("RGB")
    if init_image is None:
        raise ValueError("ControlNet needs a control image (or an init_image to compute it from).")
    if controlnet_type not in COMPUTED_TYPES:
        raise ValueError(
            f"controlnet_type {controlnet_type!r} needs a ready control image; only "
            f"{', '.join(COMPUTED_TYPES)} is computed from init_image."
        )
    return canny(init_image)
