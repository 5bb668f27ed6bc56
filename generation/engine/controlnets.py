"""A job's ControlNets: one or several (MultiControlNetModel), on text2img, img2img or inpaint.

The request's controlnet_* fields name the first ControlNet and `controlnet_units` the others;
each has its own control image (or a map computed from the init image), scale and guidance
window. The pipeline's own kind decides how the init image and mask are used; this module only
adds the ControlNets and their conditioning to the call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from generation.engine import control
from generation.engine.request import ControlNetUnit, GenerationRequest

# The kind whose pipeline each ControlNet kind extends (its init image and mask handling).
BASE_KINDS = {
    "controlnet": "text2img",
    "controlnet-img2img": "img2img",
    "controlnet-inpaint": "inpaint",
}


def units(req: GenerationRequest) -> list[ControlNetUnit]:
    """Every ControlNet of the request, the controlnet_* fields' one first."""
    first = ControlNetUnit(
        model=req.controlnet_model,
        type=req.controlnet_type,
        image=req.control_image,
        scale=req.controlnet_conditioning_scale,
        start=req.control_guidance_start,
        end=req.control_guidance_end,
    )
    return [first, *req.controlnet_units]


def image_names(index: int) -> tuple[str, str]:
    """The worker's names for the image and mask of unit `index` (0: the controlnet_* one)."""
    if index == 0:
        return "control_image", "mask_image"
    return f"controlnet_units.{index - 1}.image", f"controlnet_units.{index - 1}.mask"


def models(req: GenerationRequest, load: Callable[[str], Any]) -> Any:
    """The pipeline's `controlnet` component: one model, or a list of them (one per unit)."""
    nets = [load(unit.model) for unit in units(req)]
    return nets[0] if len(nets) == 1 else nets


def arguments(
    req: GenerationRequest,
    images: Mapping[str, Any],
    init: Any | None,
    mask: Any | None,
    size: tuple[int, int],
) -> dict[str, Any]:
    """The ControlNet arguments of the pipeline call: conditions, scales, windows, guess mode.

    `init` and `mask` are the job's (for an inpaint job, as prepared at `size`): a unit without
    an image of its own computes its map from `init`, an inpaint unit masks with `mask`.
    """
    found = units(req)
    conditions = []
    for index, unit in enumerate(found):
        image_name, mask_name = image_names(index)
        own = images.get(image_name) if unit.image else None
        if unit.image and own is None:
            raise ValueError(f"The {image_name} of this request was not provided")
        unit_mask = images.get(mask_name) if (index and unit.mask) else None
        made = control.condition(
            unit.type,
            own if own is not None else init,
            ready=own is not None and unit.type != "inpaint",
            mask=unit_mask if unit_mask is not None else mask,
            size=size,
            seed=req.seed,
        )
        conditions.append(_as_input(made))
    several = len(found) > 1
    name = "image" if BASE_KINDS[req.kind] == "text2img" else "control_image"
    return {
        name: conditions if several else conditions[0],
        "controlnet_conditioning_scale": [u.scale for u in found] if several else found[0].scale,
        "control_guidance_start": [u.start for u in found] if several else found[0].start,
        "control_guidance_end": [u.end for u in found] if several else found[0].end,
        "guess_mode": req.guess_mode,
    }


def _as_input(condition: Any) -> Any:
    """A PIL map as it is; the inpaint map (a float array with -1s) as a (1, 3, H, W) tensor."""
    if hasattr(condition, "convert"):
        return condition
    import torch  # lazy: heavy, not loaded at Django start-up

    return torch.from_numpy(condition).permute(2, 0, 1).unsqueeze(0).contiguous()
