"""The scheduler table: which diffusers schedulers can drive Stable Diffusion, with which options.

The web tier imports this module to answer a clear 400, so it must not import torch or diffusers
at module level; only `build_scheduler` does, when a worker asks for an instance.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

# Spellings accepted in `algorithm_type`, mapped to diffusers' value (None keeps the config's).
# "dpmsolver+++" is the wire name for diffusers' SDE variant; the diffusers names are accepted
# too because the A1111 table carries them.
ALGORITHM_TYPES: dict[str, str | None] = {
    "none": None,
    "dpmsolver+++": "sde-dpmsolver++",
    "dpmsolver++": "dpmsolver++",
    "sde-dpmsolver++": "sde-dpmsolver++",
}
WIRE_ALGORITHM_TYPES = ("none", "dpmsolver+++")


@dataclass(frozen=True)
class SchedulerInfo:
    """What Pictor knows about one diffusers scheduler class."""

    name: str
    unusable_reason: str | None = None
    karras: bool = False
    algorithm_types: tuple[str, ...] = ()
    needs_module: str | None = None

    @property
    def usable(self) -> bool:
        """Whether it can drive a Stable Diffusion text-to-image pipeline."""
        return self.unusable_reason is None


_DPM_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")

# Verified against diffusers 0.42 on the demo model (tests/engine/test_schedulers.py runs every
# usable entry); the reasons for the rest come from trying them in StableDiffusionPipeline.
SCHEDULERS: dict[str, SchedulerInfo] = {
    info.name: info
    for info in (
        SchedulerInfo("DDPMScheduler"),
        SchedulerInfo("DDIMScheduler"),
        SchedulerInfo("PNDMScheduler"),
        # diffusers only exposes LMS when scipy is installed (it integrates the LMS coefficients).
        SchedulerInfo("LMSDiscreteScheduler", karras=True, needs_module="scipy"),
        SchedulerInfo("EulerDiscreteScheduler", karras=True),
        SchedulerInfo("EulerAncestralDiscreteScheduler"),
        SchedulerInfo("DPMSolverMultistepScheduler", karras=True, algorithm_types=_DPM_ALGORITHMS),
        SchedulerInfo("HeunDiscreteScheduler", karras=True),
        SchedulerInfo("KDPM2DiscreteScheduler", karras=True),
        SchedulerInfo("DPMSolverSinglestepScheduler", karras=True, algorithm_types=_DPM_ALGORITHMS),
        SchedulerInfo("KDPM2AncestralDiscreteScheduler", karras=True),
        SchedulerInfo("UniPCMultistepScheduler", karras=True),
        SchedulerInfo(
            "DDIMInverseScheduler",
            unusable_reason=(
                "DDIMInverseScheduler runs diffusion backwards (image to noise) to invert an "
                "image; it cannot generate an image from a prompt."
            ),
        ),
        SchedulerInfo("DEISMultistepScheduler", karras=True),
        SchedulerInfo(
            "IPNDMScheduler",
            unusable_reason=(
                "IPNDMScheduler steps through continuous times in [0, 1] (score-SDE models), "
                "while a Stable Diffusion UNet expects timesteps 0-999; it only produces noise."
            ),
        ),
        SchedulerInfo(
            "KarrasVeScheduler",
            unusable_reason=(
                "KarrasVeScheduler has a different step API (it needs a separately perturbed "
                "sample) and cannot drive a Stable Diffusion pipeline."
            ),
        ),
        SchedulerInfo(
            "ScoreSdeVeScheduler",
            unusable_reason=(
                "ScoreSdeVeScheduler is a predictor-corrector sampler for score-SDE models with "
                "no plain step; it cannot drive a Stable Diffusion pipeline."
            ),
        ),
        SchedulerInfo("LCMScheduler"),
    )
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)


@dataclass(frozen=True)
class SchedulerChoice:
    """A scheduler class plus the options that together make one named sampler."""

    scheduler: str
    use_karras_sigmas: bool = False
    algorithm_type: str = "none"


# AUTOMATIC1111's sampler names (docs/architecture.md); any other A1111 name is answered with a 400.
A1111_SAMPLERS: dict[str, SchedulerChoice] = {
    "Euler": SchedulerChoice("EulerDiscreteScheduler"),
    "Euler a": SchedulerChoice("EulerAncestralDiscreteScheduler"),
    "DPM++ 2M": SchedulerChoice("DPMSolverMultistepScheduler", algorithm_type="dpmsolver++"),
    "DPM++ 2M Karras": SchedulerChoice(
        "DPMSolverMultistepScheduler", use_karras_sigmas=True, algorithm_type="dpmsolver++"
    ),
    "DPM++ 2M SDE": SchedulerChoice(
        "DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++"
    ),
    "DPM++ 2M SDE Karras": SchedulerChoice(
        "DPMSolverMultistepScheduler", use_karras_sigmas=True, algorithm_type="sde-dpmsolver++"
    ),
    "DPM2": SchedulerChoice("KDPM2DiscreteScheduler"),
    "DPM2 Karras": SchedulerChoice("KDPM2DiscreteScheduler", use_karras_sigmas=True),
    "DPM2 a": SchedulerChoice("KDPM2AncestralDiscreteScheduler"),
    "DPM2 a Karras": SchedulerChoice("KDPM2AncestralDiscreteScheduler", use_karras_sigmas=True),
    "LMS": SchedulerChoice("LMSDiscreteScheduler"),
    "LMS Karras": SchedulerChoice("LMSDiscreteScheduler", use_karras_sigmas=True),
    "Heun": SchedulerChoice("HeunDiscreteScheduler"),
    "DDIM": SchedulerChoice("DDIMScheduler"),
    "PLMS": SchedulerChoice("PNDMScheduler"),
    "UniPC": SchedulerChoice("UniPCMultistepScheduler"),
    "LCM": SchedulerChoice("LCMScheduler"),
}


def diffusers_algorithm_type(algorithm_type: str) -> str | None:
    """The diffusers `algorithm_type` for an accepted spelling (None: leave the config's)."""
    return ALGORITHM_TYPES[algorithm_type]


def usable_scheduler_error(
    name: str, use_karras_sigmas: bool = False, algorithm_type: str = "none"
) -> str | None:
    """A human message when this scheduler/option combination cannot be honoured, else None."""
    info = SCHEDULERS.get(name)
    if info is None:
        return f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULER_NAMES)}."
    if not info.usable:
        return info.unusable_reason
    if info.needs_module and importlib.util.find_spec(info.needs_module) is None:
        return f"{name} needs the {info.needs_module!r} package, which this server does not have."
    if use_karras_sigmas and not info.karras:
        supported = ", ".join(n for n, i in SCHEDULERS.items() if i.karras)
        return f"{name} does not support Karras sigmas; these do: {supported}."
    if algorithm_type not in ALGORITHM_TYPES:
        return (
            f"Unknown algorithm_type {algorithm_type!r}; "
            f"use one of: {', '.join(WIRE_ALGORITHM_TYPES)}."
        )
    wanted = ALGORITHM_TYPES[algorithm_type]
    if wanted is not None and wanted not in info.algorithm_types:
        supported = ", ".join(n for n, i in SCHEDULERS.items() if wanted in i.algorithm_types)
        return f"algorithm_type {algorithm_type!r} only applies to {supported}, not {name}."
    return None


def build_scheduler(
    pipe_scheduler_config: Any, name: str, use_karras_sigmas: bool, algorithm_type: str
) -> Any:
    """A fresh scheduler of class `name` built from a pipeline's scheduler config."""
    error = usable_scheduler_error(name, use_karras_sigmas, algorithm_type)
    if error is not None:
        raise ValueError(error)
    import diffusers  # lazy: heavy, not loaded at Django start-up

    info = SCHEDULERS[name]
    options: dict[str, Any] = {}
    if info.karras:
        # Always explicit, so a model whose config enables Karras sigmas still honours "off".
        options["use_karras_sigmas"] = use_karras_sigmas
    wanted = ALGORITHM_TYPES[algorithm_type]
    if wanted is not None:
        options["algorithm_type"] = wanted
    cls = getattr(diffusers, name)
    return cls.from_config(pipe_scheduler_config, **options)
