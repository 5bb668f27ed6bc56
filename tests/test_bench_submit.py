"""bench/submit.py runs end to end in a tiny mode and prints its one JSON line."""

from __future__ import annotations

from tests.benches import require_services, run_bench


def test_it_prints_submit_poll_fetch_pickup_and_floor_figures():
    require_services()
    figures = run_bench(
        *["submit.py", "--seconds", "2", "--clients", "2", "--pickups", "2", "--tenants", "2"],
        *["--daily-cap", "--jobs-today", "30"],
    )
    assert figures["bench"] == "submit"
    assert figures["tenants"] == 2
    assert (figures["daily_cap"], figures["jobs_today"]) == (True, 30)
    for name in ("submit", "poll_waiting", "fetch", "floor"):
        assert set(figures[name]) == {"per_s", "p50_ms", "p99_ms", "ok", "errors"}
        assert figures[name]["ok"] > 0
        assert figures[name]["errors"] == {}
    assert set(figures["pickup"]) == {"p50_ms", "p95_ms", "runs"}
    assert figures["pickup"]["runs"] == 2
