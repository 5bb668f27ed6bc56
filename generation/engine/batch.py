"""Several compatible requests run as one diffusers call, each image exactly as it would be alone.

A batch shares everything that shapes the call (model, size, steps, scheduler, guidance, add-ons,
options) and differs only in what each image carries: prompts, seed, sample count and input
pictures. Each request's prompts are encoded on their own (with diffusers' encode_prompt, or the
A1111 weighting of weighting.py), so the embeddings are the ones its lone run would use, and
concatenated; each image draws its noise from its own generator, as a lone run does.

Pixel identity needs more than that: a CPU matrix product or a group norm may sum in another
order for another batch size, and so differ in the last bit. Measured on the demo UNet, only the
two-dimensional linears (the timestep embedding and every ResNet's projection of it) do that,
and the VAE decoder's convolutions and group norms; so within a batch those linears run once per
request on that request's rows in its lone layout, and each request's latents are decoded on
their own. A convolution on a batch of one row takes another path than on several (measured:
the UNet's and ControlNet's input convolutions), so where a request's lone call runs a network
on one row (one sample without classifier-free guidance, or a ControlNet in guess mode, which
sees the conditional rows only), that row's convolutions run alone too. (On CUDA, cuBLAS may
also choose other kernels for other shapes: there the images of a batch can differ from lone
ones in the last bit.)

SDXL requests carry pooled embeddings from the second encoder too, concatenated the same way.

Prompts of other lengths (weighted prompts past 75 tokens run 77 × chunks) cannot share a call
without padding, and A1111's padding changes the images; such requests form batches of their own
length. Plain text2img, img2img and inpaint are batched, on 4-channel and 9-channel (inpainting)
checkpoints alike; img2img's and inpaint's pictures go in as a batch of their own (see
size_or_images). With one generator per image, diffusers encodes picture i (and inpaint's masked
picture i) alone with generator i, so every image of the call gets its lone latents. An inpaint
request asking for several samples runs alone: its lone call encodes its one picture with the
first sample's generator only, and a later sample's generator is never drawn from for it, which
a batch of pictures (each encoded with its own image's generator) cannot reproduce. Each inpaint
request's picture and mask are prepared (fill, "only masked" crop) and its images pasted back
into its own picture, as its lone run does (generation/engine/inpaint.py).

A request with one ControlNet (kinds "controlnet", "controlnet-img2img", "controlnet-inpaint")
is batched on SD 1.x, 2.x and XL (and SD's 9-channel inpainting checkpoints) as its base kind
above, with its condition map made as alone (controlnets.arguments: from its own control image,
or computed from its init image, or an inpaint's prepared picture, with its own seed); the call
gets one map per image, which diffusers preprocesses map by map as it does a lone run's one map
repeated per sample. The ControlNet, its type, scale, guidance window and guess mode are in
the batch key. The ControlNet runs on the whole batch in every step, so rows_alone treats it as
the UNet (measured: without that, its timestep linears change the last bit of some pixels). Several
ControlNets per job (controlnet_units) stay alone: diffusers refuses a batch of maps for each of
several ControlNets ("A single batch of multiple conditionings are supported at the moment") in
every pipeline but SD 1.x/2.x text2img. An SDXL
ControlNet also takes the UNet's pooled embeddings (each request's own, concatenated) and time
ids (one size for the call); the tests prove its identity with a ControlNet built from
demo-sdxl's UNet (text2img, img2img, inpaint; with and without guess mode). A ControlNet
request on a 9-channel SDXL inpainting checkpoint stays alone: no test checkpoint proves it.

Upscale needs more than a batch of pictures, and hires fix, refiner, panorama, variation seeds
and tomesd change the call's shape or draw shared random numbers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from generation.engine.controlnets import BASE_KINDS
from generation.engine.inpaint import Inpaint
from generation.engine.preview import Previewer
from generation.engine.request import GenerationRequest, ModelRef

Progress = Callable[[int, int], None]

# Fields that differ per image and never change the call's shape: left out of the batch key.
PER_IMAGE_FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "samples",
    # An img2img or inpaint request's own picture and mask, a ControlNet request's control
    # image and the init image (and mask) its map is computed from (stored names): each image
    # of the call has its own. What shapes the call (the ControlNet, its type, scale, window
    # and guess mode) stays in the key.
    "init_image",
    "mask_image",
    "control_image",
    # How outputs are encoded, and a flag that only records an already enhanced prompt.
    "output_format",
    "output_quality",
    "enhance_prompt",
)
# Checkpoint families (`pipeline_family` keys) whose calls the batch reproduces: SD 1.x, 2.x
# and XL pipelines, and their 9-channel inpainting checkpoints (which run inpaint only).
FAMILIES = ("sd15", "sd2", "sdxl", "inpaint", "inpaint-sdxl")
# The kinds batched, each with the input images it takes (and needs).
KIND_INPUTS: dict[str, set[str]] = {
    "text2img": set(),
    "img2img": {"init_image"},
    "inpaint": {"init_image", "mask_image"},
}
# A one-ControlNet request takes its base kind's inputs and its map's source (its own control
# image, or an init image to compute it from; with both the control image is the source) and,
# for an "inpaint" ControlNet, a mask: controlnets.arguments makes its map as alone either way.
CONTROLNET_INPUTS = {"control_image", "init_image", "mask_image"}
CONTROLNET_SOURCES = {"control_image", "init_image"}
# The families whose ControlNet calls the batch reproduces: not 9-channel SDXL inpainting
# checkpoints ("inpaint-sdxl"), which no test checkpoint proves (SDXL's are proven with a
# ControlNet the tests build from demo-sdxl's UNet); other kinds batch on every family of
# FAMILIES.
KIND_FAMILIES = {
    "controlnet": ("sd15", "sd2", "sdxl"),
    "controlnet-img2img": ("sd15", "sd2", "sdxl"),
    "controlnet-inpaint": ("sd15", "sd2", "sdxl", "inpaint"),
}


def family_batches(kind: str, family: str) -> bool:
    """Whether calls of `kind` on a checkpoint of `family` (a pipeline_family key) are batched."""
    return family in KIND_FAMILIES.get(kind, FAMILIES)


def takes_inputs(req: GenerationRequest) -> bool:
    """Whether the request's kind is batched and it names the input images that kind takes."""
    inputs = set(req.input_images())
    base = BASE_KINDS.get(req.kind)
    if base is None:
        return KIND_INPUTS.get(req.kind) == inputs
    needed = KIND_INPUTS[base]
    return (
        not req.controlnet_units
        and needed <= inputs <= needed | CONTROLNET_INPUTS
        and bool(inputs & CONTROLNET_SOURCES)
    )


