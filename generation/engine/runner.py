"""Run one request on cached models: the engine's entry point for workers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image

from generation.engine import addons as addon_rules
from generation.engine import (
    batch,
    controlnets,
    inpaint,
    ip_adapter,
    refiner,
    safety,
    variations,
    weighting,
)
from generation.engine.cache import PipelineCache, default_cache
from generation.engine.loader import original_scheduler_config, prepare_call
from generation.engine.pipelines import (
    has_second_prompt,
    kind_error,
    pipeline_family,
)
from generation.engine.preview import Previewer
from generation.engine.prompts import with_tokens
from generation.engine.request import (
    CONTROLNET_KINDS,
    KINDS,
    SAFETY_MODES,
    GenerationRequest,
    GenerationResult,
    ModelRef,
)
from generation.engine.request import MASK_BLUR as MASK_BLUR  # where the A1111 format reads it
from generation.engine.schedulers import build_scheduler, usable_scheduler_error

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)

# A request swaps the scheduler and add-ons of a pipeline shared by the whole process, so two
# threads must not run at once; a worker saturates its CPU or GPU with one generation anyway.
_generation_lock = threading.Lock()
# The noise the x4 upscaler adds to its low-resolution input (its pipeline's default).
UPSCALER_NOISE_LEVEL = 20
UPSCALER_NATIVE_SCALE = 4


def diffusers_clip_skip(clip_skip: int | None) -> int | None:
    """diffusers' clip_skip for an A1111/ModelsLab one (None: use the last layer)."""
    # A1111 numbers the layer used (1 = last, 2 = penultimate); diffusers counts the layers
    # skipped (1 = penultimate). So A1111's N is diffusers' N - 1, and 0 or 1 mean no skip.
    if clip_skip is None or clip_skip <= 1:
        return None
    return clip_skip - 1


def checked_clip_skip(base: Any, req: GenerationRequest) -> int | None:
    """diffusers' clip_skip for the request, refused when the base's text encoder is too short."""
    skip = diffusers_clip_skip(req.clip_skip)
    layers = base.text_encoder.config.num_hidden_layers
    if skip is not None and skip >= layers:
        raise ValueError(
            f"clip_skip {req.clip_skip} is too large for a text encoder with {layers} layers"
        )
    return skip


def fresh_scheduler(base: Any, req: GenerationRequest) -> Any:
    """The request's scheduler, always built from the config the model was loaded with, so no
    request inherits the last one's."""
    return build_scheduler(
        original_scheduler_config(base), req.scheduler, req.use_karras_sigmas, req.algorithm_type
    )


def painting_for(req: GenerationRequest, init: Any, mask: Any) -> inpaint.Inpaint:
    """The inpaint's picture and mask at the request's size, as A1111 prepares them."""
    return inpaint.prepare(
        init,
        mask,
        (req.width, req.height),
        fill=req.inpaint_fill,
        blur=(req.mask_blur_x, req.mask_blur_y),
        only_masked=req.inpaint_full_res,
        padding=req.inpaint_padding,
    )


def refuse_unrunnable(req: GenerationRequest, family: str) -> None:
    """Raise ValueError when a checkpoint of `family` cannot run the request's kind or options."""
    error = kind_error(family, req.kind)
    if error:
        raise ValueError(error)
    refused = variations.problems(req, family)
    if refused:
        raise ValueError(" ".join(refused.values()))


def validate(req: GenerationRequest) -> None:
    """Raise ValueError when the engine cannot honour the request as asked."""
    if req.kind not in KINDS:
        raise ValueError(f"Unknown request kind {req.kind!r}")
    problems = req.problems()
    if problems:
        raise ValueError(" ".join(problems.values()))
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
    needs = {
        "img2img": "init_image",
        "inpaint": "mask_image",
        "upscale": "init_image",
        "controlnet-img2img": "init_image",
        "controlnet-inpaint": "mask_image",
    }
    if req.kind in needs and not getattr(req, needs[req.kind]):
        raise ValueError(f"A {req.kind} request needs {needs[req.kind]}")
    if req.kind in ("inpaint", "controlnet-inpaint") and not req.init_image:
        raise ValueError("An inpaint request needs init_image")
    if req.kind in CONTROLNET_KINDS and not req.controlnet_model:
        raise ValueError("A controlnet request needs controlnet_model")


