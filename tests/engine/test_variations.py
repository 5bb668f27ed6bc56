"""PAG, panoramas, variation seeds and tiling on the demo model: each acts, and leaves no trace."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from generation.engine.request import ModelRef
from generation.engine.runner import generate
from generation.engine.variations import panorama_views, problems, slerp
from tests.engine.base_request import BASE
from tests.engine.pixels import mean_abs_diff, pixels
from tests.images import noise_image


class Aborted(Exception):
    pass


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def test_pag_changes_pixels_and_leaves_no_trace(run) -> None:
    plain = run().images[0]

    guided = run(pag_scale=3.0).images[0]

    assert mean_abs_diff(plain, guided) > 1
    assert same(run().images[0], plain)


def test_pag_guides_img2img_too(demo_path, warm_cache) -> None:
    request = replace(BASE, kind="img2img", init_image="init.png", strength=0.8)
    images = {"init_image": noise_image(64, 64, seed=3)}

    def run_img2img(**changes):
        changed = replace(request, **changes)
        return generate(changed, demo_path, cache=warm_cache, images=images).images[0]

    assert mean_abs_diff(run_img2img(), run_img2img(pag_scale=3.0)) > 1


def test_an_aborted_pag_job_gives_the_attention_back(demo_path, warm_cache) -> None:
    plain = generate(BASE, demo_path, cache=warm_cache).images[0]
    unet = warm_cache.get(ModelRef(BASE.model_id, demo_path)).unet
    before = {name: type(proc) for name, proc in unet.attn_processors.items()}

    def abort(done: int, total: int) -> None:
        if done == 2:
            raise Aborted

    with pytest.raises(Aborted):
        generate(replace(BASE, pag_scale=3.0), demo_path, cache=warm_cache, progress=abort)

    assert {name: type(proc) for name, proc in unet.attn_processors.items()} == before
    assert same(generate(BASE, demo_path, cache=warm_cache).images[0], plain)


def test_a_panorama_is_wide_differs_and_leaves_no_trace(run) -> None:
    size = {"width": 96, "height": 64}
    plain = run(**size).images[0]

    panorama = run(panorama=True, **size).images[0]

    assert panorama.size == (96, 64)
    assert mean_abs_diff(plain, panorama) > 1
    assert same(run(**size).images[0], plain)


@pytest.mark.parametrize(
    ("width", "height", "views"),
    [
        # diffusers' own defaults for its 512 × 2048 example.
        (2048, 512, (64, 8)),
        (96, 64, (8, 1)),
        (640, 512, (64, 8)),
        # 9 latent columns left over: a stride of 3 ends the last window at the edge.
        (584, 512, (64, 3)),
    ],
)
def test_panorama_windows_fit_the_image(width: int, height: int, views: tuple[int, int]) -> None:
    window, stride = panorama_views(width, height)

    assert (window, stride) == views
    assert (width // 8 - window) % stride == 0


def test_variation_strength_zero_is_the_plain_seed_and_one_the_subseed(run) -> None:
    plain = run().images[0]
    of_subseed = run(seed=77).images[0]

    assert same(run(subseed=77, subseed_strength=0.0).images[0], plain)
    assert same(run(subseed=77, subseed_strength=1.0).images[0], of_subseed)
    halfway = run(subseed=77, subseed_strength=0.5).images[0]
    assert mean_abs_diff(halfway, plain) > 1
    assert mean_abs_diff(halfway, of_subseed) > 1
    assert same(run().images[0], plain)


def test_a_slight_variation_stays_close_with_an_ancestral_sampler(run) -> None:
    # Euler a adds noise from the seed's generator at every step: the variation's initial
    # noise is drawn from that generator too, so the step noise stays the seed's.
    ancestral = {"scheduler": "EulerAncestralDiscreteScheduler"}
    plain = run(**ancestral).images[0]

    slight = run(subseed=77, subseed_strength=0.05, **ancestral).images[0]

    assert 0 < mean_abs_diff(plain, slight) < 0.2 * mean_abs_diff(plain, run(seed=77).images[0])


def test_each_image_of_a_batch_uses_its_own_subseed(run) -> None:
    batch = run(samples=2, subseed=77, subseed_strength=1.0).images

    for i, image in enumerate(batch):
        alone = run(seed=77 + i).images[0]
        # Batched kernels round differently from single ones: a rare pixel may be off by 1.
        assert np.abs(pixels(image) - pixels(alone)).max() <= 1


def test_slerp_keeps_the_ends_and_the_norm() -> None:
    import torch

    low = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    high = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))

    assert torch.equal(slerp(0.0, low, high), low)
    assert torch.equal(slerp(1.0, low, high), high)
    # Unlike a linear mix, the halfway noise keeps about the norm of Gaussian noise.
    middle = slerp(0.5, low, high)
    assert abs(middle.norm() / low.norm() - 1) < 0.1


def wrap_ratio(image) -> float:
    """The step across the wrapped edges, relative to the image's own neighbouring-pixel steps."""
    a = pixels(image).astype(float)
    across = (np.abs(a[:, 0] - a[:, -1]).mean() + np.abs(a[0] - a[-1]).mean()) / 2
    inside = (np.abs(np.diff(a, axis=1)).mean() + np.abs(np.diff(a, axis=0)).mean()) / 2
    return float(across / inside)


