"""The ControlNets after the first of a request: their images fetched and stored at submit.

A wire format puts them in `fields["controlnet_units"]` as dicts (model, type, scale, start,
end, and optionally image and mask: text to fetch or decode, or a decoded image; `field`, the
client's name for the unit in a 400, and image_field / mask_field for its images). `store`
turns them into GenerationRequest's ControlNetUnit tuples whose images are storage names, as
the worker reads them.
"""

from __future__ import annotations

from typing import Any, Protocol

from rest_framework.exceptions import ValidationError

from generation.engine import control
from generation.engine.request import ControlNetUnit


class Inputs(Protocol):
    """Where a request's input images are decoded and stored (submission.Inputs)."""

    def load(self, field: str, value: Any) -> Any: ...

    def store(self, image: Any, name: str) -> str: ...


def default_type(controlnet_type: str, model_id: str) -> str:
    """A unit's type, or "canny" for a canny model sent without one (as ModelsLab infers it)."""
    if not controlnet_type and "canny" in model_id.lower():
        return "canny"
    return controlnet_type


def store(
    units: list[dict[str, Any]],
    images: Inputs,
    *,
    ready: str,
    computes: bool,
) -> tuple[ControlNetUnit, ...]:
    """The units with their own images stored; the others share the request's images.

    A unit without an image computes its map from the request's init image when `computes`
    (auto_hint with an init image) and its type has a preprocessor; else it takes `ready`, the
    storage name of the request's control image, as its map.
    """
    found = []
    for index, unit in enumerate(units):
        field = unit.get("field") or f"controlnet_units[{index}]"
        kind = default_type(unit.get("type") or "", unit["model"])
        stored = {"image": "", "mask": ""}
        for part in ("image", "mask"):
            value = unit.get(part)
            if value is not None and value != "":
                picture = images.load(unit.get(f"{part}_field") or f"{field}.{part}", value)
                stored[part] = images.store(picture, "control_image")
        if not stored["image"] and not (computes and kind in control.COMPUTED_TYPES):
            if not ready:
                raise ValidationError({field: ["This ControlNet needs a control image."]})
            stored["image"] = ready
        found.append(
            ControlNetUnit(
                model=unit["model"],
                type=kind,
                image=stored["image"],
                mask=stored["mask"],
                scale=float(unit.get("scale", 1.0)),
                start=float(unit.get("start", 0.0)),
                end=float(unit.get("end", 1.0)),
            )
        )
    return tuple(found)