def generate(
    req: GenerationRequest,
    model: ModelRef | str,
    *,
    addons: Mapping[str, ModelRef] | None = None,
    images: Mapping[str, Any] | None = None,
    cache: PipelineCache | None = None,
    progress: Progress | None = None,
    nsfw_threshold: float = 0.5,
    previews: Previewer | None = None,
) -> GenerationResult:
    """Generate req.samples images with seeds req.seed, req.seed + 1, ... in one batched call.

    `model` is the checkpoint (a bare folder path means an SD 1.x folder); `addons` maps the
    LoRA/embedding/VAE/ControlNet ids the request names to their refs; `images` holds the
    decoded input images by field name (init_image, mask_image, control_image).
    progress(done, total) runs after each denoising step and may raise to abort the job;
    `previews` gets the latents of every few steps for a live preview (not for upscales).
    inference_seconds covers the diffusion call and the safety check, not a cold model load.
    """
    validate(req)
    cache = cache or default_cache
    ref = model if isinstance(model, ModelRef) else ModelRef(req.model_id, model)
    job = _Job(req, ref, addons or {}, images or {}, cache, progress, previews)
    with _generation_lock:
        started = time.perf_counter()
        outputs = job.upscale() if req.kind == "upscale" else job.diffuse()

    nsfw = [False] * len(outputs)
    if req.safety_checker:
        nsfw = safety.check(outputs, nsfw_threshold)
        outputs = [
            safety.censor(image, req.safety_checker_type) if flagged else image
            for image, flagged in zip(outputs, nsfw, strict=True)
        ]
    return GenerationResult(
        images=outputs,
        seeds=job.seeds,
        nsfw=nsfw,
        inference_seconds=time.perf_counter() - started,
    )


