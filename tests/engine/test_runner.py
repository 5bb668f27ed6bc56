"""runner.generate on the demo model: seeds, batches, sizes and options act on the pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from generation.engine.cache import PipelineCache
from generation.engine.runner import diffusers_clip_skip, generate
from tests.engine.base_request import BASE
from tests.engine.pixels import mean_abs_diff, pixels


def test_it_repeats_pixels_for_the_same_seed(run) -> None:
    first, second = run().images[0], run().images[0]

    assert np.array_equal(pixels(first), pixels(second))


def test_it_changes_pixels_with_the_seed(run) -> None:
    assert mean_abs_diff(run(seed=1).images[0], run(seed=2).images[0]) > 10


def test_it_makes_samples_from_consecutive_seeds_in_one_batch(run) -> None:
    batch = run(samples=4, seed=500)

    assert batch.seeds == [500, 501, 502, 503]
    assert len(batch.images) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert mean_abs_diff(batch.images[i], batch.images[j]) > 10
    for i, image in enumerate(batch.images):
        alone = run(seed=500 + i).images[0]
        # Batched kernels round differently from single ones, so a rare pixel may be off by 1.
        difference = np.abs(pixels(image) - pixels(alone))
        assert difference.max() <= 1
        assert difference.mean() < 0.01


@pytest.mark.parametrize(("width", "height"), [(64, 128), (128, 64)])
def test_it_honours_width_and_height(run, width: int, height: int) -> None:
    result = run(width=width, height=height, samples=2)

    assert [image.size for image in result.images] == [(width, height)] * 2


def test_it_changes_pixels_with_karras_sigmas(run) -> None:
    plain = run(scheduler="DPMSolverMultistepScheduler").images[0]
    karras = run(scheduler="DPMSolverMultistepScheduler", use_karras_sigmas=True).images[0]

    assert mean_abs_diff(plain, karras) > 1


def test_it_changes_pixels_with_clip_skip(run) -> None:
    plain = run(clip_skip=None).images[0]

    assert mean_abs_diff(plain, run(clip_skip=2).images[0]) > 1
    # A1111 counts the last layer as 1, so clip_skip 1 is no skip at all.
    assert np.array_equal(pixels(plain), pixels(run(clip_skip=1).images[0]))


def test_it_translates_a1111_clip_skip_for_diffusers() -> None:
    assert [diffusers_clip_skip(v) for v in (None, 0, 1, 2, 3)] == [None, None, None, 1, 2]


def test_it_rejects_a_clip_skip_deeper_than_the_text_encoder(run) -> None:
    with pytest.raises(ValueError, match="clip_skip 9"):
        run(clip_skip=9)


def test_it_changes_pixels_with_the_prompt_and_negative_prompt(run) -> None:
    plain = run().images[0]

    assert mean_abs_diff(plain, run(prompt="a red bicycle").images[0]) > 1
    assert mean_abs_diff(plain, run(negative_prompt="blurry").images[0]) > 1


def test_it_reports_progress_after_each_step(demo_path, warm_cache) -> None:
    calls: list[tuple[int, int]] = []

    generate(
        replace(BASE, steps=5),
        demo_path,
        cache=warm_cache,
        progress=lambda done, total: calls.append((done, total)),
    )

    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_it_counts_every_model_call_of_a_second_order_sampler(demo_path, warm_cache) -> None:
    calls: list[tuple[int, int]] = []

    generate(
        replace(BASE, steps=5, scheduler="HeunDiscreteScheduler"),
        demo_path,
        cache=warm_cache,
        progress=lambda done, total: calls.append((done, total)),
    )

    # Heun evaluates the model twice per step but once on the last: 2 * 5 - 1 calls.
    assert calls == [(n, 9) for n in range(1, 10)]


def test_it_starts_each_request_from_the_models_own_scheduler_config(run) -> None:
    before = run(scheduler="DPMSolverMultistepScheduler").images[0]
    run(
        scheduler="DPMSolverMultistepScheduler",
        use_karras_sigmas=True,
        algorithm_type="dpmsolver+++",
    )

    after = run(scheduler="DPMSolverMultistepScheduler").images[0]

    # Built from the previous request's scheduler, "none" would inherit the SDE solver.
    assert np.array_equal(pixels(before), pixels(after))


def test_it_rejects_an_unusable_scheduler_before_loading_anything(demo_path) -> None:
    cache = PipelineCache(max_models=1)

    with pytest.raises(ValueError, match="KarrasVeScheduler"):
        generate(replace(BASE, scheduler="KarrasVeScheduler"), demo_path, cache=cache)

    assert cache.loads == 0


def test_it_times_the_inference(run) -> None:
    assert run().inference_seconds > 0
