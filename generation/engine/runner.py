"""Run one text-to-image request on a cached pipeline: the engine's entry point for workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from generation.engine import safety
from generation.engine.cache import PipelineCache, default_cache
from generation.engine.loader import original_scheduler_config
from generation.engine.request import SAFETY_MODES, GenerationRequest, GenerationResult
from generation.engine.schedulers import build_scheduler, usable_scheduler_error

Progress = Callable[[int, int], None]

# A request swaps the scheduler of a pipeline shared by the whole process, so two threads must
# not run at once; a worker saturates its CPU or GPU with one generation anyway.
_generation_lock = threading.Lock()


def diffusers_clip_skip(clip_skip: int | None) -> int | None:
    """diffusers' clip_skip for an A1111/ModelsLab one (None: use the last layer)."""
    # A1111 numbers the layer used (1 = last, 2 = penultimate); diffusers counts the layers
    # skipped (1 = penultimate). So A1111's N is diffusers' N - 1, and 0 or 1 mean no skip.
    if clip_skip is None or clip_skip <= 1:
        return None
    return clip_skip - 1


def validate(req: GenerationRequest) -> None:
    """Raise ValueError when the engine cannot honour the request as asked."""
    error = usable_scheduler_error(req.scheduler, req.use_karras_sigmas, req.algorithm_type)
    if error is not None:
        raise ValueError(error)
    if req.safety_checker and req.safety_checker_type not in SAFETY_MODES:
        raise ValueError(
            f"Unknown safety_checker_type {req.safety_checker_type!r}; "
            f"use one of: {', '.join(SAFETY_MODES)}."
        )
    if req.samples < 1:
        raise ValueError("samples must be at least 1")


def generate(
    req: GenerationRequest,
    model_path: str,
    *,
    cache: PipelineCache | None = None,
    progress: Progress | None = None,
    nsfw_threshold: float = 0.5,
) -> GenerationResult:
    """Generate req.samples images with seeds req.seed, req.seed + 1, ... in one batched call."""
    # progress(done, total) runs after each denoising step and may raise to abort the job.
    # inference_seconds covers the diffusion call and the safety check, not a cold model load.
    import torch

    validate(req)
    pipe = (cache or default_cache).get(req.model_id, model_path)
    skip = diffusers_clip_skip(req.clip_skip)
    if skip is not None and skip >= pipe.text_encoder.config.num_hidden_layers:
        raise ValueError(
            f"clip_skip {req.clip_skip} is too large for a text encoder with "
            f"{pipe.text_encoder.config.num_hidden_layers} layers"
        )

    callback = None
    if progress is not None:

        def callback(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            # num_timesteps, not req.steps: second-order samplers (Heun, DPM2) run more.
            progress(step + 1, pipeline.num_timesteps)
            return kwargs

    with _generation_lock:
        started = time.perf_counter()
        # Always from the config the model was loaded with, so no request inherits the last one's.
        pipe.scheduler = build_scheduler(
            original_scheduler_config(pipe),
            req.scheduler,
            req.use_karras_sigmas,
            req.algorithm_type,
        )
        device = pipe.device
        # One generator per image: diffusers draws image i's noise from generators[i] alone, so
        # a batch reproduces the single-image results of seeds seed, seed+1, ...
        seeds = [req.seed + i for i in range(req.samples)]
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        with torch.inference_mode():
            output = pipe(
                prompt=req.prompt,
                negative_prompt=req.negative_prompt or None,
                width=req.width,
                height=req.height,
                num_inference_steps=req.steps,
                guidance_scale=req.guidance_scale,
                num_images_per_prompt=req.samples,
                generator=generators,
                clip_skip=skip,
                callback_on_step_end=callback,
                output_type="pil",
            )
        images = list(output.images)

    nsfw = [False] * len(images)
    if req.safety_checker:
        nsfw = safety.check(images, nsfw_threshold)
        images = [
            safety.censor(image, req.safety_checker_type) if flagged else image
            for image, flagged in zip(images, nsfw, strict=True)
        ]
    return GenerationResult(
        images=images,
        seeds=seeds,
        nsfw=nsfw,
        inference_seconds=time.perf_counter() - started,
    )