class _Job:
    """One request's run: resolves add-ons and inputs, builds the pipeline call, runs it."""

    def __init__(
        self,
        req: GenerationRequest,
        ref: ModelRef,
        addons: Mapping[str, ModelRef],
        images: Mapping[str, Any],
        cache: PipelineCache,
        progress: Progress | None,
        previews: Previewer | None = None,
    ) -> None:
        self.req = req
        self.ref = ref
        self.addons = addons
        self.images = images
        self.cache = cache
        self.progress = progress
        self.previews = previews
        self.seeds = [req.seed + i for i in range(req.samples)]
        self.family = pipeline_family(ref.family, ref.base)

    def addon(self, model_id: str) -> ModelRef:
        try:
            return self.addons[model_id]
        except KeyError:
            raise ValueError(f"Model {model_id!r} is not available on this worker") from None

    def image(self, name: str) -> Any | None:
        value = getattr(self.req, name)
        if not value:
            return None
        try:
            return self.images[name]
        except KeyError:
            raise ValueError(f"The {name} of this request was not provided") from None

    def required_image(self, name: str) -> Any:
        """An input image the request's kind needs (validate() already refused a request
        without it); never None, so callers use it without checking."""
        image = self.image(name)
        if image is None:
            raise ValueError(f"The {name} of this request was not provided")
        return image

    def generators(self) -> list[Any]:
        import torch  # lazy: heavy, not loaded at Django start-up

        # One generator per image: diffusers draws image i's noise from generators[i] alone,
        # so a batch reproduces the single-image results of seeds seed, seed+1, ...
        return [torch.Generator(device="cpu").manual_seed(seed) for seed in self.seeds]

    def callback(self, offset: int = 0, later: int = 0) -> Callable[..., dict] | None:
        """A step callback reporting overall progress; `offset`/`later` count other passes."""
        if self.progress is None and self.previews is None:
            return None
        report, previews = self.progress, self.previews

        def on_step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            # num_timesteps, not req.steps: second-order samplers (Heun, DPM2) run more, and
            # img2img runs only `strength` of them.
            done, total = offset + step + 1, offset + pipeline.num_timesteps + later
            if previews is not None:
                previews.step(done, total, kwargs.get("latents"), self.ref.base)
            if report is not None:
                report(done, total)
            return kwargs

        return on_step_end

    def diffuse(self) -> list[Any]:
        """text2img, img2img, inpaint or ControlNet on the checkpoint's shared modules."""
        import torch  # lazy: heavy, not loaded at Django start-up

        req = self.req
        refuse_unrunnable(req, self.family)
        texts = {"prompt_2": req.prompt_2, "negative_prompt_2": req.negative_prompt_2}
        second_prompts = {name: text for name, text in texts.items() if text}
        if second_prompts and not has_second_prompt(self.family):
            names = ", ".join(second_prompts)
            raise ValueError(f"{names} needs an SDXL model, not a {self.family} one")
        base = self.cache.get(self.ref)
        skip = checked_clip_skip(base, req)
        components: dict[str, Any] = {}
        if req.vae:
            components["vae"] = self.cache.get(self.addon(req.vae))
        if req.kind in CONTROLNET_KINDS:
            components["controlnet"] = controlnets.models(
                req, lambda name: self.cache.get(self.addon(name))
            )
        adapter = self.addon(req.ip_adapter) if req.ip_adapter else None
        if adapter is not None:
            components.update(ip_adapter.components(self.cache.get(adapter)))
        pipe = variations.pipeline_for(base, self.family, req.kind, req, **components)
        pipe.scheduler = fresh_scheduler(base, req)
        loras = [(self.addon(name), weight) for name, weight in req.loras]
        embeddings = [self.addon(name) for name in req.embeddings]
        tokens = [addon_rules.embedding_token(e.model_id) for e in embeddings]
        prompt = with_tokens(req.prompt, req.negative_prompt, tokens)

        call: dict[str, Any] = {
            "prompt": prompt,
            # None lets SDXL zero the negative embeddings, which would drop negative_prompt_2.
            "negative_prompt": req.negative_prompt or ("" if req.negative_prompt_2 else None),
            "num_inference_steps": req.steps,
            "guidance_scale": req.guidance_scale,
            "num_images_per_prompt": req.samples,
            "clip_skip": skip,
            **second_prompts,
        }
        if adapter is not None:
            call["ip_adapter_image"] = self.required_image("ip_adapter_image")
        size = (req.width, req.height)
        painting: inpaint.Inpaint | None = None
        # A ControlNet kind runs as its base kind, with the ControlNets' arguments added.
        base_kind = controlnets.BASE_KINDS.get(req.kind, req.kind)
        if base_kind == "text2img":
            call.update(width=req.width, height=req.height)
        elif base_kind == "img2img":
            call.update(
                image=self.required_image("init_image").convert("RGB").resize(size),
                strength=req.strength,
            )
        elif base_kind == "inpaint":
            painting = painting_for(
                req, self.required_image("init_image"), self.required_image("mask_image")
            )
            call.update(
                image=painting.image,
                mask_image=painting.mask,
                width=req.width,
                height=req.height,
                strength=req.strength,
            )
        if req.kind in CONTROLNET_KINDS:
            call.update(self.control_arguments(painting))

        # Variation seeds draw each image's seed noise from its generator, as diffusers would.
        generators = self.generators()
        call.update(variations.call_options(pipe, req, generators))
        hires = req.hires_scale > 1 and req.kind == "text2img"
        hires_steps = max(1, int(req.steps * req.hires_strength)) if hires else 0
        refining = refiner.Refining(self, pipe, call) if req.refiner else None
        with (
            variations.applied(pipe, req),
            addon_rules.applied(pipe, loras=loras, embeddings=embeddings, tomesd=req.tomesd),
            ip_adapter.applied(pipe, adapter, req.ip_adapter_scale),
            torch.inference_mode(),
        ):
            # A1111's weights, BREAK and long prompts: embeddings in place of the strings.
            call = weighting.embedded_call(pipe, call, req.clip_skip_2)
            prepare_call(pipe, req.width, req.height, len(generators))
            output = pipe(
                **call,
                generator=generators,
                callback_on_step_end=self.callback(
                    later=refining.steps if refining else hires_steps
                ),
                output_type="latent" if hires or refining else "pil",
            )
            if hires:
                return self.hires_pass(base, pipe, call, output.images, components)
        if refining:
            return refining.run(base, pipe, output.images, components)
        images = list(output.images)
        if painting is not None:
            # The VAE round trip alters every pixel a little; like A1111, only the masked area
            # (with a soft edge) changes, and "only masked" returns the init image's size.
            images = [painting.paste(image) for image in images]
        return images

    def control_arguments(self, painting: inpaint.Inpaint | None = None) -> dict[str, Any]:
        """The ControlNet arguments of this request's call: its maps made from its own images.

        A unit's map comes from its own image or else from the init image (an inpaint job's as
        prepared in `painting`), an inpaint unit masked by the job's mask.
        """
        source, mask = (
            (painting.image, painting.mask)
            if painting is not None
            else (self.image("init_image"), self.image("mask_image"))
        )
        size = (self.req.width, self.req.height)
        return controlnets.arguments(self.req, self.images, source, mask, size)

    def hires_pass(
        self, base: Any, first: Any, call: dict[str, Any], latents: Any, components: dict
    ) -> list[Any]:
        """A1111's latent "hires fix": upscale the latents, then denoise them again as img2img."""
        import torch.nn.functional as F  # lazy: heavy, not loaded at Django start-up

        req = self.req
        # As webui enlarges them for its "Latent (...)" upscalers: the mode and antialias asked.
        upscaled = F.interpolate(
            latents,
            scale_factor=req.hires_scale,
            mode=req.hires_mode,
            antialias=req.hires_antialias,
        )
        second = variations.pipeline_for(base, self.family, "img2img", req, **components)
        second.scheduler = first.scheduler
        call = {k: v for k, v in call.items() if k not in ("width", "height", "latents")}
        # The latents already hold one image per sample: one prompt per latent, one each.
        batch = len(self.seeds)
        if "prompt_embeds" in call:
            call.update(weighting.repeated(call, batch), num_images_per_prompt=1)
        else:
            call.update(
                prompt=[call["prompt"]] * batch,
                negative_prompt=[call["negative_prompt"] or ""] * batch,
                num_images_per_prompt=1,
            )
        for name in ("prompt_2", "negative_prompt_2"):
            if name in call:
                call[name] = [call[name]] * batch
        output = second(
            **call,
            image=upscaled,
            strength=req.hires_strength,
            # One noise draw per image again, so the pass is reproducible for each seed.
            generator=self.generators(),
            callback_on_step_end=self.callback(offset=first.num_timesteps),
            output_type="pil",
        )
        return list(output.images)

    def upscale(self) -> list[Any]:
        """Super resolution: the x4 upscaler, then resized to the requested scale."""
        import torch  # lazy: heavy, not loaded at Django start-up

        req = self.req
        pipe = self.cache.get(self.ref)
        source = self.required_image("init_image").convert("RGB")
        report = self.progress
        callback = None
        if report is not None:

            def callback(step: int, timestep: Any, latents: Any) -> None:
                report(step + 1, req.steps)

        with torch.inference_mode():
            output = pipe(
                prompt=req.prompt,
                negative_prompt=req.negative_prompt or None,
                image=source,
                num_inference_steps=req.steps,
                guidance_scale=req.guidance_scale,
                noise_level=UPSCALER_NOISE_LEVEL,
                num_images_per_prompt=req.samples,
                generator=self.generators(),
                callback=callback,
                callback_steps=1,
            )
        size = (source.width * req.scale, source.height * req.scale)
        return [
            image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
            for image in output.images
        ]