def test_tiling_makes_the_edges_meet_and_leaves_no_trace(run) -> None:
    size = {"width": 128, "height": 128}
    plain = run(**size).images[0]

    tiled = run(tiling=True, **size).images[0]

    # Measured on the demo model: about 0.8-1.2 with tiling (the right column continues into
    # the left one like any column into the next), 1.4-2.0 without.
    assert wrap_ratio(tiled) < 1.25
    assert wrap_ratio(plain) > 1.5
    a, b = pixels(tiled).astype(float), pixels(plain).astype(float)
    assert np.abs(a[:, 0] - a[:, -1]).mean() < 0.6 * np.abs(b[:, 0] - b[:, -1]).mean()
    assert same(run(**size).images[0], plain)


def test_tiling_restores_every_padding_mode_after_a_failed_job(demo_path, warm_cache) -> None:
    pipe = warm_cache.get(ModelRef(BASE.model_id, demo_path))

    def abort(done: int, total: int) -> None:
        raise Aborted

    with pytest.raises(Aborted):
        generate(replace(BASE, tiling=True), demo_path, cache=warm_cache, progress=abort)

    modes = {
        conv.padding_mode
        for m in (pipe.unet, pipe.vae)
        for conv in m.modules()
        if hasattr(conv, "padding_mode")
    }
    assert modes == {"zeros"}


@pytest.mark.parametrize(
    ("family", "changes", "field"),
    [
        ("sdxl", {"panorama": True, "width": 128}, "panorama"),
        ("sd15", {"panorama": True, "width": 64}, "panorama"),
        ("sd15", {"panorama": True, "width": 128, "kind": "img2img"}, "panorama"),
        ("sd15", {"panorama": True, "width": 128, "hires_scale": 2}, "panorama"),
        ("sd15", {"panorama": True, "width": 128, "pag_scale": 3.0}, "panorama"),
        ("sd15", {"panorama": True, "width": 128, "tiling": True}, "tiling"),
        ("sd15", {"subseed_strength": 0.5, "kind": "img2img"}, "subseed_strength"),
        ("sd15", {"subseed_strength": 0.5, "kind": "inpaint"}, "subseed_strength"),
        ("upscaler", {"pag_scale": 3.0, "kind": "upscale"}, "pag_scale"),
        ("sd15", {"pag_scale": 3.0, "kind": "controlnet", "guess_mode": True}, "guess_mode"),
        ("sdxl", {"pag_scale": 3.0, "kind": "controlnet", "guess_mode": True}, "guess_mode"),
    ],
)
def test_it_names_what_it_cannot_run(family: str, changes: dict, field: str) -> None:
    found = problems(replace(BASE, **changes), family)

    assert list(found) == [field]


def test_plain_requests_and_supported_options_have_no_problem() -> None:
    assert problems(BASE, "sd15") == {}
    wide = replace(BASE, width=128, panorama=True, subseed_strength=0.5, subseed=3)
    assert problems(wide, "sd2") == {}
    for kind in ("text2img", "img2img", "inpaint", "controlnet"):
        assert problems(replace(BASE, kind=kind, pag_scale=3.0, tiling=True), "sdxl") == {}
