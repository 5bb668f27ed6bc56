"""bench/submit.py runs end to end in a tiny mode and prints its one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def reachable(url: str) -> bool:
    import psycopg
    import redis

    try:
        psycopg.connect(f"{url}/postgres", connect_timeout=3).close()
        redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")).ping()
    except Exception:
        return False
    return True


def test_it_prints_submit_poll_fetch_pickup_and_floor_figures():
    if not reachable(os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")):
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL or Redis is not reachable")
        pytest.skip("PostgreSQL or Redis is not reachable")
    result = subprocess.run(
        [
            *[sys.executable, "bench/submit.py", "--seconds", "2", "--clients", "2"],
            *["--pickups", "2", "--tenants", "2", "--daily-cap", "--jobs-today", "30"],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "submit"
    assert figures["tenants"] == 2
    assert (figures["daily_cap"], figures["jobs_today"]) == (True, 30)
    for name in ("submit", "poll_waiting", "fetch", "floor"):
        assert set(figures[name]) == {"per_s", "p50_ms", "p99_ms", "ok", "errors"}
        assert figures[name]["ok"] > 0
        assert figures[name]["errors"] == {}
    assert set(figures["pickup"]) == {"p50_ms", "p95_ms", "runs"}
    assert figures["pickup"]["runs"] == 2