class _AllDropped(Exception):
    """Every request of a batched call left it (canceled, lost): the call stops."""


def generate_batch(
    items: Sequence[batch.BatchItem],
    model: ModelRef | str,
    *,
    cache: PipelineCache | None = None,
    nsfw_threshold: float = 0.5,
) -> list[GenerationResult | BaseException]:
    """Generate several requests, in one diffusers call where they can share it.

    Returns one entry per item, in order: its result, or the exception that ended it alone (a
    bad request, or what its progress callback raised to leave the call). Items that cannot
    join the first item's call (generation/engine/batch.py says which) run alone, as does every
    item left when the shared call fails for a reason no single item raised, so one bad
    request never fails the others.
    """
    cache = cache or default_cache
    ref = model if isinstance(model, ModelRef) else ModelRef(items[0].req.model_id, model)
    results: list[GenerationResult | BaseException | None] = [None] * len(items)
    leader = items[0].req
    key = batch.batch_key(leader.to_params())
    family = pipeline_family(ref.family, ref.base)

    def shares_call(item: batch.BatchItem) -> bool:
        req = item.req
        names = [name for name, _weight in req.loras]
        names += [*req.embeddings, req.vae, req.controlnet_model]
        return (
            batch.family_batches(req.kind, family)
            and kind_error(family, req.kind) is None
            and batch.batchable(req)
            # Every input picture it names is here (a missing one fails it alone).
            and all(item.images.get(name) is not None for name in req.input_images())
            and batch.batch_key(req.to_params()) == key
            and all(item.addons.get(n) == items[0].addons.get(n) for n in names if n)
        )

    together: list[int] = []
    for index, item in enumerate(items):
        try:
            validate(item.req)
        except Exception as exc:
            results[index] = exc
            continue
        if shares_call(item):
            together.append(index)
    alone = [i for i in range(len(items)) if results[i] is None and i not in together]
    if len(together) > 1:
        try:
            _BatchRun(items, together, ref, family, cache, results).run(nsfw_threshold)
        except Exception:
            # Not one request's doing (a request's own problem is caught per request): each
            # one still waiting runs alone, where only its own problem can fail it.
            log.exception("a batched call failed; its requests run alone")
            alone.extend(i for i in together if results[i] is None)
    else:
        alone.extend(together)
    for index in sorted(alone):
        item = items[index]
        try:
            results[index] = generate(
                item.req,
                ref,
                addons=item.addons,
                images=item.images,
                cache=cache,
                progress=item.progress,
                nsfw_threshold=nsfw_threshold,
                previews=item.previews,
            )
        except Exception as exc:
            results[index] = exc
    return [r if r is not None else RuntimeError("request not run") for r in results]


