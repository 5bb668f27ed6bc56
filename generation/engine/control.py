"""Control images for ControlNet: the preprocessors that need no weights, run on PIL images.

canny (edges), tile (a blurred, downsampled copy), shuffle (content shuffle: the picture
warped by a smooth random flow, as controlnet_aux's ContentShuffleDetector) and inpaint (the
picture with the masked pixels set to -1, as ControlNet inpaint models expect). Any other
controlnet_type takes a ready control image.
"""

from __future__ import annotations

from typing import Any

# Types whose control image Pictor computes from the init image itself.
COMPUTED_TYPES = ("canny", "tile", "shuffle", "inpaint")
# OpenCV's usual thresholds for the canny annotator (as in the ControlNet reference code).
CANNY_LOW = 100
CANNY_HIGH = 200
# tile: how many times smaller the picture is made before it is enlarged back (the extension's
# tile_resample "Down Sampling Rate" goes from 1, no change, to 8).
TILE_RATE = 2.0
MAX_TILE_RATE = 8.0
# inpaint: mask pixels above this (0-255) are repainted, and their control value is this.
MASK_THRESHOLD = 127
MASKED_VALUE = -1.0


def canny(image: Any, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Any:
    """The canny edge map of a PIL image, as a 3-channel PIL image (white edges on black)."""
    import cv2  # lazy: heavy, not loaded at Django start-up
    import numpy as np
    from PIL import Image

    gray = np.asarray(image.convert("L"))
    edges = cv2.Canny(gray, low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def tile(image: Any, rate: float = TILE_RATE) -> Any:
    """The picture `rate` times smaller (area average), enlarged back to its size (cubic)."""
    import cv2  # lazy: heavy, not loaded at Django start-up
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    if rate <= 1:
        return Image.fromarray(pixels)
    small = cv2.resize(
        pixels,
        (max(1, round(width / rate)), max(1, round(height / rate))),
        interpolation=cv2.INTER_AREA,
    )
    return Image.fromarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))


def _noise_disk(rng: Any, height: int, width: int, cell: int) -> Any:
    """Smooth noise in [0, 1]: a coarse random grid enlarged by cubic interpolation."""
    import cv2  # lazy: heavy, not loaded at Django start-up

    coarse = rng.uniform(0, 1, (height // cell + 2, width // cell + 2))
    noise = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    noise = noise[cell : cell + height, cell : cell + width]
    noise = noise - noise.min()
    return noise / max(float(noise.max()), 1e-6)


def shuffle(image: Any, seed: int) -> Any:
    """Content shuffle: each pixel taken from where a smooth random flow points (seeded).

    controlnet_aux draws the flow on a grid of 256 px at a 512 px detect resolution; here the
    grid is half the short side at the picture's own size, the same proportion.
    """
    import cv2  # lazy: heavy, not loaded at Django start-up
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    cell = max(1, min(height, width) // 2)
    rng = np.random.default_rng(seed)
    x = (_noise_disk(rng, height, width, cell) * float(width - 1)).astype(np.float32)
    y = (_noise_disk(rng, height, width, cell) * float(height - 1)).astype(np.float32)
    return Image.fromarray(cv2.remap(pixels, x, y, cv2.INTER_LINEAR))


def inpaint(image: Any, mask: Any) -> Any:
    """The inpaint control: RGB in [0, 1], masked pixels -1; a float array (H, W, 3).

    A PNG cannot hold -1, so this map is made by the worker, never stored.
    """
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    mask = mask.convert("L")
    if mask.size != image.size:
        mask = mask.resize(image.size)
    masked = np.asarray(mask) > MASK_THRESHOLD
    pixels = pixels.copy()
    pixels[masked] = MASKED_VALUE
    return pixels


def control_image(controlnet_type: str, init_image: Any | None, ready: Any | None) -> Any:
    """The image to condition on: the ready one if given, else computed from init_image.

    Only for the types that need no mask (inpaint goes through `condition`).
    """
    if ready is not None:
        return ready.convert("RGB")
    if init_image is None:
        raise ValueError("ControlNet needs a control image (or an init_image to compute it from).")
    if controlnet_type == "tile":
        return tile(init_image)
    if controlnet_type != "canny":
        raise ValueError(
            f"controlnet_type {controlnet_type!r} needs a ready control image; only "
            "canny, tile and shuffle are computed from init_image."
        )
    return canny(init_image)


def condition(
    controlnet_type: str,
    source: Any | None,
    ready: bool,
    mask: Any | None,
    size: tuple[int, int],
    seed: int,
) -> Any:
    """One ControlNet's conditioning at `size`: a PIL image, or a float array for inpaint.

    `source` is the unit's own image (`ready`: used as the map) or else the init image the
    map is computed from; an inpaint unit always masks its source.
    """
    if source is None:
        raise ValueError("ControlNet needs a control image (or an init_image to compute it from).")
    if controlnet_type == "inpaint":
        if mask is None:
            raise ValueError("An inpaint ControlNet needs a mask (mask_image).")
        return inpaint(source.convert("RGB").resize(size), mask.resize(size))
    if ready:
        return source.convert("RGB").resize(size)
    if controlnet_type == "shuffle":
        return shuffle(source, seed).resize(size)
    return control_image(controlnet_type, source, None).resize(size)
