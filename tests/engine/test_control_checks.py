"""ControlNet requests the worker could not run as asked are refused by the request's check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import diffusers
import pytest

from generation.engine.request import (
    ControlNetUnit,
    control_window_problem,
    denoising_timesteps,
)
from generation.engine.schedulers import SCHEDULERS, usable_scheduler_error
from tests.engine.base_request import BASE

CONTROLNET = replace(
    BASE,
    kind="controlnet",
    controlnet_model="demo-controlnet-canny",
    controlnet_type="canny",
    init_image="init",
)


def test_an_inpaint_controlnet_without_a_mask_is_refused_naming_mask_image() -> None:
    alone = replace(
        CONTROLNET, controlnet_model="demo-controlnet-inpaint", controlnet_type="inpaint"
    )
    assert "mask_image" in alone.problems()
    assert not replace(alone, mask_image="mask").problems()
    # A canny model asked to run as inpaint, and an inpaint unit after a canny one.
    assert "mask_image" in replace(CONTROLNET, controlnet_type="inpaint").problems()
    unit = ControlNetUnit(model="demo-controlnet-inpaint", type="inpaint")
    both = replace(CONTROLNET, controlnet_units=(unit,))
    assert "mask_image" in both.problems()
    assert not replace(both, mask_image="mask").problems()
    assert not replace(both, controlnet_units=(replace(unit, mask="unit-mask"),)).problems()
    # The worker refuses it too, before loading anything.
    from generation.engine.runner import validate

    with pytest.raises(ValueError, match="mask_image"):
        validate(both)


def test_a_guidance_window_that_holds_no_step_is_refused() -> None:
    # diffusers keeps the ControlNet at step i of 21 only when i/21 >= 0.95 and (i+1)/21 <= 0.96.
    req = replace(CONTROLNET, steps=21, control_guidance_start=0.95, control_guidance_end=0.96)
    problems = req.problems()
    assert list(problems) == ["control_guidance_end"]
    assert "raise the end to at least 1" in problems["control_guidance_end"]
    assert not replace(req, control_guidance_end=1.0).problems()
    # The suggested end is the first that keeps a step.
    assert not replace(req, control_guidance_start=0.5, control_guidance_end=0.572).problems()
    assert replace(req, control_guidance_start=0.5, control_guidance_end=0.571).problems()
    unit = ControlNetUnit(model="demo-controlnet-tile", type="tile", start=0.95, end=0.96)
    assert "control_guidance_end" in replace(req, controlnet_units=(unit,)).problems()


def test_the_window_is_checked_on_the_timesteps_the_job_runs() -> None:
    # 6 steps of Euler are 6 timesteps, of Heun 11: (0.45, 0.6) holds step 5 of 11 only.
    req = replace(CONTROLNET, control_guidance_start=0.45, control_guidance_end=0.6)
    assert "control_guidance_end" in req.problems()
    assert not replace(req, scheduler="HeunDiscreteScheduler").problems()
    # ControlNet img2img runs the last int(steps × strength) steps: 3 of 6 here.
    late = replace(req, control_guidance_start=0.5, control_guidance_end=0.8)
    assert not late.problems()
    img2img = replace(late, kind="controlnet-img2img", strength=0.5)
    assert "control_guidance_end" in img2img.problems()
    assert control_window_problem(0.5, 0.8, 3) is not None


@pytest.mark.parametrize(
    "name", [name for name in SCHEDULERS if usable_scheduler_error(name) is None]
)
@pytest.mark.parametrize("strength", [None, 0.5, 0.8])
def test_the_timesteps_are_diffusers_own(models_dir: Path, name: str, strength: float | None):
    config = json.loads(
        (models_dir / "demo-sd15" / "scheduler" / "scheduler_config.json").read_text()
    )
    scheduler = getattr(diffusers, name).from_config(config)
    for steps in (1, 2, 6, 21):
        scheduler.set_timesteps(steps)
        timesteps = scheduler.timesteps
        if strength is not None:
            # diffusers' ControlNet img2img and inpaint pipelines' get_timesteps.
            t_start = max(steps - min(int(steps * strength), steps), 0)
            timesteps = timesteps[t_start * scheduler.order :]
        assert denoising_timesteps(name, steps, strength) == len(timesteps), steps
