"""Images into the OpenAI format: uploaded files and OpenAI's alpha masks.

Answers need nothing from here: the engine stores each image in the asked format (png, jpeg or
webp), and a b64_json answer sends the stored bytes as they are.
"""

from __future__ import annotations

import base64
import hashlib
import io
import warnings
from typing import Any

from django.conf import settings
from PIL import Image, ImageOps
from rest_framework.exceptions import ValidationError

from generation import inputs


def read_upload(field: str, upload: Any) -> bytes:
    """The bytes of an uploaded file (the body limit already bounds its size)."""
    if not hasattr(upload, "read"):
        raise ValidationError({field: [f"Send {field} as a file in multipart/form-data."]})
    data: bytes = upload.read()
    if not data:
        raise ValidationError({field: [f"The {field} file is empty."]})
    return data


def digest(data: bytes) -> str:
    """A short fingerprint of an uploaded file, so the spam filter tells two images apart."""
    return hashlib.sha256(data).hexdigest()


def decode_image(field: str, data: bytes) -> Image.Image:
    """The uploaded image in RGB, with the pixel limits every input image has."""
    try:
        return inputs.load_image(base64.b64encode(data).decode(), is_base64=True, field=field)
    except inputs.InputImageError as exc:
        raise ValidationError({field: [str(exc)]}) from None


def decode_mask(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Pictor's mask (white = repaint) from OpenAI's: fully transparent pixels mark the edit."""
    limit = settings.PICTOR_INPUT_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.size[0] * image.size[1] > limit:
                    raise ValidationError(
                        {"mask": [f"The mask is too large: at most {limit} pixels."]}
                    )
                image.load()
                has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
                mask = ImageOps.exif_transpose(image).convert("RGBA")
    except ValidationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError(
            {"mask": [f"The mask is too large: at most {limit} pixels."]}
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise ValidationError({"mask": ["The mask is not a readable image."]}) from None
    if not has_alpha:
        raise ValidationError(
            {
                "mask": [
                    "The mask needs an alpha channel: its fully transparent pixels mark the edit."
                ]
            }
        )
    if mask.size != size:
        raise ValidationError(
            {
                "mask": [
                    f"The mask is {mask.size[0]}x{mask.size[1]}; it must be the image's size, "
                    f"{size[0]}x{size[1]}."
                ]
            }
        )
    repaint = mask.getchannel("A").point(lambda alpha: 255 if alpha == 0 else 0)
    if repaint.getbbox() is None:
        raise ValidationError(
            {"mask": ["The mask has no fully transparent pixel: nothing to edit."]}
        )
    return repaint
