"""Metrics and logs of a real stack: gunicorn's /metrics adds up what the worker counted."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.integration.conftest import dump_logs, free_port
from tests.scrape import sample

pytestmark = pytest.mark.integration

TOKEN = "it-scrape-token-5c1d"
LABELS = {"kind": "text2img", "model": "demo-sd15"}


def scrape(url: str) -> str:
    response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def finished(text: str) -> tuple[float, float]:
    """The worker's counts of a success: the job's, then (another commit hook) its time's."""
    return (
        sample(text, "pictor_jobs_finished_total", status="success", **LABELS),
        sample(text, "pictor_generation_seconds_count", **LABELS),
    )


def test_one_job_moves_the_metrics_and_its_log_lines_carry_its_id(make_stack):
    worker_port = free_port()
    stack = make_stack(
        PICTOR_LOG_FORMAT="json",
        PICTOR_METRICS_TOKEN=TOKEN,
        PICTOR_METRICS_PORT=str(worker_port),
    )
    metrics_url = stack.base_url + "/metrics"
    assert requests.get(metrics_url, timeout=10).status_code == 401
    before = scrape(metrics_url)

    response = requests.post(
        stack.base_url + "/api/v3/text2img",
        json={"key": stack.key, "prompt": "a lighthouse", "width": 64, "height": 64},
        headers={"X-Request-ID": "it-observe-1"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == "it-observe-1"
    data = response.json()
    job_id = data["id"]
    # The worker counts after its commit: give it a moment past the job's success, until both
    # of its counts have moved (a scrape can fall between them).
    deadline = time.monotonic() + 60
    counts_before = finished(before)
    while True:
        after = scrape(metrics_url)
        if all(a != b for a, b in zip(finished(after), counts_before, strict=True)):
            break
        assert time.monotonic() < deadline, dump_logs(stack)
        time.sleep(0.2)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    (cost,) = stack.sql("SELECT cost FROM generation_job WHERE id = %s", job_id)
    assert cost > 0
    assert moved("pictor_jobs_submitted_total", **LABELS) == 1
    assert moved("pictor_jobs_finished_total", status="success", **LABELS) == 1
    assert moved("pictor_generation_seconds_count", **LABELS) == 1
    assert moved("pictor_queue_wait_seconds_count", priority="2") == 1
    assert moved("pictor_credits_debited_total", plan="premium") == cost
    assert moved("pictor_http_requests_total", route="/api/v3/text2img", status="200") == 1
    assert sample(after, "pictor_queue_depth", priority="2") == 0
    assert sample(after, "pictor_live_workers") >= 1

    # The worker host's own port, with the same token.
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"
    assert requests.get(worker_url, timeout=10).status_code == 401
    assert sample(scrape(worker_url), "pictor_generation_seconds_count", **LABELS) >= 1

    worker_log = (stack.logs / "worker.log").read_text()
    entries = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    for_job = [e for e in entries if e["job_id"] == job_id]
    assert {e["message"] for e in for_job} >= {f"job {job_id} started (attempt 1)"}, worker_log
    assert any(e["message"].startswith(f"job {job_id} done in ") for e in for_job)
    assert {e["request_id"] for e in for_job} == {"it-observe-1"}
    for name in ("worker.log", "web.log"):
        assert stack.key not in (stack.logs / name).read_text()
