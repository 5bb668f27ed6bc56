"""CPU threads next to a busy neighbour: torch's default thread count vs the worker's default.

torch starts with one thread per core in every process. A worker host runs PICTOR_WORKERS
processes, often next to other busy programs, and each of them then oversubscribes the cores;
the worker's default (generation/engine/device.py) gives each worker process its share of the
usable cores instead. This times a warm demo-sd15 job (64x64, 21 steps, through the engine's
runner) with each thread count, first alone and then while a neighbour spins on every core
(processes that stop by themselves after a bounded time). Prints one JSON line.

    .venv/bin/python bench/threads.py [--workers 2] [--runs 5] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# A neighbour never outlives this, even if the bench is killed before it can stop it.
NEIGHBOUR_MAX_SECONDS = 300.0


def spin(deadline: float) -> None:
    """Burn one core until the deadline (a busy neighbour's process)."""
    x = 0
    while time.time() < deadline:
        x += 1


@contextmanager
def busy_neighbour(cores: int, seconds: float) -> Iterator[None]:
    """`cores` spinning processes for at most `seconds`, stopped on exit."""
    context = multiprocessing.get_context("spawn")
    deadline = time.time() + min(seconds, NEIGHBOUR_MAX_SECONDS)
    procs = [context.Process(target=spin, args=(deadline,), daemon=True) for _ in range(cores)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # let them get going
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="worker processes on the host")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models-dir", help="a folder with demo-sd15 (built if missing)")
    args = parser.parse_args()

    import torch

    from generation.engine.cache import PipelineCache
    from generation.engine.demo import build_demo_sd15
    from generation.engine.device import default_torch_threads, usable_cpus
    from generation.engine.request import GenerationRequest
    from generation.engine.runner import generate

    torch_default = torch.get_num_threads()  # before anything sets it: torch's own choice
    computed = default_torch_threads(args.workers)
    with tempfile.TemporaryDirectory(prefix="pictor-threads-") as tmp:
        path = Path(args.models_dir or tmp) / "demo-sd15"
        build_demo_sd15(str(path))
        cache = PipelineCache(max_models=1)
        req = GenerationRequest(
            prompt="a lighthouse at dusk",
            model_id="demo-sd15",
            width=64,
            height=64,
            steps=21,
            seed=1,
            safety_checker=False,
        )

        def median_job(threads: int) -> float:
            torch.set_num_threads(threads)
            generate(req, str(path), cache=cache)  # warm at this thread count
            times = []
            for i in range(args.runs):
                start = time.perf_counter()
                generate(replace(req, seed=100 + i), str(path), cache=cache)
                times.append(time.perf_counter() - start)
            print(f"{threads} thread(s): {times}", file=sys.stderr, flush=True)
            return round(statistics.median(times), 4)

        settings = {"torch_default": torch_default, "computed_default": computed}
        alone = {name: median_job(threads) for name, threads in settings.items()}
        busy = {}
        for name, threads in settings.items():
            # A fresh neighbour for each: a slow first phase must not outlast the second's.
            with busy_neighbour(usable_cpus(), seconds=NEIGHBOUR_MAX_SECONDS):
                busy[name] = median_job(threads)
    print(
        json.dumps(
            {
                "bench": "threads",
                "job": "demo-sd15, 64x64, 21 steps, warm",
                "usable_cpus": usable_cpus(),
                "workers": args.workers,
                "threads": settings,
                "runs": args.runs,
                "alone_median_s": alone,
                "busy_neighbour_median_s": busy,
                "busy_slowdown": {name: round(busy[name] / alone[name], 2) for name in settings},
            }
        )
    )


if __name__ == "__main__":
    main()
