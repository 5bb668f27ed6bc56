"""Platform overhead: a warm 256x256, 21-step job through the API vs the same diffusers call.

Starts the embedded stack (SQLite, ORM broker, local storage) in a temporary folder unless
DATABASE_URL / REDIS_URL / S3_* are set in the environment, and prints one JSON line.

    .venv/bin/python bench/overhead.py [--runs 7]
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
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
SIZE, STEPS, PROMPT = 256, 21, "a lighthouse on a cliff at dusk"


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


def api_times(runs: int, models_dir: Path, tmp: Path) -> list[float]:
    port = free_port()
    env = {
        **os.environ,
        "PICTOR_VAR_DIR": str(tmp),
        "PICTOR_MODELS_DIR": str(models_dir),
        "PICTOR_SYNC_WAIT": "60",
        "HF_HUB_OFFLINE": "1",
    }
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "createcachetable")
    manage(env, "build_demo_models")
    key = manage(env, "apikey", "create", "--org", "bench", "--plan", "premium").strip()
    log = open(tmp / "stack.log", "wb")  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=log
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "sdplatform.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--threads",
                "4",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        ),
    ]
    url = f"http://127.0.0.1:{port}/api/v3/text2img"
    try:
        for _ in range(600):
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        times = []
        for i in range(runs + 2):  # the first two warm the pipeline cache and the safety checker
            body = {
                "key": key,
                "prompt": PROMPT,
                "width": SIZE,
                "height": SIZE,
                "num_inference_steps": STEPS,
                "seed": 1000 + i,
            }
            start = time.perf_counter()
            data = requests.post(url, json=body, timeout=120).json()
            elapsed = time.perf_counter() - start
            assert data["status"] == "success", data
            if i >= 2:
                times.append(elapsed)
        return times
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def direct_times(runs: int, model_path: Path) -> list[float]:
    import torch
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

    pipe = StableDiffusionPipeline.from_pretrained(
        str(model_path), local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    times = []
    for i in range(runs + 2):
        generator = torch.Generator("cpu").manual_seed(1000 + i)
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(
                PROMPT,
                width=SIZE,
                height=SIZE,
                num_inference_steps=STEPS,
                guidance_scale=7.5,
                generator=generator,
            )
        if i >= 2:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pictor-bench-") as tmp:
        models_dir = Path(os.environ.get("PICTOR_MODELS_DIR", ROOT / "var" / "models"))
        api = api_times(args.runs, models_dir, Path(tmp))
        direct = direct_times(args.runs, models_dir / "demo-sd15")
    api_median, direct_median = statistics.median(api), statistics.median(direct)
    print(
        json.dumps(
            {
                "bench": "overhead",
                "job": f"{SIZE}x{SIZE}, {STEPS} steps, demo-sd15",
                "runs": args.runs,
                "api_median_s": round(api_median, 4),
                "direct_median_s": round(direct_median, 4),
                "ratio": round(api_median / direct_median, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
