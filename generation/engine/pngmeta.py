"""Image encoding (PNG, JPEG, WebP) with AUTOMATIC1111-style generation parameters embedded.

PNG carries them in a "parameters" text chunk; JPEG and WebP in the EXIF UserComment, with the
"UNICODE" prefix and UTF-16BE text, as A1111 writes them with piexif, so A1111's PNG Info tab
and other readers of its files find them in all three.
"""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from generation.engine.request import DEFAULT_OUTPUT_QUALITY, OUTPUT_FORMATS, GenerationRequest
from generation.engine.schedulers import A1111_SAMPLERS, ALGORITHM_TYPES, SchedulerChoice

PARAMETERS_KEY = "parameters"
# EXIF: the Exif IFD pointer, its UserComment tag, and the character code of a UTF-16 comment.
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
UNICODE_PREFIX = b"UNICODE\x00"
# The content type of each output format (also what S3 and the media view derive from the name).
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def encode_png(image: Image.Image, parameters: str) -> bytes:
    """The image as PNG bytes carrying `parameters` in a "parameters" text chunk."""
    info = PngInfo()
    # Pillow writes tEXt when the text is Latin-1 and falls back to UTF-8 iTXt otherwise, as
    # A1111 does, so prompts in any script survive the round trip.
    info.add_text(PARAMETERS_KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def encode_image(
    image: Image.Image,
    parameters: str,
    output_format: str = "png",
    quality: int = DEFAULT_OUTPUT_QUALITY,
) -> bytes:
    """The image in `output_format` (png, jpeg, webp) carrying `parameters`; png ignores quality."""
    if output_format == "png":
        return encode_png(image, parameters)
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Unknown output format {output_format!r}.")
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = UNICODE_PREFIX + parameters.encode("utf-16-be")
    buffer = io.BytesIO()
    # JPEG has no alpha channel; the pipelines' outputs are RGB already, this covers the rest.
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    rgb.save(buffer, format=output_format.upper(), quality=quality, exif=exif)
    return buffer.getvalue()


def read_parameters(image: Image.Image) -> str | None:
    """The A1111 `parameters` text an image carries (PNG chunk or EXIF UserComment), if any."""
    text = image.info.get(PARAMETERS_KEY)
    if isinstance(text, str):
        return text
    try:
        comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except (OSError, ValueError, SyntaxError):
        return None  # a damaged EXIF block carries nothing readable
    if not isinstance(comment, bytes) or len(comment) < len(UNICODE_PREFIX):
        return None
    prefix, body = comment[: len(UNICODE_PREFIX)], comment[len(UNICODE_PREFIX) :]
    # piexif's character codes: UNICODE is UTF-16BE, ASCII and undefined are plain bytes.
    encoding = "utf-16-be" if prefix == UNICODE_PREFIX else "utf-8"
    return body.decode(encoding, errors="replace").rstrip("\x00")


def sampler_name(request: GenerationRequest) -> str:
    """The A1111 sampler name for the request's scheduler options, else the diffusers class."""
    wanted = SchedulerChoice(
        request.scheduler,
        request.use_karras_sigmas,
        request.algorithm_type,
    )
    for name, choice in A1111_SAMPLERS.items():
        if _same_sampler(choice, wanted):
            return name
    suffix = " Karras" if request.use_karras_sigmas else ""
    return f"{request.scheduler}{suffix}"


def _same_sampler(a: SchedulerChoice, b: SchedulerChoice) -> bool:
    """Equal once algorithm spellings are normalised ("none" matches the default solver)."""
    if (a.scheduler, a.use_karras_sigmas) != (b.scheduler, b.use_karras_sigmas):
        return False
    algorithm_a = ALGORITHM_TYPES.get(a.algorithm_type) or "dpmsolver++"
    algorithm_b = ALGORITHM_TYPES.get(b.algorithm_type) or "dpmsolver++"
    return algorithm_a == algorithm_b


def a1111_parameters(request: GenerationRequest, seed: int) -> str:
    """The A1111 infotext for one image generated with `seed`."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields = [
        f"Steps: {request.steps}",
        f"Sampler: {sampler_name(request)}",
        f"CFG scale: {request.guidance_scale:g}",
        f"Seed: {seed}",
        f"Size: {request.width}x{request.height}",
        f"Model: {request.model_id}",
    ]
    # A1111 writes "Clip skip" only when layers are actually skipped (its 1 means none).
    if request.clip_skip and request.clip_skip > 1:
        fields.append(f"Clip skip: {request.clip_skip}")
    if request.subseed_strength > 0:
        fields.append(f"Variation seed: {request.subseed + seed - request.seed}")
        fields.append(f"Variation seed strength: {request.subseed_strength:g}")
    if request.tiling:
        fields.append("Tiling: True")
    lines.append(", ".join(fields))
    return "\n".join(lines)
