"""The hires fix enlarges the latents by the mode the request names (A1111's hr_upscaler)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from generation.engine.request import HIRES_MODES
from tests.engine.base_request import BASE
from tests.engine.pixels import mean_abs_diff, pixels

HIRES = {"hires_scale": 2, "hires_strength": 0.5}
LATENTS = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def test_each_interpolation_gives_its_own_pixels(run) -> None:
    modes = {
        "nearest": run(**HIRES).images[0],
        "bilinear": run(**HIRES, hires_mode="bilinear").images[0],
        "bicubic": run(**HIRES, hires_mode="bicubic").images[0],
        "bicubic antialiased": run(**HIRES, hires_mode="bicubic", hires_antialias=True).images[0],
    }
    assert {image.size for image in modes.values()} == {(128, 128)}
    names = list(modes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert mean_abs_diff(modes[first], modes[second]) > 1, (first, second)
    # Unnamed, the mode stays nearest: the formats that name none keep their pixels.
    explicit = run(**HIRES, hires_mode="nearest").images[0]
    assert np.array_equal(pixels(explicit), pixels(modes["nearest"]))


def test_an_unknown_mode_or_an_antialias_that_changes_nothing_is_refused() -> None:
    assert "hires_mode" in replace(BASE, **HIRES, hires_mode="area").problems()
    for mode in ("nearest", "nearest-exact", "bilinear"):
        refused = replace(BASE, **HIRES, hires_mode=mode, hires_antialias=True)
        assert "hires_antialias" in refused.problems()
    for mode in HIRES_MODES:
        assert not replace(BASE, **HIRES, hires_mode=mode).problems()
    # Why bilinear's is refused: enlarging by a whole factor, it gives the same pixels.
    bilinear = F.interpolate(LATENTS, scale_factor=2, mode="bilinear")
    antialiased = F.interpolate(LATENTS, scale_factor=2, mode="bilinear", antialias=True)
    assert torch.allclose(bilinear, antialiased, atol=1e-5)
    bicubic = F.interpolate(LATENTS, scale_factor=2, mode="bicubic")
    assert not torch.allclose(
        bicubic, F.interpolate(LATENTS, scale_factor=2, mode="bicubic", antialias=True), atol=0.01
    )