def batchable(req: GenerationRequest) -> bool:
    """Whether this request may share a diffusers call with others (see the module's doc)."""
    return (
        takes_inputs(req)
        # A lone inpaint of several samples encodes its picture with the first one's generator.
        and (BASE_KINDS.get(req.kind, req.kind) != "inpaint" or req.samples == 1)
        and req.hires_scale == 1
        and not req.refiner
        and not req.panorama
        and not req.ip_adapter
        and req.subseed_strength == 0
        and not req.tomesd
        and not req.prompt_2
        and not req.negative_prompt_2
    )


def batch_key(params: Mapping[str, Any]) -> str:
    """The stored params that must match for a shared call: all but the per-image ones."""
    shared = {k: v for k, v in params.items() if k not in PER_IMAGE_FIELDS}
    return json.dumps(shared, sort_keys=True, default=str)


@dataclass
class BatchItem:
    """One request of a batch, with its input images (decoded), progress report and previews."""

    req: GenerationRequest
    addons: Mapping[str, ModelRef] = field(default_factory=dict)
    progress: Progress | None = None
    previews: Previewer | None = None
    images: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Member:
    """A request admitted to the batched call: its rows, embeddings and generators."""

    index: int
    item: BatchItem
    offset: int
    embeds: dict[str, Any]
    generators: list[Any]
    # An inpaint's prepared picture and mask, and where its images are pasted back.
    painting: Inpaint | None = None
    # A ControlNet request's arguments of its lone call, its condition map among them.
    control: dict[str, Any] | None = None
    dropped: BaseException | None = None

    @property
    def rows(self) -> int:
        return self.item.req.samples


def encoded(pipe: Any, req: GenerationRequest, prompt: str, skip: int | None) -> dict[str, Any]:
    """The request's prompt and negative embeddings, one row per sample, as its lone run has."""
    from generation.engine import weighting

    call = {
        "prompt": prompt,
        "negative_prompt": req.negative_prompt or None,
        "clip_skip": skip,
    }
    weighted = weighting.embedded_call(pipe, call, req.clip_skip_2)
    if "prompt_embeds" in weighted:
        return weighting.repeated(weighted, req.samples)
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: two encoders, pooled outputs
        names = weighting.EMBED_FIELDS
        return dict(
            zip(
                names,
                pipe.encode_prompt(
                    prompt,
                    device=pipe._execution_device,
                    num_images_per_prompt=req.samples,
                    do_classifier_free_guidance=req.guidance_scale > 1,
                    negative_prompt=req.negative_prompt or None,
                    clip_skip=skip,
                ),
                strict=True,
            )
        )
    positive, negative = pipe.encode_prompt(
        prompt,
        pipe._execution_device,
        req.samples,
        req.guidance_scale > 1,
        req.negative_prompt or None,
        clip_skip=skip,
    )
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative}


