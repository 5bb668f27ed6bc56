"""Throughput with batching across requests off and on: many clients, one real worker.

For each mode (PICTOR_MAX_BATCH_IMAGES=1, and the given value, "auto" by default) it starts web
(gunicorn) and one worker with bench/overhead.py's `stack` (Redis broker and cache, one Redis
database per mode), both at once. It times --lone jobs run one at a time (the lone-job cost of
batching), taking turns between the modes so that the host's drift falls on both, then, one mode
after the other while the other stack idles, has --clients threads each
submit single-image 256x256, 21-step jobs on demo-sd15 back to back for --seconds, waiting for
each to succeed (with --kind inpaint, each job repaints a square of one shared picture; with
--kind controlnet, each follows the canny map of one shared picture).
Images/s count the images finished from the first submit to the last answer (jobs in flight at
the deadline are waited for). Prints one JSON line: images/s per mode and the ratio, p50/p95
latency (submit to success) per mode, and the lone-job ratio (the median, over the turns, of a
turn's on / off). A lone job's time is also split into the worker's generation (its
generationTime: the diffusers call and storing) and the rest (submit, pickup, claim, answer),
where batching adds its work for a lone job: looking for companions. Last, `unet_ceiling`: the
UNet's own gain from a batch of that many images, with the share of a lone step spent in
attention and the gains of attention and of the rest apart. Both stacks take the worker
settings from the environment (PICTOR_DTYPE=bf16 runs both in bf16, and the UNet's figure too).

    .venv/bin/python bench/throughput.py [--seconds 60] [--clients 16] [--lone 15] [--on auto]
        [--kind text2img|inpaint|controlnet]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import CONFIGS, PROMPT, ROOT, SIZE, STEPS, Running, stack  # noqa: E402

# A key on this plan runs 16 jobs at once and has no daily image cap.
PLAN = "enterprise"
ENDPOINTS = {
    "text2img": "/api/v3/text2img",
    "inpaint": "/api/v3/inpaint",
    "controlnet": "/api/v5/controlnet",
}


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def inputs(kind: str) -> dict[str, str]:
    """The job's own fields: an inpaint's picture (a gradient) and mask (a white square to
    repaint), a ControlNet's picture that its canny map is computed from; base64 PNGs."""
    picture = Image.linear_gradient("L").resize((SIZE, SIZE)).convert("RGB")
    square = (SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4)
    if kind == "controlnet":
        ImageDraw.Draw(picture).rectangle(square, fill=(200, 40, 40))
        return {
            "init_image": png_base64(picture),
            "controlnet_model": "demo-controlnet-canny",
            "controlnet_type": "canny",
        }
    if kind == "inpaint":
        mask = Image.new("L", (SIZE, SIZE))
        ImageDraw.Draw(mask).rectangle(square, 255)
        return {"init_image": png_base64(picture), "mask_image": png_base64(mask)}
    return {}


def submit_and_wait(running: Running, seed: int, kind: str = "text2img") -> tuple[float, float]:
    """One single-image job through the ModelsLab API, submit to success: its latency, and the
    worker's generationTime within it."""
    body = {
        **inputs(kind),
        "key": running.key,
        "prompt": f"{PROMPT}, take {seed}",
        "width": SIZE,
        "height": SIZE,
        "num_inference_steps": STEPS,
        "seed": seed,
        "samples": 1,
    }
    start = time.perf_counter()
    data = requests.post(f"{running.base_url}{ENDPOINTS[kind]}", json=body, timeout=900).json()
    while data.get("status") == "processing":
        time.sleep(0.25)
        fetch = f"{running.base_url}/api/v3/fetch/{data['id']}"
        data = requests.post(fetch, json={"key": running.key}, timeout=60).json()
    assert data["status"] == "success", data
    return time.perf_counter() - start, data["generationTime"]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


@dataclass
class Lone:
    """A stack's lone jobs: each turn's latency, and the medians."""

    turns: list[float]
    median_s: float
    generation_s: float
    rest_ms: float


