"""Inpainting's inputs and result: the fill, A1111's "only masked" crop and the soft paste back.

"Whole picture" inpaints the init image resized to the request's size. "Only masked" (A1111's
inpaint_full_res) crops the init image and mask to the mask's bounding box plus a padding,
widened to the request's aspect ratio, inpaints that crop at the request's size, then scales
the result back and pastes it into the init image, which keeps its own size. Either way the
result is pasted through the mask blurred by mask_blur px, so only the masked area (with a
soft edge) changes. PIL only: no torch, no Django.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps

from generation.engine.request import MASK_BLUR

Box = tuple[int, int, int, int]


def filled(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's inpainting_fill 0: the masked area painted with the colours around it.

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


def soft(mask: Image.Image, blur: tuple[int, int]) -> Image.Image:
    """The mask with its edge blurred by (x, y) px: the weights of the paste back."""
    return mask.filter(ImageFilter.GaussianBlur(blur)) if any(blur) else mask


def crop_region(mask: Image.Image, padding: int) -> Box | None:
    """The mask's bounding box grown by `padding` px, within the image (None: empty mask)."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    width, height = mask.size
    return (
        max(x1 - padding, 0),
        max(y1 - padding, 0),
        min(x2 + padding, width),
        min(y2 + padding, height),
    )


def _widen(start: int, end: int, wanted: float, limit: int) -> tuple[int, int]:
    """[start, end) grown around its centre to `wanted` px, shifted back inside [0, limit)."""
    grow = int(wanted - (end - start))
    start -= grow // 2
    end += grow - grow // 2
    if end >= limit:
        start -= end - limit
        end = limit
    if start < 0:
        end -= start
        start = 0
    return start, min(end, limit)


def fit_aspect(box: Box, width: int, height: int, size: tuple[int, int]) -> Box:
    """The box widened (as A1111's expand_crop_region) to the aspect ratio width:height.

    So the crop is not stretched when it is resized to the request's size; near the image's
    border the box is shifted inward, and clamped where the image is too small.
    """
    x1, y1, x2, y2 = box
    ratio = width / height
    if (x2 - x1) / (y2 - y1) > ratio:
        y1, y2 = _widen(y1, y2, (x2 - x1) / ratio, size[1])
    else:
        x1, x2 = _widen(x1, x2, (y2 - y1) * ratio, size[0])
    return x1, y1, x2, y2


@dataclass
class Inpaint:
    """The pipeline's image and mask at the request's size, and where its result goes back."""

    image: Image.Image
    mask: Image.Image
    # The picture the result is pasted into, and the soft mask (its size) it is pasted through.
    canvas: Image.Image
    weights: Image.Image
    # Only masked: the crop, in the canvas's pixels (None: the whole picture).
    box: Box | None = None

    def paste(self, generated: Image.Image) -> Image.Image:
        """The generated image put back into the canvas; outside the soft mask nothing changes."""
        generated = generated.convert("RGB")
        if self.box is None:
            return Image.composite(generated, self.canvas, self.weights)
        x1, y1, x2, y2 = self.box
        placed = self.canvas.copy()
        placed.paste(generated.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        return Image.composite(placed, self.canvas, self.weights)


def prepare(
    init: Image.Image,
    mask: Image.Image,
    size: tuple[int, int],
    *,
    fill: str = "original",
    blur: tuple[int, int] = (MASK_BLUR, MASK_BLUR),
    only_masked: bool = False,
    padding: int = 0,
) -> Inpaint:
    """The inpaint's inputs at `size` (white in the mask: repaint), as A1111 prepares them.

    Only masked with an empty mask falls back to the whole picture, as A1111 does.
    """
    init = init.convert("RGB")
    mask = mask.convert("L")
    if only_masked:
        full = mask.resize(init.size)
        weights = soft(full, blur)
        # The blurred mask's box, so the soft edge lies inside the crop.
        box = crop_region(weights, padding)
        if box is not None:
            box = fit_aspect(box, *size, init.size)
            image = init.crop(box).resize(size, Image.Resampling.LANCZOS)
            sharp = full.crop(box).resize(size, Image.Resampling.LANCZOS)
            if fill == "fill":
                image = filled(image, sharp)
            return Inpaint(image, sharp, init, weights, box)
    # The fill reads the neighbours at the init image's own size, then both are resized.
    source = filled(init, mask) if fill == "fill" else init
    sharp = mask.resize(size)
    return Inpaint(source.resize(size), sharp, init.resize(size), soft(sharp, blur))
