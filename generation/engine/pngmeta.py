"""PNG encoding with AUTOMATIC1111-style generation parameters embedded."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from generation.engine.request import GenerationRequest
from generation.engine.schedulers import A1111_SAMPLERS, ALGORITHM_TYPES, SchedulerChoice

PARAMETERS_KEY = "parameters"


def encode_png(image: Image.Image, parameters: str) -> bytes:
    """The image as PNG bytes carrying `parameters` in a "parameters" text chunk."""
    info = PngInfo()
    # Pillow writes tEXt when the text is Latin-1 and falls back to UTF-8 iTXt otherwise, as
    # A1111 does, so prompts in any script survive the round trip.
    info.add_text(PARAMETERS_KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


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
    lines.append(", ".join(fields))
    return "\n".join(lines)
