"""Request options that vary how one image is made: PAG, panoramas, variation seeds, tiling.

- Perturbed-attention guidance (ModelsLab's `self_attention`): diffusers' PAG pipelines, built
  around the checkpoint's shared modules like every other pipeline, guide away from a pass whose
  self-attention in PAG_LAYERS is replaced by the identity.
- Panorama: diffusers' MultiDiffusion pipeline denoises a wide latent in overlapping square
  windows as tall as the image, so the model never sees a shape it was not trained on.
- Variation seeds (A1111's `subseed`, `subseed_strength`): image i starts from the noise of
  seed + i slerped towards that of subseed + i.
- Tiling: every convolution of the UNet and VAE pads circularly, so the image wraps around.

The checkpoint's modules are shared by every job of the process: whatever a job changes on them
(attention processors, padding modes) is put back when it ends, even when it fails or is aborted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from generation.engine.pipelines import PAG_PIPELINES
from generation.engine.pipelines import pipeline_for as plain_pipeline_for
from generation.engine.request import GenerationRequest

# The layers whose self-attention PAG perturbs: diffusers' default, and a block every SD 1.x, 2.x
# and SDXL UNet has (the demo models' too).
PAG_LAYERS = ["mid"]
# The scale a plain "yes" stands for (diffusers' default and the PAG paper's usual value).
DEFAULT_PAG_SCALE = 3.0
# diffusers' MultiDiffusion pipeline is written for the SD 1.x/2.x UNet and text encoder only.
PANORAMA_FAMILIES = ("sd15", "sd2")
PANORAMA_PIPELINE = "StableDiffusionPanoramaPipeline"
# The largest panorama window, in latent pixels (64 = 512 px, SD 1.x's native size), and how many
# strides a window spans at most (diffusers' defaults: a 64 window, stride 8).
PANORAMA_MAX_WINDOW = 64
PANORAMA_STRIDES_PER_WINDOW = 8
# Latent pixels per image pixel of every SD VAE.
LATENT_SCALE = 8


def problems(req: GenerationRequest, family: str) -> dict[str, str]:
    """Why these options cannot run as asked on a checkpoint of `family`, by field name."""
    found: dict[str, str] = {}
    if req.pag_scale > 0 and (family, req.kind) not in PAG_PIPELINES:
        kinds = sorted({kind for fam, kind in PAG_PIPELINES if fam == family})
        found["pag_scale"] = (
            f"Perturbed-attention guidance (self_attention) does not run {req.kind} on a "
            f"{family} model" + (f"; it runs {', '.join(kinds)}." if kinds else ".")
        )
    elif req.pag_scale > 0 and req.guess_mode:
        # diffusers' PAG ControlNet pipeline feeds guess mode's conditional-only map to the
        # ControlNet beside the three guidance blocks of latents: a shape error mid-call.
        found["guess_mode"] = (
            "Guess mode cannot be combined with perturbed-attention guidance (self_attention)."
        )
    if req.panorama:
        if req.kind != "text2img":
            found["panorama"] = "A panorama is a text2img option only."
        elif family not in PANORAMA_FAMILIES:
            found["panorama"] = (
                f"Panoramas need an SD 1.x or 2.x model, not a {family} one: diffusers' "
                "MultiDiffusion pipeline has no SDXL form."
            )
        elif req.width <= req.height:
            found["panorama"] = (
                f"A panorama must be wider than it is tall; got {req.width}x{req.height}."
            )
        elif req.hires_scale > 1:
            found["panorama"] = "A panorama cannot be combined with the hires fix (upscale)."
        elif req.pag_scale > 0:
            found["panorama"] = (
                "A panorama cannot use perturbed-attention guidance (self_attention)."
            )
        elif req.tiling:
            found["tiling"] = "A panorama cannot be tiled: its windows would each wrap around."
    if req.subseed_strength > 0 and req.kind != "text2img":
        found["subseed_strength"] = (
            f"Variation seeds (subseed_strength) work on txt2img only, not {req.kind}."
        )
    if req.tiling and req.kind == "upscale":
        found["tiling"] = "Tiling does not apply to super resolution."
    return found


def pipeline_for(
    base: Any, family: str, kind: str, req: GenerationRequest, **components: Any
) -> Any:
    """The pipeline for `kind`: the PAG or panorama one when the request asks for it."""
    if req.pag_scale > 0:
        return plain_pipeline_for(
            base,
            family,
            kind,
            name=PAG_PIPELINES[(family, kind)],
            pag_applied_layers=PAG_LAYERS,
            **components,
        )
    if req.panorama and kind == "text2img":
        pipe = plain_pipeline_for(base, family, kind, name=PANORAMA_PIPELINE, **components)
        window, stride = panorama_views(req.width, req.height)
        # The pipeline takes no window size: its get_views does, and this object is this job's.
        pipe.get_views = functools.partial(pipe.get_views, window_size=window, stride=stride)
        return pipe
    return plain_pipeline_for(base, family, kind, **components)


def panorama_views(width: int, height: int) -> tuple[int, int]:
    """The (window, stride) in latent pixels for a panorama of width × height px.

    Square windows as tall as the image (at most 512 px), and a stride that divides the width
    left over, so the last window ends exactly at the right edge and every column is denoised.
    """
    latent_width, latent_height = width // LATENT_SCALE, height // LATENT_SCALE
    window = min(PANORAMA_MAX_WINDOW, latent_height, latent_width)
    spare = latent_width - window
    stride = max(1, window // PANORAMA_STRIDES_PER_WINDOW)
    while spare % stride:
        stride -= 1
    return window, stride


def call_options(pipe: Any, req: GenerationRequest, generators: Sequence[Any]) -> dict[str, Any]:
    """Arguments of the pipeline call for these options (none when all are off).

    `generators` are the call's own, one per image: variation seeds draw from them.
    """
    options: dict[str, Any] = {}
    if req.pag_scale > 0:
        options["pag_scale"] = req.pag_scale
    if req.panorama:
        # One window per UNet call: the memory of a plain image of the window's size.
        options["view_batch_size"] = 1
    if req.subseed_strength > 0 and req.kind == "text2img":
        options["latents"] = variation_latents(pipe, req, generators)
    return options


def variation_latents(pipe: Any, req: GenerationRequest, generators: Sequence[Any]) -> Any:
    """The unscaled initial noise of each image: slerp(noise(seed + i), noise(subseed + i)).

    The seed's noise is drawn from the call's generator i exactly as diffusers' prepare_latents
    would draw it, so the generator goes on to the same state (ancestral samplers then add the
    same step noise as without variation seeds) and a strength of 1 reproduces the subseed's own
    image. The pipeline multiplies the result by the scheduler's init_noise_sigma, as its own.
    """
    import torch  # lazy: heavy, not loaded at Django start-up
    from diffusers.utils.torch_utils import randn_tensor

    shape = (
        1,
        pipe.unet.config.in_channels,
        req.height // pipe.vae_scale_factor,
        req.width // pipe.vae_scale_factor,
    )
    device = pipe._execution_device
    dtype = pipe.unet.dtype

    def noise(generator: Any) -> Any:
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    return torch.cat(
        [
            slerp(
                req.subseed_strength,
                noise(generator),
                noise(torch.Generator(device="cpu").manual_seed(req.subseed + i)),
            ).to(dtype)
            for i, generator in enumerate(generators)
        ]
    )


def slerp(t: float, low: Any, high: Any) -> Any:
    """Spherical interpolation from `low` (t = 0) to `high` (t = 1), as A1111's variation seeds.

    Both ends are returned exactly at t = 0 and t = 1; nearly parallel inputs are interpolated
    linearly (the sine formula divides by almost zero there).
    """
    import torch  # lazy: heavy, not loaded at Django start-up

    a, b = low.float(), high.float()
    dot = (a.flatten() / a.norm() * (b.flatten() / b.norm())).sum().clamp(-1.0, 1.0)
    if dot > 0.9995:
        return a * (1 - t) + b * t
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return torch.sin((1.0 - t) * omega) / so * a + torch.sin(t * omega) / so * b


@contextmanager
def applied(pipe: Any, req: GenerationRequest) -> Iterator[None]:
    """Run the call with tiling on and PAG's attention processors put back afterwards."""
    with ExitStack() as stack:
        if req.pag_scale > 0:
            stack.enter_context(attention_restored(pipe.unet))
        if req.tiling:
            stack.enter_context(tiled(pipe.unet, pipe.vae))
        yield


@contextmanager
def attention_restored(unet: Any) -> Iterator[None]:
    """Put the UNet's attention processors back when the call ends, whichever way it ends.

    A PAG pipeline swaps in its own processors for the call and restores them only when the
    call returns; a job aborted mid-way (canceled, failed) would leave them on the shared UNet.
    """
    saved = unet.attn_processors
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


@contextmanager
def tiled(*modules: Any) -> Iterator[None]:
    """Every Conv2d of `modules` pads circularly (the image wraps around), then as before."""
    import torch  # lazy: heavy, not loaded at Django start-up

    convs = [
        conv for module in modules for conv in module.modules() if isinstance(conv, torch.nn.Conv2d)
    ]
    before = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in zip(convs, before, strict=True):
            conv.padding_mode = mode
