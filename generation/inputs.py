"""Input images (init, mask, control): fetched or decoded once at submit time, kept in storage.

Decoding refuses oversized images from their header, before Pillow allocates the pixels, so a
small file that claims to be 20000×20000 cannot take a worker's memory.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import posixpath
import uuid
import warnings
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageOps

from generation import media, safe_http
from generation.engine.request import input_images


class InputImageError(ValueError):
    """An input image that cannot be used; str() is the 400 message for the user."""


def load_image(
    value: str,
    *,
    is_base64: bool,
    field: str,
    policy: safe_http.FetchPolicy | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """The RGB image a request field names, by http(s) URL or as base64 (a data: URL too)."""
    value = (value or "").strip()
    if not value:
        raise InputImageError(f"{field} is empty.")
    if is_base64 or value[:5].lower() == "data:":
        data = _decode_base64(value, field)
    else:
        try:
            data = safe_http.get(value, policy=policy or safe_http.policy_from_settings()).body
        except (safe_http.UnsafeURL, safe_http.FetchFailed) as exc:
            raise InputImageError(f"{field}: {exc}") from None
    limit = max_pixels if max_pixels is not None else settings.PICTOR_INPUT_MAX_PIXELS
    return _decode_image(data, field, limit)


def store_image(image: Image.Image, organization_id: int, name: str) -> str:
    """Save the image as PNG in default storage and return its storage name."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = f"inputs/{organization_id}/{uuid.uuid4().hex}/{name}.png"
    return default_storage.save(path, ContentFile(buffer.getvalue()))


def is_own_input(name: object, organization_id: int) -> bool:
    """Whether a job's input names a file store_image kept for this organization (not a URL,
    not another folder): one the job's deletion removes."""
    return (
        isinstance(name, str) and name.startswith(f"inputs/{organization_id}/") and ".." not in name
    )


def copy_inputs(params: dict[str, Any], organization_id: int) -> tuple[dict[str, Any], list[str]]:
    """`params` naming fresh copies of their stored input images, and the copies' names.

    A job owns the input files it names (deleting its outputs deletes them), so a job made from
    another one's params gets its own. Raises FileNotFoundError when one is no longer kept.
    """
    copied = copy.deepcopy(params)
    folder = f"inputs/{organization_id}/{uuid.uuid4().hex}"
    made: list[str] = []
    try:
        for key, name in input_images(params).items():
            if not default_storage.exists(name):
                raise FileNotFoundError(name)
            if not is_own_input(name, organization_id):
                continue  # not the job's own file: its outputs' deletion leaves it alone
            with default_storage.open(name, "rb") as stored:
                data = stored.read()
            made.append(
                default_storage.save(f"{folder}/{posixpath.basename(name)}", ContentFile(data))
            )
            *parents, last = key.split(".")  # "controlnet_units.0.image" names a unit's image
            holder: Any = copied
            for part in parents:
                holder = holder[int(part)] if isinstance(holder, list) else holder[part]
            holder[last] = made[-1]
    except BaseException:
        media.delete_files(made)
        raise
    return copied, made


def open_image(storage_name: str) -> Image.Image:
    """An image stored by store_image, fully loaded, in RGB."""
    with default_storage.open(storage_name, "rb") as stored:
        data = stored.read()
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _decode_base64(value: str, field: str) -> bytes:
    if value[:5].lower() == "data:":
        header, comma, value = value.partition(",")
        if not comma or not header.lower().endswith(";base64"):
            raise InputImageError(f"{field} must be a base64 data URL (data:image/png;base64,...).")
    text = "".join(value.split())
    # Clients often send URL-safe base64 or drop the padding; both are unambiguous.
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputImageError(f"{field} is not valid base64.") from None


def _decode_image(data: bytes, field: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice that; a warning must refuse too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InputImageError(
                        f"{field} is too large: {width}×{height} pixels, at most {max_pixels}."
                    )
                image.load()
                return ImageOps.exif_transpose(image).convert("RGB")
    except InputImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputImageError(f"{field} is too large: at most {max_pixels} pixels.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        # Pillow reports a corrupt file with any of these, depending on the format.
        raise InputImageError(f"{field} is not a readable image.") from None
