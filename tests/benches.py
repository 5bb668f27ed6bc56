"""Running a bench script as its documentation says, for the tests that check its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The benches empty Redis databases of their own (submit 13, throughput 14-15), which the
# integration tests leave alone (tests/integration/conftest.py): bench tests may run beside them.


def require_services() -> None:
    """Skip unless PostgreSQL and Redis answer (fail instead in CI, where both must run)."""
    import psycopg
    import redis

    url = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
    try:
        psycopg.connect(f"{url}/postgres", connect_timeout=3).close()
        redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")).ping()
    except Exception:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL or Redis is not reachable")
        pytest.skip("PostgreSQL or Redis is not reachable")


def run_bench(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run bench/`script` to its end; the one JSON line it prints on stdout, parsed."""
    result = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])
