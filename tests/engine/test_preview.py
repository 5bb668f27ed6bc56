"""Live previews: the tiny decoder, the linear approximation, and no effect on the result."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine import preview
from generation.engine.cache import PipelineCache
from generation.engine.preview import Previewer, approximate, build_demo_decoder, render
from generation.engine.runner import generate
from tests.engine.base_request import BASE
from tests.engine.pixels import pixels


@pytest.fixture(scope="module")
def decoder_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("preview") / "demo-taesd"
    assert build_demo_decoder(str(path))
    assert not build_demo_decoder(str(path))
    return str(path)


def previews_of(
    demo_path: str, cache: PipelineCache, every: int, decoder: str = "", **changes
) -> tuple[list[Image.Image], Image.Image]:
    """Run BASE with previews every `every` steps; the previews (decoded) and the result."""
    shown: list[bytes] = []
    result = generate(
        replace(BASE, **changes),
        demo_path,
        cache=cache,
        previews=Previewer(shown.append, every, decoder),
    )
    return [Image.open(io.BytesIO(png)) for png in shown], result.images[0]


def test_it_decodes_latents_with_the_tiny_decoder(decoder_path: str) -> None:
    latents = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(3))

    image = render(latents, "sd15", decoder_path, side=128)

    # 8x the latents (128 x 192), then shrunk to fit 128 on its longer side.
    assert image.size == (128, 85)
    assert image.mode == "RGB"
    assert np.asarray(image).std() > 0


def test_it_keeps_small_previews_at_their_size(decoder_path: str) -> None:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))

    assert render(latents, "sd15", decoder_path).size == (64, 64)


def test_it_approximates_latents_without_a_decoder() -> None:
    # A latent made of channel 0 only: its colour is channel 0's row of the factors.
    latents = torch.zeros(1, 4, 8, 8)
    latents[:, 0] = 1.0

    assert render(latents, "sd15").size == (8, 8)
    for base, factors in (("sd15", preview.SD15_FACTORS), ("sdxl", preview.SDXL_FACTORS)):
        expected = [(1 + f) / 2 * 255 for f in factors[0]]
        got = render(latents, base).getpixel((3, 3))
        assert all(abs(c - e) <= 1 for c, e in zip(got, expected, strict=True)), (base, got)


def test_it_has_no_approximation_for_other_latent_shapes() -> None:
    assert approximate(torch.zeros(1, 16, 8, 8), "sd15") is None
    assert render(torch.zeros(1, 16, 8, 8), "sd15") is None


def test_it_previews_every_n_steps_without_changing_the_pixels(
    demo_path: str, warm_cache: PipelineCache, decoder_path: str
) -> None:
    plain = generate(BASE, demo_path, cache=warm_cache).images[0]

    shown, image = previews_of(demo_path, warm_cache, every=2, decoder=decoder_path)

    # Steps 2 and 4 of 6; none at the last step, where the result itself follows.
    assert [p.size for p in shown] == [(64, 64), (64, 64)]
    assert np.array_equal(pixels(image), pixels(plain))
    # Nothing stays behind: the next plain job gives the same pixels again.
    assert np.array_equal(
        pixels(generate(BASE, demo_path, cache=warm_cache).images[0]), pixels(plain)
    )


def test_it_previews_with_the_approximation_by_default(
    demo_path: str, warm_cache: PipelineCache
) -> None:
    plain = generate(BASE, demo_path, cache=warm_cache).images[0]

    shown, image = previews_of(demo_path, warm_cache, every=1)

    # The approximation keeps the latents' size: 64 / 8.
    assert [p.size for p in shown] == [(8, 8)] * 5
    assert np.array_equal(pixels(image), pixels(plain))
    # Later steps show another picture than the first.
    assert not np.array_equal(pixels(shown[0]), pixels(shown[-1]))


def test_it_previews_nothing_when_off(demo_path: str, warm_cache: PipelineCache) -> None:
    shown, _image = previews_of(demo_path, warm_cache, every=0)

    assert shown == []


def test_it_refuses_a_negative_interval() -> None:
    with pytest.raises(ValueError, match="every"):
        Previewer(lambda png: None, -1)


def test_a_broken_decoder_costs_the_preview_not_the_job(
    demo_path: str, warm_cache: PipelineCache, tmp_path: Path
) -> None:
    plain = generate(BASE, demo_path, cache=warm_cache).images[0]

    shown, image = previews_of(demo_path, warm_cache, every=2, decoder=str(tmp_path / "none"))

    assert shown == []
    assert np.array_equal(pixels(image), pixels(plain))
