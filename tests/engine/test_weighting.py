"""A1111 prompt weighting, BREAK and long prompts: the parser, the embeddings and the pixels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from generation.engine import addons as addon_rules
from generation.engine.cache import PipelineCache
from generation.engine.request import ModelRef
from generation.engine.runner import generate
from generation.engine.weighting import embedded_call, parse, problem
from tests.engine.base_request import BASE
from tests.engine.pixels import pixels

# The demo tokenizer is byte-level: one token per character, so 80 characters pass 75 tokens.
LONG = "a lighthouse at dusk, " + "calm sea and grey rocks under a wide sky, " * 2
TAIL = " with a bright red moon"


def weights(text: str) -> list:
    return [None if p is None else (p[0], round(p[1], 4)) for p in parse(text)]


# The examples of A1111's parse_prompt_attention docstring, and a few more.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.573),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641),
                (".", 1.1),
            ],
        ),
        ("a (b:1.5) c", [("a ", 1.0), ("b", 1.5), (" c", 1.0)]),
        ("((x))", [("x", 1.21)]),
        ("[y]", [("y", 0.9091)]),
        ("[[y]]", [("y", 0.8264)]),
        ("(a [b] c:2)", [("a ", 2.0), ("b", 1.8182), (" c", 2.0)]),
        ("a BREAK b", [("a", 1.0), None, ("b", 1.0)]),
        ("(a BREAK b:1.5)", [("a", 1.5), None, ("b", 1.5)]),
        ("a:b (c:d)", [("a:b ", 1.0), ("c:d", 1.1)]),
        ("x:1.5) y", [("x:1.5) y", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_it_parses_like_a1111(text: str, expected: list) -> None:
    assert weights(text) == expected


def test_it_refuses_a_weight_that_is_no_number_or_too_large() -> None:
    assert problem("(a:1.5)") is None
    assert "not a number" in (problem("(a:1.2.3)") or "")
    assert "between" in (problem("(a:11)") or "")
    assert "between" in (problem("(" * 30 + "a") or "")


def ref(models_dir: Path, model_id: str) -> ModelRef:
    family = "sdxl" if "sdxl" in model_id else "sd15"
    return ModelRef(model_id, str(models_dir / model_id), family, family)


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache(max_models=2, max_bytes=10**10)


@pytest.fixture(params=["demo-sd15", "demo-sdxl"])
def model(request, models_dir: Path) -> ModelRef:
    return ref(models_dir, request.param)


@pytest.fixture
def draw(model: ModelRef, cache: PipelineCache):
    def run_request(**changes):
        return generate(replace(BASE, model_id=model.model_id, **changes), model, cache=cache)

    return run_request


def image(draw, **changes) -> np.ndarray:
    return pixels(draw(**changes).images[0])


@pytest.mark.parametrize("clip_skip", [None, 2])
@pytest.mark.parametrize("negative", ["", "blurry, dark"])
def test_unweighted_embeddings_equal_diffusers_own(
    model: ModelRef, cache: PipelineCache, clip_skip: int | None, negative: str
) -> None:
    import torch

    pipe = cache.get(model)
    call = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": negative or None,
        "clip_skip": clip_skip,
    }
    # Brackets around an unweighted word force the embedding path; weight 1 changes nothing.
    ours = embedded_call(pipe, {**call, "prompt": "a (lighthouse:1.0) at dusk"})
    with torch.inference_mode():
        theirs = pipe.encode_prompt(
            prompt=call["prompt"],
            negative_prompt=call["negative_prompt"],
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            clip_skip=clip_skip,
        )
    names = ["prompt_embeds", "negative_prompt_embeds"]
    if model.family == "sdxl":
        names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    for name, expected in zip(names, theirs, strict=False):
        assert torch.equal(ours[name], expected), name


def test_weights_scale_a_token_then_restore_the_mean(models_dir: Path, cache) -> None:
    import torch

    pipe = cache.get(ref(models_dir, "demo-sdxl"))
    call = {"prompt": "a b", "negative_prompt": None, "clip_skip": None}
    with torch.inference_mode():
        plain = embedded_call(pipe, {**call, "prompt": "a (b:1.0)"})["prompt_embeds"]
        heavy = embedded_call(pipe, {**call, "prompt": "a (b:1.5)"})["prompt_embeds"]

    # Token 2 ("b", after BOS and "a") is 1.5 times the others, relative to the plain run.
    ratio = heavy / plain
    assert torch.allclose(ratio[0, 2], 1.5 * ratio[0, 1], rtol=1e-4)
    assert torch.allclose(heavy.mean(), plain.mean(), rtol=1e-4)


def test_the_negative_is_padded_to_the_prompt_s_chunks(model: ModelRef, cache) -> None:
    import torch

    pipe = cache.get(model)
    with torch.inference_mode():
        out = embedded_call(pipe, {"prompt": LONG, "negative_prompt": "dark", "clip_skip": None})

    assert out["prompt_embeds"].shape[1] == out["negative_prompt_embeds"].shape[1] == 2 * 77
    assert "prompt" not in out and "negative_prompt" not in out
    assert torch.isfinite(out["prompt_embeds"]).all()


def test_a_plain_short_prompt_stays_a_string(model: ModelRef, cache) -> None:
    pipe = cache.get(model)
    call = {"prompt": "a lighthouse, at dusk: calm", "negative_prompt": "dark", "clip_skip": 2}

    assert embedded_call(pipe, call) is call


def test_embeddings_and_lora_text_weights_act_on_weighted_prompts(models_dir, cache) -> None:
    import torch

    pipe = cache.get(ref(models_dir, "demo-sd15"))
    lora = ModelRef("demo-lora-a", str(models_dir / "demo-lora-a"), "lora")
    embedding = ModelRef("demo-embedding", str(models_dir / "demo-embedding"), "embedding")
    call = {"prompt": "a (lighthouse:1.3) demo-embedding", "negative_prompt": None}

    def embeds(**addons) -> torch.Tensor:
        with addon_rules.applied(pipe, **addons), torch.inference_mode():
            return embedded_call(pipe, {**call, "clip_skip": None})["prompt_embeds"]

    plain = embeds()
    assert not torch.equal(plain, embeds(loras=[(lora, 1.0)]))
    assert not torch.equal(plain, embeds(embeddings=[embedding]))
    assert torch.equal(plain, embeds())


def test_a_weight_of_one_gives_the_plain_pixels(draw) -> None:
    plain = image(draw)

    assert np.array_equal(plain, image(draw, prompt="a (lighthouse:1.0) at dusk"))
    assert np.array_equal(plain, image(draw, prompt="a lighthouse at dusk BREAK"))


def test_a_raised_weight_changes_the_pixels_and_leaves_no_trace(draw) -> None:
    plain = image(draw)

    assert mean_abs_diff_arrays(plain, image(draw, prompt="a (lighthouse:1.6) at dusk")) > 1
    assert mean_abs_diff_arrays(plain, image(draw, prompt="a ((lighthouse)) at dusk")) > 0.5
    assert np.array_equal(plain, image(draw))


def test_words_after_token_75_change_the_image(draw) -> None:
    long = image(draw, prompt=LONG)

    assert mean_abs_diff_arrays(long, image(draw, prompt=LONG + TAIL)) > 0.5


def test_break_starts_a_new_chunk(draw) -> None:
    plain = image(draw, prompt="a lighthouse, a red moon")

    assert mean_abs_diff_arrays(plain, image(draw, prompt="a lighthouse BREAK a red moon")) > 0.5


def test_the_negative_prompt_follows_the_same_rules(draw) -> None:
    plain = image(draw, negative_prompt="blurry")

    assert np.array_equal(plain, image(draw, negative_prompt="(blurry:1.0)"))
    assert mean_abs_diff_arrays(plain, image(draw, negative_prompt="(blurry:1.8)")) > 0.5
    long = image(draw, negative_prompt=LONG)
    assert mean_abs_diff_arrays(long, image(draw, negative_prompt=LONG + TAIL)) > 0.5


def test_a_long_prompt_works_with_hires_and_samples(draw) -> None:
    result = draw(prompt=LONG + TAIL, hires_scale=2, samples=2)

    assert [i.size for i in result.images] == [(128, 128)] * 2


def test_clip_skip_2_acts_on_sdxl_only(models_dir: Path, cache: PipelineCache) -> None:
    xl = ref(models_dir, "demo-sdxl")
    request = replace(BASE, model_id=xl.model_id)
    plain = pixels(generate(request, xl, cache=cache).images[0])

    # A1111 numbering on SDXL: 1 is the default penultimate layer, 2 one layer further up.
    same = generate(replace(request, clip_skip_2=1), xl, cache=cache).images[0]
    assert np.array_equal(plain, pixels(same))
    skipped = generate(replace(request, clip_skip_2=3), xl, cache=cache).images[0]
    assert mean_abs_diff_arrays(plain, pixels(skipped)) > 0.5
    assert np.array_equal(plain, pixels(generate(request, xl, cache=cache).images[0]))
    with pytest.raises(ValueError, match="clip_skip_2 9"):
        generate(replace(request, clip_skip_2=9), xl, cache=cache)
    sd15 = ref(models_dir, "demo-sd15")
    with pytest.raises(ValueError, match="SDXL"):
        generate(replace(BASE, clip_skip_2=2), sd15, cache=cache)


def mean_abs_diff_arrays(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())
