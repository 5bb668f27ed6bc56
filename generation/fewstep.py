"""Few-step (distilled) checkpoints: LCM, Turbo and Lightning models take 1 to 8 steps.

Such a model is trained to finish in a handful of steps, so the plan's steps list (21, 31, …)
would only waste time on it; it takes its own range instead, FEW_STEPS, and is priced by the
steps it really runs (service.job_cost). A format reads steps before it knows the checkpoint,
so its serializer may leave a StepsRule in the fields under STEPS_RULE; build_request applies
it with the model at hand (`apply`). A format that leaves none gets the plain rule: its own
range already checked, a few-step model bound to FEW_STEPS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import ValidationError

from billing.models import Plan
from generation.engine.request import DEFAULT_SCHEDULER, FEW_STEPS
from generation.models import AIModel

# The fields' key of a format's StepsRule (popped before the fields become a request).
STEPS_RULE = "steps_rule"
# Steps a few-step model runs when the client sent none (the format's default is for others).
DEFAULT_FEW_STEPS = 4
# An LCM checkpoint is sampled with LCM's own scheduler unless the client chose another.
LCM_SCHEDULER = "LCMScheduler"


@dataclass(frozen=True)
class StepsRule:
    """What the format knew of the steps when it read them, for `apply` to finish the check."""

    # The client's name for the steps (named by a 400).
    field: str = "steps"
    # False: the steps are outside the plan's list and only a few-step model may take them.
    listed: bool = True
    # Whether the client chose the steps (else a few-step model runs DEFAULT_FEW_STEPS).
    sent: bool = True
    # Whether the client chose the scheduler (else an LCM model runs LCMScheduler).
    scheduler_sent: bool = True


def is_few_steps(steps: int) -> bool:
    """Whether a step count is in the range a few-step model takes."""
    low, high = FEW_STEPS
    return low <= steps <= high


def plan_steps_message(field: str, plan: Plan) -> str:
    """The 400 for steps outside the plan's list (the ModelsLab format's binding rule)."""
    allowed = ", ".join(str(s) for s in plan.steps_list)
    return f"The {field} must be one of {allowed} on the {plan.name} plan."


def apply(model: AIModel, fields: dict[str, Any], plan: Plan) -> None:
    """Check the fields' steps against the checkpoint (a 400 naming the steps); pop the rule.

    On a few-step model: the default steps become DEFAULT_FEW_STEPS, an LCM model's default
    scheduler becomes LCMScheduler (Karras sigmas without a scheduler are then refused), and
    steps outside FEW_STEPS are refused.
    """
    rule = fields.pop(STEPS_RULE, None) or StepsRule()
    if not model.distillation:
        if not rule.listed:
            raise ValidationError({rule.field: [plan_steps_message(rule.field, plan)]})
        return
    if not rule.sent:
        fields["steps"] = DEFAULT_FEW_STEPS
    if not is_few_steps(fields["steps"]):
        low, high = FEW_STEPS
        raise ValidationError(
            {
                rule.field: [
                    f"{model.model_id} is a few-step ({model.get_distillation_display()}) "
                    f"model: the {rule.field} must be between {low} and {high}."
                ]
            }
        )
    if model.distillation != AIModel.Distillation.LCM or rule.scheduler_sent:
        return
    if fields.get("scheduler", DEFAULT_SCHEDULER) != DEFAULT_SCHEDULER:
        return
    # LCMScheduler has no Karras sigmas: running another scheduler to honour them would not be
    # the LCM scheduler the docs promise, so the client names the scheduler it wants.
    if fields.get("use_karras_sigmas"):
        raise ValidationError(
            {
                "use_karras_sigmas": [
                    f"{model.model_id} is an LCM model: without a scheduler it runs "
                    f"{LCM_SCHEDULER}, which takes no Karras sigmas; leave use_karras_sigmas "
                    "out (or no), or name a scheduler to use Karras sigmas with."
                ]
            }
        )
    if fields.get("algorithm_type", "none") == "none":
        fields["scheduler"] = LCM_SCHEDULER
