"""The scheduler table: every usable entry draws an image, every other one is refused clearly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import diffusers
import numpy as np
import pytest

from generation.engine.loader import original_scheduler_config
from generation.engine.request import ModelRef
from generation.engine.schedulers import (
    A1111_SAMPLERS,
    SCHEDULER_NAMES,
    SCHEDULERS,
    build_scheduler,
    usable_scheduler_error,
)
from tests.engine.base_request import BASE
from tests.engine.pixels import mean_abs_diff, pixels

USABLE = [name for name in SCHEDULER_NAMES if SCHEDULERS[name].usable]
UNUSABLE = [name for name in SCHEDULER_NAMES if not SCHEDULERS[name].usable]


def _needs_missing_module(name: str) -> bool:
    module = SCHEDULERS[name].needs_module
    return module is not None and importlib.util.find_spec(module) is None


def test_it_lists_the_eighteen_modelslab_schedulers() -> None:
    assert len(SCHEDULER_NAMES) == 18
    assert UNUSABLE == [
        "DDIMInverseScheduler",
        "IPNDMScheduler",
        "KarrasVeScheduler",
        "ScoreSdeVeScheduler",
    ]


@pytest.mark.parametrize("name", USABLE)
def test_it_generates_with_every_usable_scheduler(run, name: str) -> None:
    if _needs_missing_module(name):
        # Without the module diffusers exposes only a placeholder class, so it must be refused.
        assert "scipy" in usable_scheduler_error(name)
        return

    image = run(scheduler=name).images[0]

    assert image.size == (64, 64)
    assert pixels(image).std() > 10


@pytest.mark.parametrize("name", UNUSABLE)
def test_it_refuses_every_unusable_scheduler(name: str) -> None:
    message = usable_scheduler_error(name, False, "none")

    assert message and name in message
    with pytest.raises(ValueError):
        build_scheduler({}, name, False, "none")


@pytest.mark.parametrize("name", ["KarrasVeScheduler", "ScoreSdeVeScheduler"])
def test_it_confirms_variance_exploding_schedulers_cannot_step(
    demo_path, warm_cache, name: str
) -> None:
    pipe = warm_cache.get(ModelRef(BASE.model_id, demo_path))
    original = pipe.scheduler
    pipe.scheduler = getattr(diffusers, name).from_config(original_scheduler_config(pipe))
    try:
        with pytest.raises((TypeError, AttributeError)):
            pipe("x", width=64, height=64, num_inference_steps=2)
    finally:
        pipe.scheduler = original


def test_it_confirms_ipndm_and_ddim_inverse_do_not_denoise() -> None:
    ipndm = diffusers.IPNDMScheduler()
    ipndm.set_timesteps(10)
    inverse = diffusers.DDIMInverseScheduler()
    inverse.set_timesteps(10)

    assert float(ipndm.timesteps.max()) <= 1.0  # an SD UNet is trained on 0-999
    assert list(inverse.timesteps) == sorted(inverse.timesteps)  # noise is added, not removed


def test_it_refuses_unknown_names_and_algorithm_types() -> None:
    assert "Unknown scheduler" in usable_scheduler_error("FooScheduler")
    assert "algorithm_type" in usable_scheduler_error(
        "DPMSolverMultistepScheduler", algorithm_type="dpmsolver"
    )


@pytest.mark.parametrize("name", USABLE)
def test_it_allows_karras_sigmas_only_where_supported(name: str) -> None:
    if _needs_missing_module(name):
        pytest.skip(f"{name} needs {SCHEDULERS[name].needs_module}")
    message = usable_scheduler_error(name, True, "none")

    if SCHEDULERS[name].karras:
        assert message is None
        assert build_scheduler({}, name, True, "none").config.use_karras_sigmas is True
    else:
        assert "Karras" in message


@pytest.mark.parametrize("name", USABLE)
def test_it_allows_dpmsolver_plus_plus_plus_only_on_dpm_solvers(name: str) -> None:
    if _needs_missing_module(name):
        pytest.skip(f"{name} needs {SCHEDULERS[name].needs_module}")
    message = usable_scheduler_error(name, False, "dpmsolver+++")

    if name.startswith("DPMSolver"):
        assert message is None
        scheduler = build_scheduler({}, name, False, "dpmsolver+++")
        assert scheduler.config.algorithm_type == "sde-dpmsolver++"
    else:
        assert "dpmsolver+++" in message


@pytest.mark.parametrize("sampler", list(A1111_SAMPLERS))
def test_it_generates_with_every_a1111_sampler(run, sampler: str) -> None:
    choice = A1111_SAMPLERS[sampler]
    if _needs_missing_module(choice.scheduler):
        assert "scipy" in usable_scheduler_error(choice.scheduler)
        return
    assert (
        usable_scheduler_error(choice.scheduler, choice.use_karras_sigmas, choice.algorithm_type)
        is None
    )

    image = run(
        scheduler=choice.scheduler,
        use_karras_sigmas=choice.use_karras_sigmas,
        algorithm_type=choice.algorithm_type,
    ).images[0]

    assert pixels(image).std() > 10


@pytest.mark.parametrize("sampler", [name for name in A1111_SAMPLERS if name.endswith(" Karras")])
def test_it_changes_pixels_for_each_a1111_karras_variant(run, sampler: str) -> None:
    karras, plain = A1111_SAMPLERS[sampler], A1111_SAMPLERS[sampler.removesuffix(" Karras")]
    if _needs_missing_module(karras.scheduler):
        pytest.skip(f"{karras.scheduler} needs {SCHEDULERS[karras.scheduler].needs_module}")

    images = [
        run(
            scheduler=choice.scheduler,
            use_karras_sigmas=choice.use_karras_sigmas,
            algorithm_type=choice.algorithm_type,
        ).images[0]
        for choice in (plain, karras)
    ]

    # Sampling is deterministic, so any difference is the sigma schedule's doing; LMS at six
    # steps moves the least (about 0.9 levels on average).
    assert mean_abs_diff(*images) > 0.3


def test_it_makes_sde_samplers_reproducible_per_seed(run) -> None:
    sde = {"scheduler": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver+++"}

    first, second = run(**sde).images[0], run(**sde).images[0]

    assert np.array_equal(pixels(first), pixels(second))


def test_it_keeps_torch_out_of_the_web_tier_imports() -> None:
    code = (
        "import sys\n"
        "import generation.engine.request, generation.engine.schedulers\n"
        "heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )

    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
