"""Image helpers for API tests: inputs as base64, outputs fetched back through their links."""

from __future__ import annotations

import base64
import io
from urllib.parse import urlsplit

import numpy as np
from django.test import Client
from PIL import Image, ImageDraw


def png_base64(image: Image.Image, data_url: bool = False) -> str:
    """The image as base64 PNG text, optionally as a data: URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A reproducible RGB noise picture."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def shapes_image(width: int, height: int, variant: int = 0) -> Image.Image:
    """A picture with hard edges (for canny): rectangles placed by `variant`."""
    image = Image.new("RGB", (width, height), "black")
    draw = ImageDraw.Draw(image)
    step = max(width, height) // 8
    for i in range(3):
        x = (variant * 7 + i * 3) % 6 * step
        y = (variant * 5 + i * 2) % 6 * step
        draw.rectangle([x, y, x + 2 * step, y + 2 * step], outline="white", width=2)
    return image


def centre_mask(width: int, height: int) -> Image.Image:
    """White (repaint) in the middle half, black (keep) around it."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return mask


def fetched_bytes(url: str) -> bytes:
    """The bytes behind an image link from an answer, fetched as a client would (signed link)."""
    parts = urlsplit(url)
    response = Client().get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200, (url, response.status_code)
    return b"".join(response.streaming_content)


def stored_image(url: str) -> Image.Image:
    """The output image behind a link from an answer, in RGB."""
    return Image.open(io.BytesIO(fetched_bytes(url))).convert("RGB")


def pixels(url: str) -> np.ndarray:
    return np.asarray(stored_image(url)).astype(np.int16)


def outputs(data: dict) -> list[np.ndarray]:
    """Every output image of a success answer, as pixel arrays."""
    assert data["status"] == "success", data
    return [pixels(url) for url in data["output"]]
