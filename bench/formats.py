"""What each wire format adds: the same warm job through all five, as a client sees it.

Starts web (gunicorn) and one worker (the embedded configuration) like bench/overhead.py, then
in each round sends one 128x128, 21-step UniPC job through every format, in rotating order,
and times it from the request to the PNG bytes in hand (a URL answer includes fetching it).
Prints one JSON line: the median seconds per format and its ratio to ModelsLab's.

    .venv/bin/python bench/formats.py [--runs 9]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import requests
from overhead import ROOT, stack

SIZE, STEPS, PROMPT = 128, 21, "a lighthouse on a cliff at dusk"
WARMUP = 1
PNG = b"\x89PNG"


def png_from_url(url: str) -> bytes:
    return requests.get(url, timeout=60).content


def formats(base: str, key: str) -> dict[str, Callable[[int], bytes]]:
    """For each format, a function that makes one image with `seed` and returns its PNG."""
    bearer = {"Authorization": f"Bearer {key}"}
    common = {"prompt": PROMPT, "width": SIZE, "height": SIZE, "seed": 0}

    def modelslab(seed: int) -> bytes:
        body = {**common, "key": key, "seed": seed, "num_inference_steps": STEPS}
        data = requests.post(f"{base}/api/v3/text2img", json=body, timeout=120).json()
        assert data["status"] == "success", data
        return png_from_url(data["output"][0])

    def synapse(seed: int) -> bytes:
        body = {**common, "seed": seed, "steps": STEPS, "cfg_scale": 7.5, "sampler": "UniPC"}
        data = requests.post(f"{base}/sd/demo-sd15", json=body, headers=bearer, timeout=120)
        return base64.b64decode(data.json()["data"])

    def hyperbolic(seed: int) -> bytes:
        body = {
            **common,
            "model_name": "demo-sd15",
            "seed": seed,
            "steps": STEPS,
            "cfg_scale": 7.5,
            "sampler": "UniPC",
        }
        data = requests.post(
            f"{base}/v1/image/generation", json=body, headers=bearer, timeout=120
        ).json()
        return base64.b64decode(data["images"][0]["image"])

    def dan(seed: int) -> bytes:
        body = {**common, "seed": seed, "steps": STEPS, "cfg_scale": 7.5, "sampler_name": "UniPC"}
        data = requests.post(f"{base}/api/sd/txt2img", json=body, headers=bearer, timeout=120)
        task = data.json()["data"]
        assert task["status"] == 2, task
        return png_from_url(task["images"][0])

    def a1111(seed: int) -> bytes:
        body = {**common, "seed": seed, "steps": STEPS, "cfg_scale": 7.5, "sampler_name": "UniPC"}
        data = requests.post(
            f"{base}/sdapi/v1/txt2img", json=body, auth=("bench", key), timeout=120
        ).json()
        return base64.b64decode(data["images"][0])

    return {
        "modelslab": modelslab,
        "synapse": synapse,
        "hyperbolic": hyperbolic,
        "dan": dan,
        "a1111": a1111,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    models_dir = Path(os.environ.get("PICTOR_MODELS_DIR", ROOT / "var" / "models"))
    with stack(models_dir, {}) as running:
        base, key = running.base_url, running.key
        calls = formats(base, key)
        names = list(calls)
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(WARMUP + args.runs):
            # Rotate the order so no format always runs first (after an idle worker).
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                seed = 1000 * round_ + names.index(name)
                start = time.perf_counter()
                png = calls[name](seed)
                elapsed = time.perf_counter() - start
                assert png.startswith(PNG), name
                if round_ >= WARMUP:
                    times[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        json.dumps(
            {
                "bench": "formats",
                "size": SIZE,
                "steps": STEPS,
                "runs": args.runs,
                "median_s": {name: round(value, 3) for name, value in medians.items()},
                "ratio_to_modelslab": {
                    name: round(value / medians["modelslab"], 2) for name, value in medians.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
