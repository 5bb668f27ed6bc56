"""The cost of the strict JSON parser on API bodies: small requests and big base64 images.

Every API body is checked for nesting depth, NaN/Infinity and unstorable text before any key is
looked up (generation/api/parsers.py). This times that parse against plain json.loads on the
same bytes and prints one JSON line of medians and their ratio.

    .venv/bin/python bench/parsing.py [--runs 15] [--megabytes 16]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdplatform.settings")


def median_seconds(parse: Callable[[bytes], Any], body: bytes, runs: int) -> float:
    """The median wall time of one parse of `body`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        parse(body)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Time both parsers on a typical text2img body and on an img2img body with a big image."""
    import django

    django.setup()
    from generation.api.parsers import loads

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--megabytes", type=int, default=16)
    args = parser.parse_args()

    small = json.dumps(
        {"key": "pct_" + "x" * 40, "prompt": "a lighthouse at dusk, {oil} [painting]", "width": 512}
    ).encode()
    image = base64.b64encode(os.urandom(args.megabytes * 2**20 * 3 // 4)).decode()
    big = json.dumps({"key": "pct_x", "prompt": "a lighthouse", "init_image": image}).encode()
    figures: dict[str, Any] = {"runs": args.runs, "big_body_mb": round(len(big) / 2**20, 1)}
    for name, body, runs in (("small", small, args.runs * 100), ("big", big, args.runs)):
        plain = median_seconds(json.loads, body, runs)
        strict = median_seconds(loads, body, runs)
        figures[f"{name}_plain_ms"] = round(plain * 1000, 3)
        figures[f"{name}_strict_ms"] = round(strict * 1000, 3)
        figures[f"{name}_ratio"] = round(strict / plain, 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
