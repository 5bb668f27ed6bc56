"""runner.generate_batch: one call for several requests, every image as its lone run makes it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from generation.engine.batch import BatchItem, batch_key
from generation.engine.runner import generate, generate_batch
from tests.engine.base_request import BASE

LONG = ", ".join(["a (tall:1.2) lighthouse on a rocky cliff at dusk"] * 10)  # > 75 tokens


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image) for image in result.images]


def same_as_alone(requests, demo_path, warm_cache, **kw):
    alone = [generate(req, demo_path, cache=warm_cache) for req in requests]
    batched = generate_batch(
        [BatchItem(req, **kw) for req in requests], demo_path, cache=warm_cache
    )
    for one, other in zip(alone, batched, strict=True):
        assert not isinstance(other, BaseException), other
        assert other.seeds == one.seeds
        assert all(np.array_equal(a, b) for a, b in zip(pixels(one), pixels(other), strict=True))


def test_it_matches_lone_runs_with_an_ancestral_sampler(demo_path, warm_cache):
    sampler = replace(BASE, scheduler="EulerAncestralDiscreteScheduler")
    same_as_alone(
        [
            replace(sampler, prompt="a cat", seed=1),
            replace(sampler, prompt="a dog", seed=2, samples=2),
            replace(sampler, prompt="a [fox]", negative_prompt="snow", seed=3),
        ],
        demo_path,
        warm_cache,
    )


def test_prompts_of_other_lengths_run_as_calls_of_their_own(demo_path, warm_cache):
    same_as_alone(
        [
            replace(BASE, prompt="a cat", seed=1),
            replace(BASE, prompt=LONG, seed=2),
            replace(BASE, prompt="a dog", seed=3),
        ],
        demo_path,
        warm_cache,
    )


def test_a_request_that_leaves_the_call_does_not_stop_the_others(demo_path, warm_cache):
    class Canceled(Exception):
        pass

    steps = []

    def leave_at_three(done, total):
        steps.append(done)
        if done == 3:
            raise Canceled()

    requests = [replace(BASE, seed=1), replace(BASE, seed=2, prompt="a boat")]
    items = [BatchItem(requests[0], progress=leave_at_three), BatchItem(requests[1])]
    left, stayed = generate_batch(items, demo_path, cache=warm_cache)
    assert isinstance(left, Canceled)
    assert steps == [1, 2, 3]
    alone = generate(requests[1], demo_path, cache=warm_cache)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(alone), pixels(stayed), strict=True))


def test_the_call_stops_when_every_request_left(demo_path, warm_cache):
    calls = []

    def leave(done, total):
        calls.append(done)
        raise RuntimeError("canceled")

    items = [BatchItem(replace(BASE, seed=s), progress=leave) for s in (1, 2)]
    results = generate_batch(items, demo_path, cache=warm_cache)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert calls == [1, 1]  # each left at the first step, and the call ended there


def test_the_batch_key_ignores_only_what_each_image_carries():
    key = batch_key(BASE.to_params())
    assert batch_key(replace(BASE, prompt="x", seed=9, samples=3).to_params()) == key
    assert batch_key(replace(BASE, output_format="jpeg").to_params()) == key
    for changed in (
        {"width": 128},
        {"steps": 7},
        {"guidance_scale": 3.0},
        {"scheduler": "DDIMScheduler"},
        {"clip_skip": 2},
        {"loras": (("demo-lora-a", 0.5),)},
        {"safety_checker": True},
        {"pag_scale": 3.0},
        {"tiling": True},
    ):
        assert batch_key(replace(BASE, **changed).to_params()) != key, changed


def test_a_shared_call_that_fails_runs_each_request_alone(demo_path, warm_cache, monkeypatch):
    from diffusers import StableDiffusionPipeline

    requests = [replace(BASE, seed=1), replace(BASE, seed=2, prompt="a boat", samples=2)]
    alone = [generate(req, demo_path, cache=warm_cache) for req in requests]
    real = StableDiffusionPipeline.__call__
    refused = []

    def no_room_for_two(self, *args, **kwargs):
        embeds = kwargs.get("prompt_embeds")
        if embeds is not None and embeds.shape[0] > 1:  # a card too small for the batch
            refused.append(embeds.shape[0])
            raise RuntimeError("out of memory")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", no_room_for_two)
    results = generate_batch([BatchItem(req) for req in requests], demo_path, cache=warm_cache)
    assert refused == [3]  # the shared call of both requests' three images was tried first
    for one, other in zip(alone, results, strict=True):
        assert not isinstance(other, BaseException), other
        assert all(np.array_equal(a, b) for a, b in zip(pixels(one), pixels(other), strict=True))
