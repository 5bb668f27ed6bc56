"""The engine alone (no Django request, no HTTP): cold, load and warm times per kind, and the cache.

Builds the demo models it needs (into a temporary folder unless --models-dir is given) and calls
`generation.engine.runner.generate` directly, safety checker off. Figures, medians of --repeats:

- per kind (sd15 text2img and img2img, inpaint, sdxl text2img, sd15 + ControlNet, and the x4
  upscaler from size/2 to 2 x size, 64 -> 256 by default): `cold_s`, the first job in a fresh
  cache, load included (one run: a model is cold once); `load_s`, `cache.get` of the models the
  job needs in a fresh cache; `warm_s`, the job on a cache that already holds them; `ratio`,
  warm_s over sd15-text2img's. Kinds take turns, so drift on a noisy host hits them all alike.
  Then one kind per request option: a long A1111-weighted prompt with BREAK, IP-Adapter, two
  ControlNets (canny + tile), ControlNet img2img and inpaint, the SDXL refiner (switch at 0.8),
  PAG, a 2:1 panorama, variation seeds, tiling, an outpaint (an inpaint of a grown canvas) and
  the LCM demo at 4 steps; `base_ratio` is warm_s over the kind the option is added to (`base`).
- `switch`: demo-sd15 and demo-sdxl text2img in the order A A B B A A B B …, so every other job
  comes right after a job on the other model and the rest right after one on the same model;
  figures are per round (one A job + one B job). On a cache holding both (`switch_s` vs
  `same_model_s`) a switch loads nothing; with `PipelineCache(max_models=1)` (`evict_switch_s`)
  every switch reloads, which is what the cache saves.
- `batch`: one request with samples=4 vs four requests with samples=1 (seeds s … s+3).
- `preview`: sd15 text2img with live previews every --preview-every steps (the linear
  approximation, and the demo tiny decoder) vs none; `ratio` is on/off (the budget is < 1.1).

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/engine.py [--repeats 5] [--size 128] [--steps 21] [--models-dir DIR]
        [--preview-every 5] [--kinds sd15-pag,sdxl-refiner,...] [--sections kinds,switch,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before diffusers or transformers are imported: nothing may reach for the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdplatform.settings")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "a lighthouse on a cliff at dusk"
# A1111 syntax past one 77-token window (the demo tokenizer reads one token per character):
# weights up and down, and a BREAK that starts a new window.
LONG_PROMPT = (
    "a (lighthouse:1.3) on a [cliff] at dusk, "
    + "calm sea and ((grey rocks)) under a wide sky, " * 3
    + "BREAK a (bright red moon:1.2) over the (water:0.8)"
)
CONTROLNET = "demo-controlnet-canny"
SWITCH_MODELS = ("demo-sd15", "demo-sdxl")
# The reference every kind's warm time is divided by (its `ratio`).
REFERENCE = "sd15-text2img"
# The outpaint endpoint's strength; its canvas grows by a quarter of --size on each side.
OUTPAINT_STRENGTH = 0.9
OUTPAINT_OVERLAP = 8
# A few-step checkpoint at the steps it is meant for (the web tier's default for it).
FEW_STEPS = 4


@dataclass(frozen=True)
class Kind:
    """One measured job: a model, the request fields that make it that kind, the add-ons used.

    `inputs` names the set of input images (Bench.inputs); `base`, when set, is the kind this one
    adds an option to, and its warm time is divided by that kind's too (`base_ratio`).
    """

    name: str
    model_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    addon_ids: tuple[str, ...] = ()
    inputs: str = "plain"
    base: str = ""


CANNY = {"controlnet_model": CONTROLNET, "controlnet_type": "canny"}
KINDS = (
    Kind("sd15-text2img", "demo-sd15"),
    Kind("sd15-img2img", "demo-sd15", {"kind": "img2img", "init_image": "init"}),
    Kind(
        "sd15-inpaint",
        "demo-sd15-inpaint",
        {"kind": "inpaint", "init_image": "init", "mask_image": "mask"},
    ),
    Kind("sdxl-text2img", "demo-sdxl"),
    Kind(
        "sd15-controlnet",
        "demo-sd15",
        {"kind": "controlnet", "init_image": "init", **CANNY},
        (CONTROLNET,),
    ),
    Kind(
        "upscale-x4",
        "demo-upscaler-x4",
        {"kind": "upscale", "init_image": "init", "scale": 4},
        inputs="small",
    ),
    # The options added since: each one request field (or a few) on a kind above.
    Kind("sd15-long-weighted-prompt", "demo-sd15", {"prompt": LONG_PROMPT}, base=REFERENCE),
    Kind(
        "sd15-ip-adapter",
        "demo-sd15",
        {"ip_adapter": "demo-ip-adapter", "ip_adapter_scale": 0.6, "ip_adapter_image": "face"},
        ("demo-ip-adapter",),
        base=REFERENCE,
    ),
    Kind(
        "sd15-multi-controlnet",
        "demo-sd15",
        {
            "kind": "controlnet",
            "init_image": "init",
            **CANNY,
            "controlnet_units": (("demo-controlnet-tile", "tile"),),
        },
        (CONTROLNET, "demo-controlnet-tile"),
        base="sd15-controlnet",
    ),
    Kind(
        "sd15-controlnet-img2img",
        "demo-sd15",
        {"kind": "controlnet-img2img", "init_image": "init", **CANNY},
        (CONTROLNET,),
        base="sd15-img2img",
    ),
    Kind(
        "sd15-controlnet-inpaint",
        "demo-sd15",
        {
            "kind": "controlnet-inpaint",
            "init_image": "init",
            "mask_image": "mask",
            "controlnet_model": "demo-controlnet-inpaint",
            "controlnet_type": "inpaint",
        },
        ("demo-controlnet-inpaint",),
        base="sd15-controlnet-img2img",
    ),
    Kind(
        "sdxl-refiner",
        "demo-sdxl",
        {"refiner": "demo-sdxl-refiner", "refiner_switch_at": 0.8},
        ("demo-sdxl-refiner",),
        base="sdxl-text2img",
    ),
    Kind("sd15-pag", "demo-sd15", {"pag_scale": 3.0}, base=REFERENCE),
    # Twice as wide as tall: MultiDiffusion denoises overlapping square windows across it.
    Kind("sd15-panorama-2x1", "demo-sd15", {"panorama": True}, inputs="wide", base=REFERENCE),
    Kind(
        "sd15-variation-seed",
        "demo-sd15",
        {"subseed": 2000, "subseed_strength": 0.5},
        base=REFERENCE,
    ),
    Kind("sd15-tiling", "demo-sd15", {"tiling": True}, base=REFERENCE),
    Kind(
        "sd15-outpaint",
        "demo-sd15-inpaint",
        {
            "kind": "inpaint",
            "init_image": "canvas",
            "mask_image": "border",
            "strength": OUTPAINT_STRENGTH,
            "inpaint_fill": "original",
        },
        inputs="outpaint",
        base="sd15-inpaint",
    ),
    Kind(
        "sd15-lcm-4-steps",
        "demo-sd15-lcm",
        {"steps": FEW_STEPS, "scheduler": "LCMScheduler"},
        base=REFERENCE,
    ),
)
KIND_NAMES = tuple(kind.name for kind in KINDS)
SECTIONS = ("kinds", "switch", "batch", "preview")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def build_models(models_dir: Path, kinds: tuple[Kind, ...] = KINDS) -> dict[str, Any]:
    """Build the demo models the kinds need; their ModelRefs by id, as a worker would get them."""
    import django
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Every fresh cache loads again: keep stderr to this script's own progress lines.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    # Only to read DEMO_MODELS, the table `build_demo_models` registers; nothing measured uses it.
    django.setup()
    from generation.engine.request import ModelRef
    from generation.management.commands.build_demo_models import DEMO_MODELS

    # The switch section runs both of its models whatever --kinds keeps.
    needed = {kind.model_id for kind in kinds} | {a for kind in kinds for a in kind.addon_ids}
    needed |= set(SWITCH_MODELS)
    refs = {}
    for model_id, family, base, _description, build in DEMO_MODELS:
        if model_id in needed:
            target = models_dir / model_id
            log(f"{model_id}: {'built' if build(str(target)) else 'already built'} in {target}")
            refs[model_id] = ModelRef(model_id, str(target), str(family), str(base))
    return refs


def input_images(size: int) -> dict[str, dict[str, Any]]:
    """The input image sets kinds name: by set, the images by request field.

    "plain": an init image with edges (so canny finds some), a mask over its middle and an
    image prompt for the IP-Adapter; "small": the init at size/2 (the x4 upscaler's input);
    "wide": nothing, a 2:1 text2img; "outpaint": the init at size/2 centred on a size x size
    canvas, edges stretched outwards, and the mask of the new border (as the outpaint endpoint).
    """
    from PIL import Image, ImageDraw

    from generation import editing

    init = Image.new("RGB", (size, size), (70, 110, 160))
    draw = ImageDraw.Draw(init)
    draw.rectangle((size // 8, size // 2, size * 7 // 8, size - 1), fill=(90, 70, 40))
    draw.ellipse((size // 4, size // 8, size // 2, size * 3 // 8), fill=(240, 220, 120))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill=255)
    face = Image.new("RGB", (size, size), (200, 30, 30))
    face.paste((20, 200, 220), (size // 2, 0, size, size))
    small = init.resize((size // 2, size // 2))
    sides = editing.Sides.centred(small.size, (size, size))
    return {
        "plain": {"init_image": init, "mask_image": mask, "ip_adapter_image": face},
        "small": {"init_image": small},
        "wide": {},
        "outpaint": {
            "init_image": editing.extended(small, sides),
            "mask_image": editing.border_mask(small.size, sides, OUTPAINT_OVERLAP),
        },
    }


class Bench:
    """Runs jobs of the configured size and steps on the built models."""

    def __init__(self, refs: dict[str, Any], size: int, steps: int) -> None:
        self.refs = refs
        self.size = size
        self.steps = steps
        self.inputs = input_images(size)

    def cache(self, max_models: int | None = None) -> Any:
        from generation.engine.cache import PipelineCache

        return PipelineCache(max_models=max_models or len(self.refs))

    def request(self, kind: Kind, seed: int, samples: int) -> Any:
        """The kind's request at the bench's size and steps (which its fields may change)."""
        from generation.engine.request import ControlNetUnit, GenerationRequest

        # An upscale request's width and height are the output's: 4 x its size/2 input.
        side = 2 * self.size if kind.fields.get("kind") == "upscale" else self.size
        fields: dict[str, Any] = {
            "prompt": PROMPT,
            "width": 2 * side if kind.inputs == "wide" else side,
            "height": side,
            "steps": self.steps,
            **kind.fields,
        }
        if "controlnet_units" in fields:
            fields["controlnet_units"] = tuple(
                ControlNetUnit(model=model, type=type_)
                for model, type_ in fields["controlnet_units"]
            )
        return GenerationRequest(
            model_id=kind.model_id, samples=samples, seed=seed, safety_checker=False, **fields
        )

    def job(
        self, kind: Kind, cache: Any, seed: int = 1000, samples: int = 1, previews: Any = None
    ) -> float:
        """Seconds for one generate() call of this kind, checked to return what it was asked."""
        from generation.engine.runner import generate

        req = self.request(kind, seed, samples)
        start = time.perf_counter()
        result = generate(
            req,
            self.refs[kind.model_id],
            addons={a: self.refs[a] for a in kind.addon_ids},
            images=self.inputs[kind.inputs],
            cache=cache,
            progress=None,
            previews=previews,
        )
        elapsed = time.perf_counter() - start
        assert len(result.images) == samples, result
        assert result.images[0].size == (req.width, req.height), result.images[0].size
        return elapsed

    def load(self, kind: Kind) -> float:
        """Seconds to get the models a job of this kind needs into a fresh cache."""
        cache = self.cache()
        start = time.perf_counter()
        for model_id in (kind.model_id, *kind.addon_ids):
            cache.get(self.refs[model_id])
        return time.perf_counter() - start


def per_kind(
    bench: Bench, repeats: int, kinds: tuple[Kind, ...]
) -> dict[str, dict[str, float | str]]:
    cold = {}
    for kind in kinds:
        cold[kind.name] = bench.job(kind, bench.cache())
        log(f"cold {kind.name}: {cold[kind.name]:.3f} s")
    loads: dict[str, list[float]] = {kind.name: [] for kind in kinds}
    warm: dict[str, list[float]] = {kind.name: [] for kind in kinds}
    shared = bench.cache()
    for kind in kinds:
        bench.job(kind, shared)
    for i in range(repeats):
        for kind in kinds:
            loads[kind.name].append(bench.load(kind))
            warm[kind.name].append(bench.job(kind, shared, seed=1000 + i))
        log(f"warm round {i + 1}/{repeats}")
    warm_s = {name: statistics.median(times) for name, times in warm.items()}
    figures: dict[str, dict[str, float | str]] = {}
    for kind in kinds:
        figures[kind.name] = {
            "cold_s": round(cold[kind.name], 4),
            "load_s": median(loads[kind.name]),
            "warm_s": median(warm[kind.name]),
            "ratio": round(warm_s[kind.name] / warm_s[REFERENCE], 3),
        }
        if kind.base:
            figures[kind.name]["base"] = kind.base
            figures[kind.name]["base_ratio"] = round(warm_s[kind.name] / warm_s[kind.base], 3)
    return figures


def selected(names: str | None) -> tuple[Kind, ...]:
    """The kinds --kinds names, with the reference and the bases their ratios need."""
    if not names:
        return KINDS
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    unknown = wanted - set(KIND_NAMES)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; known: {', '.join(KIND_NAMES)}")
    by_name = {kind.name: kind for kind in KINDS}
    wanted.add(REFERENCE)
    while True:
        bases = {by_name[name].base for name in wanted if by_name[name].base}
        if bases <= wanted:
            break
        wanted |= bases
    return tuple(kind for kind in KINDS if kind.name in wanted)


def switching(bench: Bench, repeats: int) -> dict[str, float | int]:
    """A A B B rounds on a cache holding both models, and on one that holds only one."""
    a, b = (Kind(f"{m}-text2img", m) for m in SWITCH_MODELS)
    both, one = bench.cache(max_models=2), bench.cache(max_models=1)
    after_switch: dict[int, list[float]] = {id(both): [], id(one): []}
    after_same: dict[int, list[float]] = {id(both): [], id(one): []}
    # One untimed round each; it ends on B, so each round's first A is a switch too.
    for cache in (both, one):
        for kind in (a, a, b, b):
            bench.job(kind, cache)
    loads_before = both.loads
    for i in range(repeats):
        for cache in (both, one):
            times = [bench.job(kind, cache, seed=1000 + i) for kind in (a, a, b, b)]
            after_switch[id(cache)].append(times[0] + times[2])
            after_same[id(cache)].append(times[1] + times[3])
        log(f"switch round {i + 1}/{repeats}")
    assert both.loads == loads_before == 2 and both.evictions == 0, (both.loads, both.evictions)
    switch_s = median(after_switch[id(both)])
    same_s = median(after_same[id(both)])
    evict_s = median(after_switch[id(one)])
    return {
        "models": "+".join(SWITCH_MODELS),
        "switch_s": switch_s,
        "same_model_s": same_s,
        "ratio": round(switch_s / same_s, 3),
        "loads": both.loads,
        "evict_switch_s": evict_s,
        "evict_same_model_s": median(after_same[id(one)]),
        "evict_ratio": round(evict_s / switch_s, 3),
        "evict_loads": one.loads,
    }


def batching(bench: Bench, repeats: int) -> dict[str, float | str]:
    """One request for 4 images vs 4 requests for 1, on a warm cache."""
    kind, cache = KINDS[0], bench.cache()
    bench.job(kind, cache, samples=4)
    batched, singles = [], []
    for i in range(repeats):
        seed = 1000 + 4 * i
        batched.append(bench.job(kind, cache, seed=seed, samples=4))
        singles.append(sum(bench.job(kind, cache, seed=seed + n) for n in range(4)))
        log(f"batch round {i + 1}/{repeats}")
    return {
        "model": kind.model_id,
        "samples4_s": median(batched),
        "four_single_s": median(singles),
        "ratio": round(statistics.median(batched) / statistics.median(singles), 3),
    }


def previewing(bench: Bench, repeats: int, every: int, models_dir: Path) -> dict[str, Any]:
    """sd15 text2img without previews, with approximated ones, with tiny-decoder ones."""
    from generation.engine.preview import Previewer, build_demo_decoder

    decoder = models_dir / "demo-taesd"
    build_demo_decoder(str(decoder))
    kind, cache = KINDS[0], bench.cache()
    shown: list[bytes] = []
    variants = {
        "off": None,
        "approx": Previewer(shown.append, every),
        "decoder": Previewer(shown.append, every, str(decoder)),
    }
    for previews in variants.values():
        bench.job(kind, cache, previews=previews)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, previews in variants.items():
            times[name].append(bench.job(kind, cache, seed=1000 + i, previews=previews))
        log(f"preview round {i + 1}/{repeats}")
    off = statistics.median(times["off"])
    return {
        "model": kind.model_id,
        "every": every,
        "previews_per_job": (bench.steps - 1) // every,
        "off_s": median(times["off"]),
        "approx_s": median(times["approx"]),
        "decoder_s": median(times["decoder"]),
        "ratio": round(statistics.median(times["approx"]) / off, 3),
        "decoder_ratio": round(statistics.median(times["decoder"]) / off, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="output width and height")
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--models-dir", type=Path, help="build/reuse the demo models here")
    parser.add_argument("--preview-every", type=int, default=5, help="steps between previews")
    parser.add_argument(
        "--kinds",
        help=f"comma-separated kinds to time (default all; {REFERENCE} and bases are added)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {', '.join(SECTIONS)})",
    )
    args = parser.parse_args()
    if args.size % 16:
        parser.error("--size must be a multiple of 16")
    sections = {name.strip() for name in args.sections.split(",") if name.strip()}
    if not sections <= set(SECTIONS):
        parser.error(f"--sections: unknown {sorted(sections - set(SECTIONS))}")
    try:
        chosen = selected(args.kinds)
    except ValueError as exc:
        parser.error(f"--kinds: {exc}")
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pictor-bench-engine-") as tmp:
        models_dir = args.models_dir or Path(tmp)
        refs = build_models(models_dir, chosen)
        bench = Bench(refs, args.size, args.steps)
        # Process start-up (imports, torch's first kernels) is no model's cold start.
        bench.job(KINDS[0], bench.cache())
        if "kinds" in sections:
            figures["kinds"] = per_kind(bench, args.repeats, chosen)
        if "switch" in sections:
            figures["switch"] = switching(bench, args.repeats)
        if "batch" in sections:
            figures["batch"] = batching(bench, args.repeats)
        if "preview" in sections:
            figures["preview"] = previewing(bench, args.repeats, args.preview_every, models_dir)

    import diffusers
    import torch

    from generation.engine.loader import pick_device

    log(f"total {time.perf_counter() - started:.1f} s")
    header = {
        "bench": "engine",
        "device": pick_device(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "size": args.size,
        "steps": args.steps,
        "repeats": args.repeats,
        "safety_checker": False,
        "upscale": f"{args.size // 2}->{2 * args.size}",
        "panorama": f"{2 * args.size}x{args.size}",
        "few_steps": FEW_STEPS,
        **figures,
    }
    print(json.dumps(header))


if __name__ == "__main__":
    main()
