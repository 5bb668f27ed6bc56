"""The canvas work of outpainting: a larger init image and the mask of its new border.

Outpainting is an inpaint of a grown canvas: the image sits where the client placed it, the
new border holds its edge pixels stretched outwards (so the denoising starts from the image's
own colours, not black), and the mask covers that border plus `overlap` px of the image along
each grown side, so the seam is repainted too. PIL and numpy only: the job itself is a plain
inpaint (generation/submission.py), priced, stored and fetched like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Canvas sides are multiples of this (the engine's latent grid).
GRID = 8


@dataclass(frozen=True)
class Sides:
    """Pixels added on each side of the image."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    @property
    def grows(self) -> bool:
        return any((self.left, self.right, self.top, self.bottom))

    def canvas(self, width: int, height: int) -> tuple[int, int]:
        """The grown canvas of an image of width × height."""
        return width + self.left + self.right, height + self.top + self.bottom

    @classmethod
    def centred(cls, size: tuple[int, int], canvas: tuple[int, int]) -> Sides:
        """The sides that put an image of `size` in the middle of `canvas` (which holds it)."""
        dx, dy = canvas[0] - size[0], canvas[1] - size[1]
        return cls(left=dx // 2, right=dx - dx // 2, top=dy // 2, bottom=dy - dy // 2)


def on_grid(image: Image.Image) -> Image.Image:
    """The image resized to the nearest multiples of GRID (itself when it is on the grid)."""
    width, height = (max(GRID, round(side / GRID) * GRID) for side in image.size)
    size = (width, height)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def extended(image: Image.Image, sides: Sides) -> Image.Image:
    """The image on the grown canvas, the border filled by repeating its edge pixels."""
    pixels = np.asarray(image.convert("RGB"))
    grown = np.pad(
        pixels,
        ((sides.top, sides.bottom), (sides.left, sides.right), (0, 0)),
        mode="edge",
    )
    return Image.fromarray(grown)


def border_mask(size: tuple[int, int], sides: Sides, overlap: int) -> Image.Image:
    """White (repaint) over the new border and `overlap` px into the image on each grown side.

    The overlap never eats the whole image: at least one pixel in the middle is kept.
    """
    width, height = size
    canvas = sides.canvas(width, height)
    x_reach = min(overlap, (width - 1) // 2)
    y_reach = min(overlap, (height - 1) // 2)
    keep = (
        sides.left + (x_reach if sides.left else 0),
        sides.top + (y_reach if sides.top else 0),
        sides.left + width - (x_reach if sides.right else 0),
        sides.top + height - (y_reach if sides.bottom else 0),
    )
    mask = Image.new("L", canvas, 255)
    mask.paste(0, keep)
    return mask
