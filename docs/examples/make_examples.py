"""Draw the docs' example inputs: a 64x64 picture and an inpainting mask of the same size.

    .venv/bin/python docs/examples/make_examples.py

The PNGs are committed next to this script; it is here so anyone can see (and remake) what they
hold. Small on purpose: the docs' examples run on a CPU with the demo models in seconds.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIDE = 64


def house() -> Image.Image:
    """A house under a sun: edges for canny, colours for img2img."""
    image = Image.new("RGB", (SIDE, SIDE), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 48, SIDE, SIDE), fill=(70, 140, 60))  # grass
    draw.ellipse((44, 6, 58, 20), fill=(250, 210, 60))  # sun
    draw.rectangle((14, 30, 40, 52), fill=(200, 90, 70))  # walls
    draw.polygon([(10, 31), (27, 16), (44, 31)], fill=(110, 60, 50))  # roof
    draw.rectangle((24, 40, 30, 52), fill=(90, 60, 40))  # door
    return image


def mask() -> Image.Image:
    """White where an inpaint repaints (the walls and the door), black where it keeps."""
    image = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(image).rectangle((12, 28, 42, 54), fill=255)
    return image


if __name__ == "__main__":
    house().save(HERE / "house.png", optimize=True)
    mask().save(HERE / "mask.png", optimize=True)
