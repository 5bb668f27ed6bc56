"""PNG output: A1111 infotext in a "parameters" text chunk that Pillow reads back."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from generation.engine.pngmeta import a1111_parameters, encode_png, sampler_name
from generation.engine.request import GenerationRequest
from tests.engine.pixels import pixels

REQUEST = GenerationRequest(
    prompt="a lighthouse at dusk",
    negative_prompt="blurry",
    model_id="demo-sd15",
    steps=21,
    guidance_scale=7.5,
    scheduler="DPMSolverMultistepScheduler",
    use_karras_sigmas=True,
)


def test_it_writes_a1111_infotext() -> None:
    assert a1111_parameters(REQUEST, 123) == (
        "a lighthouse at dusk\n"
        "Negative prompt: blurry\n"
        "Steps: 21, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 123, Size: 512x512, "
        "Model: demo-sd15"
    )


def test_it_omits_an_empty_negative_prompt_and_notes_clip_skip() -> None:
    request = GenerationRequest(prompt="cat", model_id="m", guidance_scale=7, clip_skip=2)

    assert a1111_parameters(request, 5) == (
        "cat\nSteps: 21, Sampler: UniPC, CFG scale: 7, Seed: 5, Size: 512x512, Model: m, "
        "Clip skip: 2"
    )


def test_it_names_samplers_the_a1111_way() -> None:
    def name(**changes) -> str:
        return sampler_name(GenerationRequest(prompt="", model_id="m", **changes))

    assert name(scheduler="EulerAncestralDiscreteScheduler") == "Euler a"
    assert name(scheduler="DPMSolverMultistepScheduler", algorithm_type="dpmsolver+++") == (
        "DPM++ 2M SDE"
    )
    assert name(scheduler="DEISMultistepScheduler", use_karras_sigmas=True) == (
        "DEISMultistepScheduler Karras"
    )


def test_it_embeds_parameters_that_pillow_reads_back(run) -> None:
    image = run().images[0]
    parameters = a1111_parameters(REQUEST, 123)

    decoded = Image.open(io.BytesIO(encode_png(image, parameters)))

    assert decoded.format == "PNG"
    assert decoded.text["parameters"] == parameters
    assert np.array_equal(pixels(decoded), pixels(image))


def test_it_keeps_non_latin_prompts_intact() -> None:
    parameters = "東京の夜景, ночной город"

    decoded = Image.open(io.BytesIO(encode_png(Image.new("RGB", (8, 8)), parameters)))

    assert decoded.text["parameters"] == parameters
