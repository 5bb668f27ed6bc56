"""The plain request and result objects shared by the web tier and the engine.

This module imports neither Django nor torch: views build a GenerationRequest, workers hand it
to the engine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from generation.engine import weighting
from generation.engine.prompts import MAX_LORA_WEIGHT

SAFETY_MODES = ("sensitive_content_text", "blur", "pixelate", "black")
DEFAULT_SCHEDULER = "UniPCMultistepScheduler"
# What a job does with its model; the pipeline class follows from this and the model's family.
KINDS = (
    "text2img",
    "img2img",
    "inpaint",
    "controlnet",
    "controlnet-img2img",
    "controlnet-inpaint",
    "upscale",
)
# The kinds run with ControlNets (text2img, img2img or inpaint guided by control images).
CONTROLNET_KINDS = ("controlnet", "controlnet-img2img", "controlnet-inpaint")
# ControlNets one job may run: the one of the controlnet_* fields plus this many - 1 units.
MAX_CONTROLNETS = 4
# Names of the input images a request may carry (values are storage names, read by the worker).
IMAGE_INPUTS = ("init_image", "mask_image", "control_image", "ip_adapter_image")
# A1111's default mask blur: the inpainted area fades into the kept pixels over a few pixels.
MASK_BLUR = 4
# inpaint: the largest mask blur and "only masked" padding (A1111's sliders stop there).
MAX_MASK_BLUR = 64
MAX_INPAINT_PADDING = 256
# inpaint_fill: what the masked area holds before denoising (generation/engine/inpaint.py).
INPAINT_FILLS = ("fill", "original")
# Output image formats (generation/engine/pngmeta.py encodes them) and their file extensions.
OUTPUT_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
# The longest side each format can encode (libjpeg's and libwebp's limits; png has none that a
# bounded input reaches).
OUTPUT_MAX_SIDE = {"jpeg": 65500, "webp": 16383}
# jpeg/webp quality bounds and default (Pillow's scale; png is lossless and ignores it).
MIN_OUTPUT_QUALITY = 1
MAX_OUTPUT_QUALITY = 100
DEFAULT_OUTPUT_QUALITY = 90
# Seeds are drawn from and reported in this range (torch takes up to 2**64 - 1 per image).
MAX_SEED = 2**32 - 1
# The float fields and the range each must lie in; a NaN or an infinity cannot even be stored.
FLOAT_RANGES = {
    "guidance_scale": (0.0, 100.0),
    "strength": (0.0, 1.0),
    "hires_strength": (0.0, 1.0),
    "controlnet_conditioning_scale": (0.0, 10.0),
    "control_guidance_start": (0.0, 1.0),
    "control_guidance_end": (0.0, 1.0),
    "ip_adapter_scale": (0.0, 2.0),
    "refiner_switch_at": (0.01, 0.99),
    "pag_scale": (0.0, 10.0),
    "subseed_strength": (0.0, 1.0),
}
# Model ids of few-step (distilled) checkpoints accept steps in this range (AIModel.distillation).
FEW_STEPS = (1, 8)
# The hires fix's latent upscale: torch's interpolate modes (A1111's "Latent (...)" upscalers
# name them: generation/api/a1111/tables.py). Enlarging, antialiasing only changes bicubic (its
# antialiased kernel is another cubic); bilinear's gives the same pixels, so it is refused.
HIRES_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")
ANTIALIASED_HIRES_MODES = ("bicubic",)
# Schedulers whose denoising loop is not one timestep a step: diffusers' second-order ones run
# two a step but one on the last (2 × steps - 1), PNDM's PLMS one more than its steps (from 2).
TWO_TIMESTEPS_A_STEP = (
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
)
ONE_MORE_TIMESTEP = ("PNDMScheduler",)


@dataclass(frozen=True)
class ModelRef:
    """Where a registered model lives and how to load it (families as in AIModel.Family)."""

    model_id: str
    path: str
    family: str = "sd15"
    base: str = "sd15"
    config_path: str = ""


@dataclass(frozen=True)
class ControlNetUnit:
    """One more ControlNet of a job: a registered model, its control image and weights.

    `image` and `mask` are storage names like the request's input images; without an image the
    unit's map is computed from the request's init_image by `type` (a preprocessor of
    generation/engine/control.py), and an "inpaint" unit without a mask takes the request's
    mask_image.
    """

    model: str
    type: str = ""
    image: str = ""
    mask: str = ""
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    """A validated generation request (any kind), independent of any wire format."""

    prompt: str
    model_id: str
    negative_prompt: str = ""
    # SDXL only: the prompts for its second text encoder (empty: the first ones are reused).
    prompt_2: str = ""
    negative_prompt_2: str = ""
    width: int = 512
    height: int = 512
    samples: int = 1
    steps: int = 21
    guidance_scale: float = 7.5
    seed: int = 0
    scheduler: str = DEFAULT_SCHEDULER
    use_karras_sigmas: bool = False
    algorithm_type: str = "none"
    clip_skip: int | None = None
    # SDXL only: the same for its second text encoder (None: its penultimate layer, as SDXL).
    clip_skip_2: int | None = None
    safety_checker: bool = True
    safety_checker_type: str = "sensitive_content_text"
    kind: str = "text2img"
    # Input images, as storage names the worker reads (the web tier fetched and checked them).
    init_image: str = ""
    mask_image: str = ""
    control_image: str = ""
    # img2img / inpaint: how far from the init image to go (1 = ignore it entirely).
    strength: float = 0.7
    # inpaint: the masked area's start ("original" pixels or a "fill" from around it), the
    # soft edge of the paste back (x, y px), and A1111's "only masked": inpaint the mask's
    # box plus inpaint_padding px at width × height, then paste it back at the init's size.
    inpaint_fill: str = "original"
    mask_blur_x: int = MASK_BLUR
    mask_blur_y: int = MASK_BLUR
    inpaint_full_res: bool = False
    inpaint_padding: int = 0
    # Add-ons, by registered model id: LoRAs with their weights, embeddings, a VAE override.
    loras: tuple[tuple[str, float], ...] = ()
    embeddings: tuple[str, ...] = ()
    vae: str = ""
    controlnet_model: str = ""
    controlnet_type: str = ""
    controlnet_conditioning_scale: float = 1.0
    control_guidance_start: float = 0.0
    control_guidance_end: float = 1.0
    # More ControlNets run with the one above in the same job, each with its own image and
    # weights (diffusers' MultiControlNetModel).
    controlnet_units: tuple[ControlNetUnit, ...] = ()
    # ControlNet guess mode: the ControlNets act on the prompt's (conditional) pass only, their
    # residuals fading from deep to shallow blocks (A1111's "ControlNet is more important").
    guess_mode: bool = False
    # IP-Adapter (image prompt): a registered ip_adapter model, how strongly it acts, its image.
    ip_adapter: str = ""
    ip_adapter_scale: float = 1.0
    ip_adapter_image: str = ""
    # SDXL refiner: a registered refiner model finishes the denoising from refiner_switch_at on.
    refiner: str = ""
    refiner_switch_at: float = 0.8
    # Perturbed-attention guidance ("self_attention"); 0 leaves it off.
    pag_scale: float = 0.0
    # MultiDiffusion panorama: the width is denoised in overlapping windows.
    panorama: bool = False
    # Variation seeds (A1111): noise of `seed` slerped towards that of `subseed` by this much.
    subseed: int = 0
    subseed_strength: float = 0.0
    # Seamless textures: every convolution pads circularly, so the image tiles.
    tiling: bool = False
    tomesd: bool = False
    # The prompt is stored already enhanced; the flag only records that it was.
    enhance_prompt: bool = False
    # text2img "hires fix": latent upscale by this factor, then a second img2img pass.
    hires_scale: int = 1
    hires_strength: float = 0.5
    # How the hires fix enlarges the latents (one of HIRES_MODES, antialiased or not); nearest
    # unless a format names another (A1111's hr_upscaler).
    hires_mode: str = "nearest"
    hires_antialias: bool = False
    # kind "upscale": the super-resolution factor (the output is this multiple of the input).
    scale: int = 4
    # How outputs are encoded: png (lossless, ignores the quality), jpeg or webp at this quality.
    output_format: str = "png"
    output_quality: int = DEFAULT_OUTPUT_QUALITY

    @property
    def output_width(self) -> int:
        """Width of the images this request returns (after any hires-fix upscale)."""
        return self.width * self.hires_scale

    @property
    def output_height(self) -> int:
        return self.height * self.hires_scale

    def problems(self) -> dict[str, str]:
        """Why the engine could not run this request, by field name (empty when it can).

        The web tier refuses such a request at submit, so no accepted job fails for a reason
        its parameters show; the engine checks again before it runs one.
        """
        found: dict[str, str] = {}
        for name, (low, high) in FLOAT_RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value)):
                found[name] = f"The {name} must be a finite number."
            elif not low <= value <= high:
                found[name] = f"The {name} must be between {low:g} and {high:g}."
        for name, weight in self.loras:
            if not (math.isfinite(weight) and abs(weight) <= MAX_LORA_WEIGHT):
                found["lora_model"] = (
                    f"The weight of LoRA {name} must be between "
                    f"{-MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}."
                )
        for name in weighting.PROMPT_FIELDS:  # A1111's (word:weight) syntax
            syntax = weighting.problem(getattr(self, name))
            if syntax:
                found[name] = f"The {name} cannot be read: {syntax}"
        deepest = weighting.MAX_CLIP_SKIP_2
        if self.clip_skip_2 is not None and not 1 <= self.clip_skip_2 <= deepest:
            found["clip_skip_2"] = f"The clip_skip_2 must be between 1 and {deepest}."
        if self.inpaint_fill not in INPAINT_FILLS:
            found["inpaint_fill"] = f"The inpaint_fill must be one of: {', '.join(INPAINT_FILLS)}."
        for name in ("mask_blur_x", "mask_blur_y"):
            if not 0 <= getattr(self, name) <= MAX_MASK_BLUR:
                found[name] = f"The {name} must be between 0 and {MAX_MASK_BLUR}."
        if not 0 <= self.inpaint_padding <= MAX_INPAINT_PADDING:
            found["inpaint_padding"] = (
                f"The inpaint_padding must be between 0 and {MAX_INPAINT_PADDING}."
            )
        if self.hires_mode not in HIRES_MODES:
            found["hires_mode"] = f"The hires_mode must be one of: {', '.join(HIRES_MODES)}."
        elif self.hires_antialias and self.hires_mode not in ANTIALIASED_HIRES_MODES:
            found["hires_antialias"] = (
                f"Only the {', '.join(ANTIALIASED_HIRES_MODES)} upscale of the hires fix is "
                "changed by antialiasing."
            )
        if self.output_format not in OUTPUT_FORMATS:
            found["output_format"] = (
                f"The output_format must be one of: {', '.join(OUTPUT_FORMATS)}."
            )
        if not MIN_OUTPUT_QUALITY <= self.output_quality <= MAX_OUTPUT_QUALITY:
            found["output_quality"] = (
                f"The quality must be between {MIN_OUTPUT_QUALITY} and {MAX_OUTPUT_QUALITY}."
            )
        if not 0 <= self.seed <= MAX_SEED:
            found["seed"] = f"The seed must be between 0 and {MAX_SEED}."
        if not 0 <= self.subseed <= MAX_SEED:
            found["subseed"] = f"The subseed must be between 0 and {MAX_SEED}."
        if self.steps < 1:
            found["steps"] = "At least one step is needed."
        found.update(self.controlnet_problems())
        if bool(self.ip_adapter) != bool(self.ip_adapter_image):
            name = "ip_adapter_image" if self.ip_adapter else "ip_adapter"
            found[name] = "An IP-Adapter needs both its model and its ip_adapter_image."
        if self.ip_adapter and self.kind == "upscale":
            found["ip_adapter"] = "An IP-Adapter does not apply to upscaling."
        if found:
            return found
        # diffusers runs int(steps × strength) steps of an img2img pass; none is an error.
        if self.uses_strength and int(self.steps * self.strength) < 1:
            found["strength"] = (
                f"At {self.steps} steps a strength of {self.strength:g} runs no denoising step; "
                f"use a strength of at least {math.ceil(1000 / self.steps) / 1000:g} or more "
                "steps."
            )
        if (
            self.kind == "text2img"
            and self.hires_scale > 1
            and int(self.steps * self.hires_strength) < 1
        ):
            found["hires_strength"] = (
                f"The hires fix's second pass runs steps × {self.hires_strength:g} steps, none at "
                f"{self.steps} steps; use at least {math.ceil(1 / self.hires_strength)} steps."
                if self.hires_strength > 0
                else "The hires fix's second pass needs a strength above 0."
            )
        return found

    def to_params(self) -> dict[str, Any]:
        """The request as a JSON-serialisable dict (stored on the Job)."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GenerationRequest:
        """Rebuild a request from `to_params` output, ignoring unknown keys."""
        known = cls.__dataclass_fields__.keys()
        values = {k: v for k, v in params.items() if k in known}
        # JSON turns tuples into lists; the dataclass is frozen and hashable with tuples.
        if "loras" in values:
            values["loras"] = tuple((str(name), float(w)) for name, w in values["loras"])
        if "embeddings" in values:
            values["embeddings"] = tuple(values["embeddings"])
        if "controlnet_units" in values:
            values["controlnet_units"] = tuple(
                ControlNetUnit(**unit) for unit in values["controlnet_units"]
            )
        return cls(**values)

    @property
    def uses_strength(self) -> bool:
        """Whether this kind starts from the init image, `strength` away from it."""
        return self.kind in ("img2img", "inpaint", "controlnet-img2img", "controlnet-inpaint")

    def controlnet_problems(self) -> dict[str, str]:
        """Why the ControlNet fields (units, guess mode) cannot run, by field name."""
        found: dict[str, str] = {}
        if self.kind not in CONTROLNET_KINDS:
            if self.controlnet_units or self.guess_mode:
                name = "controlnet_units" if self.controlnet_units else "guess_mode"
                found[name] = f"The {name} field needs a ControlNet request."
            return found
        if len(self.controlnet_units) + 1 > MAX_CONTROLNETS:
            found["controlnet_units"] = f"A request may run at most {MAX_CONTROLNETS} ControlNets."
        for unit in self.controlnet_units:
            for name, value in (("scale", unit.scale), ("start", unit.start), ("end", unit.end)):
                low, high = FLOAT_RANGES[
                    "controlnet_conditioning_scale" if name == "scale" else "control_guidance_end"
                ]
                if not (isinstance(value, int | float) and math.isfinite(value)):
                    found["controlnet_units"] = f"A unit's {name} must be a finite number."
                elif not low <= value <= high:
                    found["controlnet_units"] = (
                        f"A unit's {name} must be between {low:g} and {high:g}."
                    )
            if not unit.model:
                found["controlnet_units"] = "Every ControlNet unit needs a model."
        timesteps = denoising_timesteps(
            self.scheduler, self.steps, self.strength if self.uses_strength else None
        )
        for start, end in self.control_windows():
            window = control_window_problem(start, end, timesteps)
            if window:
                found["control_guidance_end"] = window
        types = [(self.controlnet_type, ""), *((u.type, u.mask) for u in self.controlnet_units)]
        # An inpaint ControlNet's map is its picture with the masked pixels at -1: the worker
        # makes it from the unit's mask or else the request's (generation/engine/control.py).
        if any(kind == "inpaint" and not (mask or self.mask_image) for kind, mask in types):
            found["mask_image"] = (
                "An inpaint ControlNet needs a mask_image (white: the area to repaint); send "
                "one, or choose another controlnet_type."
            )
        if self.kind == "controlnet-inpaint" and self.inpaint_full_res:
            found["inpaint_full_res"] = (
                "Inpainting only the masked area is not offered with ControlNet."
            )
        return found

    def control_windows(self) -> list[tuple[float, float]]:
        """(start, end) of every ControlNet of the request, the controlnet_* one first."""
        return [
            (self.control_guidance_start, self.control_guidance_end),
            *((unit.start, unit.end) for unit in self.controlnet_units),
        ]

    def input_images(self) -> dict[str, str]:
        """Every input image the request names: {the worker's name for it: storage name}."""
        return input_images(self.to_params())


