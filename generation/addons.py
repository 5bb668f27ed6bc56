"""Add-on models a request names (LoRA, embeddings, VAE, ControlNet, upscaler): lookups and fit.

Every wire format resolves names through here before a job is queued, so an unknown name or a
LoRA for another architecture is a 4xx naming it, never a failed job.
"""

from __future__ import annotations

from collections.abc import Iterable

from accounts.models import Organization
from generation.models import AIModel

Family = AIModel.Family


class AddonError(ValueError):
    """A named add-on that cannot be used; `field` is the request field to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def resolve(
    organization: Organization,
    checkpoint: AIModel | None,
    field: str,
    names: Iterable[str],
    family: str,
) -> list[AIModel]:
    """The models named, in order; each must be visible, of `family`, and fit the checkpoint."""
    names = list(names)
    if not names:
        return []
    found = {
        m.model_id: m
        for m in AIModel.objects.visible_to(organization).filter(model_id__in=set(names))
    }
    label = Family(family).label
    missing = [name for name in names if name not in found]
    if missing:
        raise AddonError(field, f"{label} model not found: {', '.join(missing)}.")
    wrong = [name for name in names if found[name].family != family]
    if wrong:
        raise AddonError(
            field,
            "; ".join(
                f"{name} is a {found[name].get_family_display()} model, not a {label}"
                for name in wrong
            )
            + ".",
        )
    if checkpoint is not None:
        misfit = [name for name in names if found[name].base != checkpoint.base]
        if misfit:
            raise AddonError(
                field,
                f"{', '.join(misfit)} does not fit {checkpoint.model_id} "
                f"({found[misfit[0]].get_base_display()} vs {checkpoint.get_base_display()}).",
            )
    return [found[name] for name in names]


def default_upscaler(organization: Organization) -> AIModel | None:
    """The super-resolution model used when a request names none."""
    return (
        AIModel.objects.visible_to(organization)
        .filter(family=Family.UPSCALER)
        .order_by("model_id")
        .first()
    )