def lone_jobs(stacks: dict[str, Running], count: int, kind: str) -> dict[str, Lone]:
    """`count` jobs per stack, each alone on the host, the stacks in turn.

    Run one mode after the other, the lone medians of two identical stacks differed by up to
    40% on a noisy host; taken in turn (and in alternating order) they share its drift.
    """
    for running in stacks.values():
        submit_and_wait(running, 1, kind)  # warm: the first job may still load the model
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in stacks}
    names = list(stacks)
    for i in range(count):
        for name in names if i % 2 == 0 else reversed(names):
            times[name].append(submit_and_wait(stacks[name], 10 + i, kind))
    return {
        name: Lone(
            turns=[latency for latency, _ in values],
            median_s=round(statistics.median(latency for latency, _ in values), 3),
            generation_s=round(statistics.median(generation for _, generation in values), 3),
            rest_ms=round(statistics.median(1000 * (lat - gen) for lat, gen in values), 1),
        )
        for name, values in times.items()
    }


def paired_ratio(on: list[float], off: list[float]) -> float:
    """The median of each turn's on / off: a drift of the host between turns cancels out."""
    return round(statistics.median(a / b for a, b in zip(on, off, strict=True)), 3)


def measure(running: Running, seconds: float, clients: int, kind: str) -> dict[str, float]:
    """Images/s and latency of `clients` closed-loop clients."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def client(number: int) -> None:
        seed = 1000 + number * 100_000
        while time.perf_counter() < deadline:
            elapsed, _generation = submit_and_wait(running, seed, kind)
            seed += 1
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "images": len(latencies),
        "images_per_s": round(len(latencies) / wall, 4),
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
    }


def unet_ceiling(
    model_path: Path, images: int, dtype: str, repeats: int = 9
) -> dict[str, float | str]:
    """The UNet's own gain from batching: seconds per image of one call at 1 image vs `images`,
    in the worker's dtype (PICTOR_DTYPE as it resolves on this host).

    About what batching across requests can give on this host at this size, since the UNet is
    most of a job (the rest batches too, so the bench's ratio can stand a little above it): one
    denoising step with classifier-free guidance (two rows per image). The step's attention
    (every scaled_dot_product_attention call, timed where diffusers makes it) is reported apart
    from the rest, with its share of a lone step and each part's own gain: attention whose work
    grows with the images at the same speed gains nothing from a batch, and bounds the whole.
    """
    import torch
    import torch.nn.functional as F
    from diffusers import UNet2DConditionModel

    from generation.engine.device import default_torch_threads, torch_dtype

    torch.set_num_threads(default_torch_threads(workers=1))  # as the bench's one worker has
    weights = torch_dtype(dtype)
    unet = UNet2DConditionModel.from_pretrained(
        str(model_path / "unet"), local_files_only=True, dtype=weights
    )
    assert unet.dtype == weights, (unet.dtype, dtype)  # the figure is this dtype's
    side = SIZE // 8
    context = torch.randn(1, 77, unet.config.cross_attention_dim, dtype=weights)
    inputs = {}
    for batch in (1, images):
        embeds = context.repeat(2 * batch, 1, 1)
        latents = torch.randn(2 * batch, unet.config.in_channels, side, side, dtype=weights)
        inputs[batch] = (latents, embeds)
    times: dict[int, list[float]] = {batch: [] for batch in inputs}
    attention: dict[int, list[float]] = {batch: [] for batch in inputs}
    in_attention = 0.0  # seconds of the step being timed
    sdpa = F.scaled_dot_product_attention

    def timed_sdpa(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_attention
        start = time.perf_counter()
        try:
            return sdpa(*args, **kwargs)
        finally:  # a CPU kernel has finished when it returns
            in_attention += time.perf_counter() - start

    with torch.inference_mode():
        for latents, embeds in inputs.values():
            unet(latents, 500, encoder_hidden_states=embeds)  # warm
        F.scaled_dot_product_attention = timed_sdpa
        try:
            # In turns, medians: a busy moment of the host falls on one step, not on one size.
            for _ in range(repeats):
                for batch, (latents, embeds) in inputs.items():
                    in_attention = 0.0
                    start = time.perf_counter()
                    unet(latents, 500, encoder_hidden_states=embeds)
                    times[batch].append((time.perf_counter() - start) / batch)
                    attention[batch].append(in_attention / batch)
        finally:
            F.scaled_dot_product_attention = sdpa
    per_image = {batch: statistics.median(values) for batch, values in times.items()}
    in_attn = {batch: statistics.median(values) for batch, values in attention.items()}
    # diffusers calls attention through torch.nn.functional; a version that stops doing so
    # must not report an attention-free UNet.
    assert all(in_attn.values()), "no attention call was timed"
    rest = {batch: per_image[batch] - in_attn[batch] for batch in inputs}
    return {
        "images": images,
        "dtype": dtype,
        "step_ms_per_image_alone": round(per_image[1] * 1000, 2),
        "step_ms_per_image_batched": round(per_image[images] * 1000, 2),
        "gain": round(per_image[1] / per_image[images], 3),
        "attention_share_alone": round(in_attn[1] / per_image[1], 3),
        "attention_gain": round(in_attn[1] / in_attn[images], 3),
        "rest_gain": round(rest[1] / rest[images], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--lone", type=int, default=15)
    parser.add_argument("--on", default="auto", help="PICTOR_MAX_BATCH_IMAGES when on")
    parser.add_argument("--kind", default="text2img", choices=sorted(ENDPOINTS))
    args = parser.parse_args()
    models_dir = Path(os.environ.get("PICTOR_MODELS_DIR", ROOT / "var" / "models"))
    figures: dict[str, object] = {
        "bench": "throughput",
        "job": f"{args.kind}, {SIZE}x{SIZE}, {STEPS} steps, UniPC, demo-sd15, 1 image",
        "clients": args.clients,
        "seconds": args.seconds,
        "batch_images_on": args.on,
    }
    modes = {"off": "1", "on": args.on}
    # Each stack its own Redis database: one broker queue would hand its jobs to both workers.
    redis_base, redis_db = CONFIGS["redis"]["REDIS_URL"].rsplit("/", 1)
    with ExitStack() as stacks:
        running = {}
        for offset, (name, batch_images) in enumerate(modes.items()):
            env = {
                "REDIS_URL": f"{redis_base}/{int(redis_db) + offset}",
                "PICTOR_MAX_BATCH_IMAGES": batch_images,
                # Clients block for their image (polling past this), and nothing throttles them.
                "PICTOR_SYNC_WAIT": "600",
                "PICTOR_POLL_RATE_PER_MINUTE": "1000000",
            }
            running[name] = stacks.enter_context(
                stack(models_dir, env, plan=PLAN, threads=args.clients + 4)
            )
        lone = lone_jobs(running, args.lone, args.kind)
        for name in modes:
            figures[name] = {
                **measure(running[name], args.seconds, args.clients, args.kind),
                "lone_median_s": lone[name].median_s,
                "lone_generation_s": lone[name].generation_s,
                "lone_rest_ms": lone[name].rest_ms,
            }
            print(f"{name}: {figures[name]}", file=sys.stderr)
    off, on = figures["off"], figures["on"]
    assert isinstance(off, dict) and isinstance(on, dict)
    figures["ratio"] = round(on["images_per_s"] / off["images_per_s"], 3)
    figures["lone_ratio"] = paired_ratio(lone["on"].turns, lone["off"].turns)
    # What batching adds to a lone job's time outside the diffusers call (looking for companions).
    figures["lone_rest_added_ms"] = round(on["lone_rest_ms"] - off["lone_rest_ms"], 1)
    # What the hardware allows: the UNet is most of a job, so the throughput ratio stays near its
    # own batching gain (a little above: the rest of a job batches too).
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdplatform.settings")
    import django

    django.setup()
    from generation.batching import CPU_BATCH_IMAGES
    from generation.engine.loader import resolved_device

    batched = CPU_BATCH_IMAGES if args.on == "auto" else int(args.on)
    dtype = resolved_device().dtype  # the workers' too: they run with this environment
    figures["unet_ceiling"] = unet_ceiling(models_dir / "demo-sd15", batched, dtype)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
