"""Platform overhead: a warm 256x256, 21-step job through the API vs the same diffusers call.

For each queue configuration (embedded: SQLite + ORM broker; redis: Redis broker and cache) it
starts web (gunicorn) and one worker in a temporary folder, then alternates API jobs (submit to
stored success, safety checker on as by default, and off) with the same diffusers call made
directly on the same model folder, so drift on a noisy host hits both alike. Prints one JSON line.

    .venv/bin/python bench/overhead.py [--runs 9] [--configs embedded,redis] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
SIZE, STEPS, PROMPT = 256, 21, "a lighthouse on a cliff at dusk"
WARMUP = 2
CONFIGS = {
    "embedded": {},
    "redis": {"REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")},
}


@dataclass
class Running:
    base_url: str
    key: str
    job: Callable[[int, bool], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@contextmanager
def stack(
    models_dir: Path,
    extra_env: dict[str, str],
    plan: str = "premium",
    threads: int = 4,
    size: int = SIZE,
) -> Iterator[Running]:
    """A running web + worker: its URL, a key on `plan`, and a function that times one API job."""
    with tempfile.TemporaryDirectory(prefix="pictor-bench-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "PICTOR_VAR_DIR": tmp,
            "PICTOR_MODELS_DIR": str(models_dir),
            "PICTOR_SYNC_WAIT": "60",
            "HF_HUB_OFFLINE": "1",
            **extra_env,
        }
        if "REDIS_URL" in extra_env:
            import redis

            redis.Redis.from_url(extra_env["REDIS_URL"]).flushdb()
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "createcachetable")
        manage(env, "build_demo_models")
        key = manage(env, "apikey", "create", "--org", "bench", "--plan", plan).strip()
        log = open(Path(tmp) / "stack.log", "wb")  # noqa: SIM115
        procs = [
            subprocess.Popen(
                # The worker command production runs (make run, deploy/), not bare qcluster.
                [sys.executable, "manage.py", "worker"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "sdplatform.wsgi"]
                + ["--bind", f"127.0.0.1:{port}", "--threads", str(threads)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            ),
        ]
        base = f"http://127.0.0.1:{port}"

        def job(seed: int, safety: bool) -> float:
            body = {
                "key": key,
                "prompt": PROMPT,
                "width": size,
                "height": size,
                "num_inference_steps": STEPS,
                "seed": seed,
                "safety_checker": safety,
            }
            start = time.perf_counter()
            data = requests.post(f"{base}/api/v3/text2img", json=body, timeout=120).json()
            elapsed = time.perf_counter() - start
            assert data["status"] == "success", data
            return elapsed

        try:
            for _ in range(600):
                try:
                    requests.get(f"{base}/healthz", timeout=1)
                    break
                except (requests.ConnectionError, requests.Timeout):  # still starting
                    time.sleep(0.1)
            yield Running(base, key, job)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)


def direct_pipeline(model_path: Path, size: int = SIZE) -> Callable[[int], float]:
    """The same call made straight on diffusers, as a user of the library would."""
    import torch
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

    pipe = StableDiffusionPipeline.from_pretrained(
        str(model_path), local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def call(seed: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(
                PROMPT,
                width=size,
                height=size,
                num_inference_steps=STEPS,
                guidance_scale=7.5,
                generator=torch.Generator("cpu").manual_seed(seed),
            )
        return time.perf_counter() - start

    return call


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--configs", default="embedded,redis")
    parser.add_argument("--size", type=int, default=SIZE, help="output width and height")
    args = parser.parse_args()
    models_dir = Path(os.environ.get("PICTOR_MODELS_DIR", ROOT / "var" / "models"))
    direct = direct_pipeline(models_dir / "demo-sd15", args.size)
    figures: dict[str, object] = {
        "bench": "overhead",
        "job": f"{args.size}x{args.size}, {STEPS} steps, UniPC, demo-sd15",
        "runs": args.runs,
    }
    for name in args.configs.split(","):
        api, api_unsafe, plain = [], [], []
        with stack(models_dir, CONFIGS[name], size=args.size) as running:
            job = running.job
            for i in range(WARMUP + args.runs):
                seed = 1000 + i
                timings = (job(seed, True), job(seed, False), direct(seed))
                if i >= WARMUP:
                    for series, value in zip((api, api_unsafe, plain), timings, strict=True):
                        series.append(value)
        figures[name] = {
            "api_median_s": median(api),
            "api_no_safety_median_s": median(api_unsafe),
            "direct_median_s": median(plain),
            "ratio": round(statistics.median(api) / statistics.median(plain), 3),
            "ratio_no_safety": round(statistics.median(api_unsafe) / statistics.median(plain), 3),
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
