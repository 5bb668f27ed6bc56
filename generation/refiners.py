"""Which SDXL refiner a request gets, checked at submit: the one it names, or the default one.

Every wire format that offers a refiner (Hyperbolic's enable_refiner, A1111's
refiner_checkpoint) comes through here, so a refiner that cannot finish the job is a 400 naming
the client's field, never a failed job.
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError

from accounts.models import Organization
from generation import addons
from generation.engine.pipelines import pipeline_family
from generation.engine.refiner import BASE_FAMILY, refiner_error
from generation.models import AIModel


def visible(organization: Organization) -> list[AIModel]:
    """The refiners the organization may use, the default (first by id) first."""
    return list(
        AIModel.objects.visible_to(organization)
        .filter(family=AIModel.Family.REFINER)
        .order_by("model_id")
    )


def resolve(
    organization: Organization,
    checkpoint: AIModel,
    name: str | None,
    field: str,
    kind: str,
    hires_scale: int = 1,
) -> str:
    """The refiner's model id for a job on `checkpoint`; `name` None asks for the default one.

    `field` is the client's name for the refiner field, which every 400 names.
    """
    if pipeline_family(checkpoint.family, checkpoint.base) != BASE_FAMILY:
        raise ValidationError(
            {
                field: [
                    f"A refiner finishes SDXL jobs only; {checkpoint.model_id} is a "
                    f"{checkpoint.get_family_display()} model."
                ]
            }
        )
    error = refiner_error(kind, hires_scale)
    if error:
        raise ValidationError({field: [error]})
    if name is None:
        found = [m for m in visible(organization) if m.base == checkpoint.base]
        if not found:
            raise ValidationError({field: ["No refiner model is available on this server."]})
        return found[0].model_id
    try:
        (model,) = addons.resolve(organization, checkpoint, field, [name], AIModel.Family.REFINER)
    except addons.AddonError as exc:
        raise ValidationError({field: [exc.message]}) from None
    return model.model_id
