"""Pixel comparisons for engine tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def pixels(image: Image.Image) -> np.ndarray:
    """An image's pixels as a signed array, so differences do not wrap around."""
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference between two images, in 0-255 units."""
    return float(np.abs(pixels(a) - pixels(b)).mean())
