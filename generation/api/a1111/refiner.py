"""webui's refiner fields: `refiner_checkpoint` ("None": off), `refiner_switch_at`.

A refiner is named the way webui names checkpoints (title, file name, model name or hash, see
checkpoints.py); generation/refiners.py checks that it can finish the job, so every 400 names
refiner_checkpoint (or refiner_switch_at for its bounds).
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError

from accounts.models import Organization
from generation import refiners
from generation.api import base
from generation.api.a1111.checkpoints import model_names
from generation.api.a1111.tables import CHECKSUM_SUFFIX
from generation.engine.request import FLOAT_RANGES
from generation.models import AIModel

FIELD = "refiner_checkpoint"
SWITCH_FIELD = "refiner_switch_at"
# What webui sends for "no refiner" (its UI's dropdown entry), besides null.
OFF = ("", "None")
# webui's slider default.
DEFAULT_SWITCH_AT = 0.8


def model_id(organization: Organization, name: str) -> str:
    """The id of the visible model `name` calls, as webui matches checkpoint names; else name."""
    wanted = name.strip()
    bare = CHECKSUM_SUFFIX.sub("", wanted)
    visible = list(AIModel.objects.visible_to(organization).order_by("model_id"))
    for candidate in (wanted, bare):
        match = next((m for m in visible if candidate in model_names(m)), None)
        if match is not None:
            return match.model_id
    return bare


def refiner_fields(
    organization: Organization,
    checkpoint: AIModel,
    values: dict[str, Any],
    kind: str,
    hires_scale: int = 1,
) -> dict[str, Any]:
    """GenerationRequest's refiner fields for the body's values (none when the refiner is off)."""
    name = values.get(FIELD)
    if name is None or name.strip() in OFF:
        return {}
    if not base.is_storable(name):
        raise ValidationError({FIELD: [f"The name {base.UNSTORABLE_TEXT}."]})
    switch_at = values.get(SWITCH_FIELD, DEFAULT_SWITCH_AT)
    low, high = FLOAT_RANGES["refiner_switch_at"]
    if not low <= switch_at <= high:
        raise ValidationError(
            {SWITCH_FIELD: [f"With a refiner, refiner_switch_at must be between {low} and {high}."]}
        )
    refiner = refiners.resolve(
        organization, checkpoint, model_id(organization, name), FIELD, kind, hires_scale
    )
    return {"refiner": refiner, "refiner_switch_at": switch_at}
