"""The safety checker: flags follow the threshold and flagged images are replaced per mode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation.engine import safety
from generation.engine.request import SAFETY_MODES
from tests.engine.pixels import mean_abs_diff, pixels


@pytest.mark.parametrize("mode", SAFETY_MODES)
def test_it_flags_every_image_at_threshold_zero_and_replaces_it(run, mode: str) -> None:
    unfiltered = run(samples=2, safety_checker=False).images

    result = run(samples=2, safety_checker=True, safety_checker_type=mode, nsfw_threshold=0)

    assert result.nsfw == [True, True]
    for original, censored in zip(unfiltered, result.images, strict=True):
        assert censored.size == original.size
        assert mean_abs_diff(original, censored) > 10


def test_it_flags_nothing_above_threshold_one(run) -> None:
    unfiltered = run(samples=2, safety_checker=False).images

    result = run(samples=2, safety_checker=True, nsfw_threshold=1.01)

    assert result.nsfw == [False, False]
    for original, kept in zip(unfiltered, result.images, strict=True):
        assert np.array_equal(pixels(original), pixels(kept))


def test_it_flags_nothing_when_the_checker_is_off(run) -> None:
    result = run(samples=2, safety_checker=False, nsfw_threshold=0)

    assert result.nsfw == [False, False]


def test_it_scores_demo_output_as_safe_at_the_default_threshold(run) -> None:
    result = run(samples=2, safety_checker=True)

    assert result.nsfw == [False, False]


def test_it_writes_sensitive_content_on_a_plain_card() -> None:
    noise = Image.effect_noise((256, 128), 80).convert("RGB")

    card = pixels(safety.censor(noise, "sensitive_content_text"))

    background = (card == card[0, 0]).all(axis=-1)
    assert 0.8 < background.mean() < 1.0  # mostly plain, with text drawn on it
    assert not background[64, :].all()  # the text crosses the middle row
    assert background[:10, :].all()  # and leaves the edges plain


def test_it_blacks_out_an_image() -> None:
    noise = Image.effect_noise((64, 64), 80).convert("RGB")

    assert not pixels(safety.censor(noise, "black")).any()


def test_it_blurs_and_pixelates_away_detail() -> None:
    noise = Image.effect_noise((128, 128), 80).convert("RGB")

    for mode in ("blur", "pixelate"):
        censored = pixels(safety.censor(noise, mode))
        # Neighbouring pixels become (nearly) equal: the fine detail is gone.
        assert (
            np.abs(np.diff(censored, axis=1)).mean()
            < 0.2 * np.abs(np.diff(pixels(noise), axis=1)).mean()
        )


def test_it_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="censor mode"):
        safety.censor(Image.new("RGB", (8, 8)), "sparkles")