def denoising_timesteps(scheduler: str, steps: int, strength: float | None = None) -> int:
    """How many timesteps diffusers' denoising loop runs (its len(timesteps)); 0: none.

    `strength` is an img2img pass's: diffusers then runs the last int(steps × strength) steps.
    """
    runs = steps if strength is None else min(int(steps * strength), steps)
    if runs < 1:
        return 0
    order = 2 if scheduler in TWO_TIMESTEPS_A_STEP else 1
    total = order * steps - order + 1
    if scheduler in ONE_MORE_TIMESTEP and steps > 1:
        total += 1
    # img2img skips the first steps - runs steps, each `order` timesteps (diffusers' get_timesteps).
    return total - (steps - runs) * order


def control_window_problem(start: float, end: float, timesteps: int) -> str | None:
    """Why a ControlNet guidance window (start, end) acts on none of `timesteps` (None: it acts).

    diffusers' ControlNet pipelines keep a ControlNet at timestep i of n only when i / n >= start
    and (i + 1) / n <= end (their `controlnet_keep`); a window holding no such step is refused,
    as it would run the job as if no ControlNet were asked for.
    """
    if start >= end:
        return "A ControlNet's guidance end must be greater than its start."
    if timesteps < 1:
        return None  # no step runs at all: the strength's own check says so
    n = timesteps
    first = next((i for i in range(n) if not i / n < start), None)
    if first is not None and not (first + 1) / n > end:
        return None
    if first is None:
        # Rounded down, so the suggested start keeps the last step; that step needs end 1.
        change = f"lower the start to at most {math.floor((n - 1) / n * 1000) / 1000:g}"
        change += "" if end >= 1 else " and raise the end to 1"
    else:
        change = f"raise the end to at least {math.ceil((first + 1) / n * 1000) / 1000:g}"
    return (
        f"A ControlNet guidance window from {start:g} to {end:g} holds none of the job's {n} "
        f"denoising steps (step i of {n} runs the ControlNet only when i/{n} >= start and "
        f"(i+1)/{n} <= end), so the ControlNet would never act; {change}."
    )


def input_images(params: dict[str, Any]) -> dict[str, str]:
    """The input images of stored params (`to_params` output): {name: storage name}.

    Besides IMAGE_INPUTS, each ControlNet unit's image and mask, as "controlnet_units.<i>.image"
    and "controlnet_units.<i>.mask".
    """
    found = {name: params[name] for name in IMAGE_INPUTS if params.get(name)}
    units = params.get("controlnet_units") or ()
    for index, unit in enumerate(units if isinstance(units, list | tuple) else ()):
        for part in ("image", "mask"):
            value = unit.get(part) if isinstance(unit, dict) else None
            if value and isinstance(value, str):
                found[f"controlnet_units.{index}.{part}"] = value
    return found


@dataclass
class GenerationResult:
    """What the engine returns: PIL images plus per-image facts."""

    images: list[Any]
    seeds: list[int]
    nsfw: list[bool] = field(default_factory=list)
    inference_seconds: float = 0.0