def _checked(
    req: GenerationRequest, images: list[Any], nsfw_threshold: float
) -> tuple[list[Any], list[bool]]:
    """The images after the request's safety check, and which were flagged (as generate())."""
    if not req.safety_checker:
        return images, [False] * len(images)
    nsfw = safety.check(images, nsfw_threshold)
    censored = [
        safety.censor(image, req.safety_checker_type) if flagged else image
        for image, flagged in zip(images, nsfw, strict=True)
    ]
    return censored, nsfw


class _BatchRun:
    """One shared text2img, img2img, inpaint or ControlNet call for the requests `indexes`."""

    def __init__(
        self,
        items: Sequence[batch.BatchItem],
        indexes: list[int],
        ref: ModelRef,
        family: str,
        cache: PipelineCache,
        results: list[GenerationResult | BaseException | None],
    ) -> None:
        self.items = items
        self.indexes = indexes
        self.ref = ref
        self.family = family
        self.cache = cache
        self.results = results
        # The first member's fields stand for all: the batch key says they share them.
        self.leader = _Job(items[indexes[0]].req, ref, items[indexes[0]].addons, {}, cache, None)

    def run(self, nsfw_threshold: float) -> None:
        import torch  # lazy: heavy, not loaded at Django start-up

        job, req = self.leader, self.leader.req
        refuse_unrunnable(req, self.family)
        with _generation_lock:
            started = time.perf_counter()
            base = self.cache.get(self.ref)
            skip = checked_clip_skip(base, req)
            components: dict[str, Any] = {}
            if req.vae:
                components["vae"] = self.cache.get(job.addon(req.vae))
            if req.kind in CONTROLNET_KINDS:
                components["controlnet"] = controlnets.models(
                    req, lambda name: self.cache.get(job.addon(name))
                )
            pipe = variations.pipeline_for(base, self.family, req.kind, req, **components)
            pipe.scheduler = fresh_scheduler(base, req)
            loras = [(job.addon(name), weight) for name, weight in req.loras]
            embeddings = [job.addon(name) for name in req.embeddings]
            tokens = [addon_rules.embedding_token(e.model_id) for e in embeddings]
            finished: dict[int, list[Any]] = {}
            with (
                variations.applied(pipe, req),
                addon_rules.applied(pipe, loras=loras, embeddings=embeddings, tomesd=False),
                torch.inference_mode(),
            ):
                members = []
                for index in self.indexes:
                    item = self.items[index]
                    try:
                        prompt = with_tokens(item.req.prompt, item.req.negative_prompt, tokens)
                        embeds = batch.encoded(pipe, item.req, prompt, skip)
                        painting = (
                            painting_for(
                                item.req, item.images["init_image"], item.images["mask_image"]
                            )
                            if controlnets.BASE_KINDS.get(item.req.kind, item.req.kind) == "inpaint"
                            else None
                        )
                        # Its maps made as alone (its own images, its seed for "shuffle").
                        control = (
                            _Job(
                                item.req, self.ref, item.addons, item.images, self.cache, None
                            ).control_arguments(painting)
                            if item.req.kind in CONTROLNET_KINDS
                            else None
                        )
                    except Exception as exc:
                        self.results[index] = exc
                        continue
                    seeds = [item.req.seed + i for i in range(item.req.samples)]
                    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
                    members.append(
                        batch._Member(
                            index, item, 0, embeds, generators, painting=painting, control=control
                        )
                    )
                for group in batch.group_by_shape(members):
                    finished.update(self.call(pipe, group))
            seconds = time.perf_counter() - started
        for index, images in finished.items():
            item = self.items[index]
            images, nsfw = _checked(item.req, images, nsfw_threshold)
            self.results[index] = GenerationResult(
                images=images,
                seeds=[item.req.seed + i for i in range(item.req.samples)],
                nsfw=nsfw,
                inference_seconds=seconds,
            )

    def call(self, pipe: Any, group: list[batch._Member]) -> dict[int, list[Any]]:
        """One diffusers call for `group`; {item index: its images} of those still in it."""
        import torch  # lazy: heavy, not loaded at Django start-up

        req = self.leader.req
        offset = 0
        for member in group:
            member.offset = offset
            offset += member.rows
        embeds: dict[str, Any] = {}
        for name in group[0].embeds:
            parts = [m.embeds[name] for m in group]
            embeds[name] = None if parts[0] is None else torch.cat(parts)
        generators = [g for m in group for g in m.generators]
        base_model = self.ref.base

        def on_step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            done, total = step + 1, pipeline.num_timesteps
            latents = kwargs.get("latents")
            for member in group:
                if member.dropped is not None:
                    continue
                item = member.item
                try:
                    if item.previews is not None and latents is not None:
                        rows = latents[member.offset : member.offset + member.rows]
                        item.previews.step(done, total, rows, base_model)
                    if item.progress is not None:
                        item.progress(done, total)
                except Exception as exc:
                    # This request leaves the call (canceled, its lease lost); the rest go on.
                    member.dropped = exc
            if all(m.dropped is not None for m in group):
                raise _AllDropped()
            return kwargs

        call: dict[str, Any] = {
            **{k: v for k, v in embeds.items() if v is not None},
            "num_inference_steps": req.steps,
            "guidance_scale": req.guidance_scale,
            "num_images_per_prompt": 1,
            **batch.size_or_images(req, group),
            **variations.call_options(pipe, req, generators),
        }
        try:
            # A ControlNet runs on the batch in every step, beside the UNet.
            controlnet = getattr(pipe, "controlnet", None)
            modules = [pipe.unet] if controlnet is None else [pipe.unet, controlnet]
            with batch.rows_alone(modules, group):
                latents = pipe(
                    **call,
                    generator=generators,
                    callback_on_step_end=on_step_end,
                    output_type="latent",
                ).images
        except _AllDropped:
            latents = None
        done: dict[int, list[Any]] = {}
        for member in group:
            if member.dropped is not None:
                self.results[member.index] = member.dropped
                continue
            rows = latents[member.offset : member.offset + member.rows]
            images = batch.decode_alone(pipe, rows, member.generators)
            if member.painting is not None:
                # As a lone inpaint: only the masked area changes (see _Job.diffuse).
                images = [member.painting.paste(image) for image in images]
            done[member.index] = images
        return done
