"""The engine alone (no Django request, no HTTP): cold, load and warm times per kind, and the cache.

Builds the demo models it needs (into a temporary folder unless --models-dir is given) and calls
`generation.engine.runner.generate` directly, safety checker off. Figures, medians of --repeats:

- per kind (sd15 text2img and img2img, inpaint, sdxl text2img, sd15 + ControlNet, and the x4
  upscaler from size/2 to 2 x size, 64 -> 256 by default): `cold_s`, the first job in a fresh
  cache, load included (one run: a model is cold once); `load_s`, `cache.get` of the models the
  job needs in a fresh cache; `warm_s`, the job on a cache that already holds them. Kinds take
  turns, so drift on a noisy host hits them all alike.
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
        [--preview-every 5]
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
CONTROLNET = "demo-controlnet-canny"
SWITCH_MODELS = ("demo-sd15", "demo-sdxl")


@dataclass(frozen=True)
class Kind:
    """One measured job: a model, the request fields that make it that kind, the add-ons used."""

    name: str
    model_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    addon_ids: tuple[str, ...] = ()


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
        {
            "kind": "controlnet",
            "init_image": "init",
            "controlnet_model": CONTROLNET,
            "controlnet_type": "canny",
        },
        (CONTROLNET,),
    ),
    Kind("upscale-x4", "demo-upscaler-x4", {"kind": "upscale", "init_image": "init", "scale": 4}),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def build_models(models_dir: Path) -> dict[str, Any]:
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

    needed = {kind.model_id for kind in KINDS} | {a for kind in KINDS for a in kind.addon_ids}
    refs = {}
    for model_id, family, base, _description, build in DEMO_MODELS:
        if model_id in needed:
            target = models_dir / model_id
            log(f"{model_id}: {'built' if build(str(target)) else 'already built'} in {target}")
            refs[model_id] = ModelRef(model_id, str(target), str(family), str(base))
    return refs


def input_images(size: int) -> dict[str, Any]:
    """An init image with edges (so canny finds some) and a mask over its middle."""
    from PIL import Image, ImageDraw

    init = Image.new("RGB", (size, size), (70, 110, 160))
    draw = ImageDraw.Draw(init)
    draw.rectangle((size // 8, size // 2, size * 7 // 8, size - 1), fill=(90, 70, 40))
    draw.ellipse((size // 4, size // 8, size // 2, size * 3 // 8), fill=(240, 220, 120))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill=255)
    return {"init_image": init, "mask_image": mask}


class Bench:
    """Runs jobs of the configured size and steps on the built models."""

    def __init__(self, refs: dict[str, Any], size: int, steps: int) -> None:
        self.refs = refs
        self.size = size
        self.steps = steps
        self.images = input_images(size)
        self.small = {"init_image": self.images["init_image"].resize((size // 2, size // 2))}

    def cache(self, max_models: int | None = None) -> Any:
        from generation.engine.cache import PipelineCache

        return PipelineCache(max_models=max_models or len(self.refs))

    def job(
        self, kind: Kind, cache: Any, seed: int = 1000, samples: int = 1, previews: Any = None
    ) -> float:
        """Seconds for one generate() call of this kind, checked to return what it was asked."""
        from generation.engine.request import GenerationRequest
        from generation.engine.runner import generate

        upscale = kind.fields.get("kind") == "upscale"
        # An upscale request's width and height are the output's: 4 x its size/2 input.
        side = 2 * self.size if upscale else self.size
        req = GenerationRequest(
            prompt=PROMPT,
            model_id=kind.model_id,
            width=side,
            height=side,
            samples=samples,
            steps=self.steps,
            seed=seed,
            safety_checker=False,
            **kind.fields,
        )
        start = time.perf_counter()
        result = generate(
            req,
            self.refs[kind.model_id],
            addons={a: self.refs[a] for a in kind.addon_ids},
            images=self.small if upscale else self.images,
            cache=cache,
            progress=None,
            previews=previews,
        )
        elapsed = time.perf_counter() - start
        assert len(result.images) == samples, result
        assert result.images[0].size == (side, side), result.images[0].size
        return elapsed

    def load(self, kind: Kind) -> float:
        """Seconds to get the models a job of this kind needs into a fresh cache."""
        cache = self.cache()
        start = time.perf_counter()
        for model_id in (kind.model_id, *kind.addon_ids):
            cache.get(self.refs[model_id])
        return time.perf_counter() - start


def per_kind(bench: Bench, repeats: int) -> dict[str, dict[str, float]]:
    cold = {}
    for kind in KINDS:
        cold[kind.name] = bench.job(kind, bench.cache())
        log(f"cold {kind.name}: {cold[kind.name]:.3f} s")
    loads: dict[str, list[float]] = {kind.name: [] for kind in KINDS}
    warm: dict[str, list[float]] = {kind.name: [] for kind in KINDS}
    shared = bench.cache()
    for kind in KINDS:
        bench.job(kind, shared)
    for i in range(repeats):
        for kind in KINDS:
            loads[kind.name].append(bench.load(kind))
            warm[kind.name].append(bench.job(kind, shared, seed=1000 + i))
        log(f"warm round {i + 1}/{repeats}")
    return {
        kind.name: {
            "cold_s": round(cold[kind.name], 4),
            "load_s": median(loads[kind.name]),
            "warm_s": median(warm[kind.name]),
        }
        for kind in KINDS
    }


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


def batching(bench: Bench, repeats: int) -> dict[str, float]:
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
    args = parser.parse_args()
    if args.size % 16:
        parser.error("--size must be a multiple of 16")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pictor-bench-engine-") as tmp:
        refs = build_models(args.models_dir or Path(tmp))
        bench = Bench(refs, args.size, args.steps)
        # Process start-up (imports, torch's first kernels) is no model's cold start.
        bench.job(KINDS[0], bench.cache())
        kinds = per_kind(bench, args.repeats)
        switch = switching(bench, args.repeats)
        batch = batching(bench, args.repeats)
        preview = previewing(bench, args.repeats, args.preview_every, args.models_dir or Path(tmp))

    import diffusers
    import torch

    from generation.engine.loader import pick_device

    log(f"total {time.perf_counter() - started:.1f} s")
    figures = {
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
        "kinds": kinds,
        "switch": switch,
        "batch": batch,
        "preview": preview,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