def size_or_images(req: GenerationRequest, group: Sequence[_Member]) -> dict[str, Any]:
    """The call's size (text2img), or its pictures (and masks) and strength, for every image.

    A ControlNet call gets its base kind's arguments, and each request's condition map once per
    image it asks for: diffusers preprocesses a list of maps map by map, as it does a lone run's
    one map (then repeated per sample); the other ControlNet arguments are shared by all.

    An img2img call gets each request's picture, resized as its lone run resizes it, once per
    image it asks for: with one generator per image, diffusers encodes each picture alone and
    draws its noise from that image's generator, so every latent is the one its lone run makes.
    An inpaint call gets each request's prepared picture and mask (one image each, see
    batchable), which diffusers encodes the same way, and the masked picture too.
    """
    base = BASE_KINDS.get(req.kind)
    if base is None:
        return _pictures(req.kind, req, group)
    controls = [m.control for m in group if m.control is not None]
    if len(controls) != len(group):
        raise ValueError("every request of a ControlNet batch needs its condition map")
    # The map's argument: "image" on text2img, "control_image" beside an img2img's picture.
    name = "image" if "image" in controls[0] else "control_image"
    maps = [
        control[name]
        for member, control in zip(group, controls, strict=True)
        for _ in range(member.rows)
    ]
    return {**controls[0], name: maps, **_pictures(base, req, group)}


def _pictures(kind: str, req: GenerationRequest, group: Sequence[_Member]) -> dict[str, Any]:
    """size_or_images for a call of `kind` (text2img, img2img or inpaint), maps aside."""
    if kind == "text2img":
        return {"width": req.width, "height": req.height}
    if kind == "inpaint":
        paintings = [m.painting for m in group if m.painting is not None]
        if len(paintings) != len(group) or any(m.rows != 1 for m in group):
            raise ValueError("every request of an inpaint batch needs its one prepared picture")
        return {
            "image": [p.image for p in paintings],
            "mask_image": [p.mask for p in paintings],
            "width": req.width,
            "height": req.height,
            "strength": req.strength,
        }
    size = (req.width, req.height)
    pictures = []
    for member in group:
        picture = member.item.images["init_image"].convert("RGB").resize(size)
        pictures += [picture] * member.rows
    return {"image": pictures, "strength": req.strength}


def group_by_shape(members: Sequence[_Member]) -> list[list[_Member]]:
    """Members whose embeddings have one sequence length, each list in the batch's order."""
    groups: dict[tuple[int, ...], list[_Member]] = {}
    for member in members:
        shape = tuple(member.embeds["prompt_embeds"].shape[1:])
        groups.setdefault(shape, []).append(member)
    return list(groups.values())


@contextmanager
def rows_alone(modules: Sequence[Any], members: Sequence[_Member]) -> Iterator[None]:
    """Run the 2-D linears of `modules` (the UNet, a ControlNet) per request on its rows in its
    lone layout (see module doc).

    Their batch is `copies` blocks of all requests' rows (unconditional, conditional, PAG's
    perturbed; a ControlNet in guess mode sees the conditional block only); a request's lone
    run has the same blocks of its own rows only. With one block, a one-row request's rows go
    through every 2-D convolution alone as well, as its lone one-row batch does.
    """
    import torch  # lazy: heavy, not loaded at Django start-up
    import torch.nn.functional as F

    total = sum(m.rows for m in members)
    picks = [
        (m.offset, m.rows)
        for m in members  # in batch order
    ]

    def forward(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[0] % total:
            return F.linear(x, linear.weight, linear.bias)
        copies = x.shape[0] // total
        out = torch.empty(x.shape[0], linear.out_features, dtype=x.dtype, device=x.device)
        for offset, rows in picks:
            index = torch.cat(
                [
                    torch.arange(c * total + offset, c * total + offset + rows, device=x.device)
                    for c in range(copies)
                ]
            )
            out[index] = F.linear(x[index], linear.weight, linear.bias)
        return out

    def convolve(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[0] != total:  # not one copy: no request has a one-row batch
            return conv._conv_forward(x, conv.weight, conv.bias)
        alone = [conv._conv_forward(x[o : o + 1], conv.weight, conv.bias) for o in singles]
        if len(singles) == total:  # every request is one row: nothing left to run batched
            return torch.cat(alone)
        out = conv._conv_forward(x, conv.weight, conv.bias)
        for offset, row in zip(singles, alone, strict=True):
            out[offset : offset + 1] = row
        return out

    # Requests whose lone module batch may be one row (one sample, one copy), when not alone.
    singles = [offset for offset, rows in picks if rows == 1] if len(picks) > 1 else []
    found = {id(m): m for module in modules for m in module.modules()}  # each once, if shared
    patched = [
        (m, functools.partial(forward, m))
        if isinstance(m, torch.nn.Linear)
        else (m, functools.partial(convolve, m))
        for m in found.values()
        if isinstance(m, torch.nn.Linear) or (singles and isinstance(m, torch.nn.Conv2d))
    ]
    for module, patch in patched:
        module.forward = patch  # type: ignore[method-assign]  # per instance, deleted in finally
    try:
        yield
    finally:
        for module, _patch in patched:
            del module.forward


def decode_alone(pipe: Any, latents: Any, generators: list[Any]) -> list[Any]:
    """PIL images of one request's latents, decoded as its lone pipeline call decodes them."""
    vae = pipe.vae
    image = vae.decode(
        latents / vae.config.scaling_factor, return_dict=False, generator=generators
    )[0]
    return list(
        pipe.image_processor.postprocess(
            image, output_type="pil", do_denormalize=[True] * image.shape[0]
        )
    )
