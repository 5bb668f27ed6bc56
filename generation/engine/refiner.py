"""The SDXL refiner: the base denoises up to refiner_switch_at, a refiner model does the rest.

This is diffusers' "ensemble of expert denoisers": the base pipeline stops at `denoising_end`
and hands its still-noisy latents to the refiner's img2img pipeline, which resumes at
`denoising_start` on the same schedule, so together they run the request's steps once.

The refiner uses the base's VAE (the job's VAE override, if any) and second text encoder when
they have the same shapes as its own (stabilityai's refiner ships the very same ones): its
images then decode exactly as the base's would. The web tier imports `refiner_error` only;
torch is loaded inside the functions that run a job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from generation.engine.loader import original_scheduler_config
from generation.engine.schedulers import build_scheduler

if TYPE_CHECKING:
    from collections.abc import Callable

    from generation.engine.cache import PipelineCache
    from generation.engine.request import GenerationRequest, ModelRef


class _Job(Protocol):
    """What a refiner reads of the job it finishes (runner._Job)."""

    req: GenerationRequest
    family: str
    cache: PipelineCache
    seeds: list[int]

    def addon(self, model_id: str) -> ModelRef: ...

    def generators(self) -> list[Any]: ...

    def callback(self, offset: int = 0, later: int = 0) -> Callable[..., dict] | None: ...


# The request kinds a refiner can finish: the base must stop mid-schedule on pure noise.
KINDS = ("text2img",)
# The checkpoint family whose latents a refiner takes, and a refiner's own registered family.
BASE_FAMILY = "sdxl"
FAMILY = "refiner"


def refiner_error(kind: str, hires_scale: int = 1) -> str | None:
    """Why a job of this kind cannot use a refiner, or None when it can (no model checks)."""
    if kind not in KINDS:
        return f"A refiner finishes {', '.join(KINDS)} jobs only, not {kind}."
    if hires_scale > 1:
        return "A refiner cannot be combined with the hires fix; send one or the other."
    return None


def refiner_steps(scheduler: Any, steps: int, switch_at: float) -> int:
    """The steps the refiner runs when `steps` are split at switch_at, as diffusers splits them."""
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(steps)
    trained = fresh.config.num_train_timesteps
    cutoff = int(round(trained - switch_at * trained))
    count = int((fresh.timesteps < cutoff).sum().item())
    if count == 0:
        return 0
    # diffusers' own rule: a second-order sampler must not stop between its two evaluations.
    if getattr(fresh, "order", 1) == 2 and count % 2 == 0:
        count += 1
    return count


def _shapes(module: Any) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def _fits(mine: Any, theirs: Any) -> bool:
    """Whether a module of the base can stand in for the refiner's own: same class and shapes."""
    if mine is None or theirs is None or type(mine) is not type(theirs):
        return False
    return _shapes(mine) == _shapes(theirs)


def shared_components(own: Any, base: Any, vae: Any) -> dict[str, Any]:
    """The base's modules the refiner `own` can use instead of its own (vae: the job's VAE)."""
    shared: dict[str, Any] = {}
    if _fits(own.vae, vae):
        shared["vae"] = vae
    if _fits(own.text_encoder_2, base.text_encoder_2):
        shared.update(text_encoder_2=base.text_encoder_2, tokenizer_2=base.tokenizer_2)
    return shared


class Refining:
    """One job's refiner pass: checked and loaded before the base runs, then run on its latents.

    Building one stops the base at the switch (`denoising_end` in the base's call); `steps` are
    the refiner's own, for progress over both passes.
    """

    def __init__(self, job: _Job, pipe: Any, call: dict[str, Any]) -> None:
        req = job.req
        error = refiner_error(req.kind, req.hires_scale)
        if error:
            raise ValueError(error)
        if job.family != BASE_FAMILY:
            raise ValueError(f"A refiner finishes SDXL jobs only, not {job.family} ones")
        ref = job.addon(req.refiner)
        if ref.family != FAMILY:
            raise ValueError(f"{ref.model_id} is a {ref.family} model, not a refiner")
        self.steps = refiner_steps(pipe.scheduler, req.steps, req.refiner_switch_at)
        if self.steps == 0:
            raise ValueError(
                f"At {req.steps} steps a refiner_switch_at of {req.refiner_switch_at:g} leaves "
                "the refiner no step; lower it or use more steps."
            )
        self.job = job
        self.call = call
        # Loaded now, so a missing or broken refiner fails the job before the base runs.
        self.own = job.cache.get(ref)
        call["denoising_end"] = req.refiner_switch_at

    def run(self, base: Any, first: Any, latents: Any, components: dict) -> list[Any]:
        """Denoise the base's latents from the switch on; the finished images.

        `first` is the base pass's pipeline (its step count offsets the progress).
        """
        import torch  # lazy: heavy, not loaded at Django start-up

        job, req, own = self.job, self.job.req, self.own
        vae = components.get("vae", base.vae)
        parts = {**own.components, **shared_components(own, base, vae)}
        pipe = type(own)(
            **parts,
            requires_aesthetics_score=own.config.requires_aesthetics_score,
            force_zeros_for_empty_prompt=own.config.force_zeros_for_empty_prompt,
            add_watermarker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        # The base's schedule, rebuilt, so the refiner resumes at exactly the base's cut.
        pipe.scheduler = build_scheduler(
            original_scheduler_config(base),
            req.scheduler,
            req.use_karras_sigmas,
            req.algorithm_type,
        )
        # The refiner has only the second text encoder, which diffusers feeds `prompt`: give it
        # what the base's second encoder read. One prompt per latent (they hold the batch).
        batch = len(job.seeds)
        prompt = req.prompt_2 or self.call["prompt"]
        negative = req.negative_prompt_2 or req.negative_prompt
        with torch.inference_mode():
            output = pipe(
                prompt=[prompt] * batch,
                negative_prompt=[negative] * batch,
                image=latents,
                num_inference_steps=req.steps,
                denoising_start=req.refiner_switch_at,
                guidance_scale=req.guidance_scale,
                num_images_per_prompt=1,
                clip_skip=self.call.get("clip_skip"),
                # One generator per image again: a sampler that adds noise draws each its own.
                generator=job.generators(),
                callback_on_step_end=job.callback(offset=first.num_timesteps),
                output_type="pil",
            )
        return list(output.images)
