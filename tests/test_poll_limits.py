"""Polls are counted apart from generations (billing/throttles.py, generation/api/polling.py)."""

from __future__ import annotations

import pytest

from billing import counters

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_wait")]


@pytest.fixture
def clock(monkeypatch):
    """The counters' clock, at the start of a minute, so no test crosses into the next one."""

    class Clock:
        now = 1_800_000_000.0

        def time(self) -> float:
            return self.now

    fake = Clock()
    monkeypatch.setattr(counters, "time", fake)
    return fake


def submit(api, key: str, prompt: str) -> dict:
    status, job = api.post("/api/v3/text2img", {"key": key, "prompt": prompt, "width": 64})
    assert status == 200, job
    assert job["status"] == "processing"
    return job


def test_it_lets_a_free_key_poll_fifty_times_in_a_minute_and_still_submit(
    api, client, free_tenant, demo_model, clock
):
    key = free_tenant.key
    job = submit(api, key, "a lighthouse")
    for _ in range(50):
        response = client.post(
            f"/api/v3/fetch/{job['id']}", {"key": key}, content_type="application/json"
        )
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "processing"
        assert 1 <= int(response["Retry-After"]) <= 10
        assert response.json()["eta"] >= 0
    # Fifty polls used none of the Free plan's ten requests a minute.
    assert submit(api, key, "a second lighthouse")["id"] != job["id"]


def test_it_gives_every_poll_route_a_retry_after_while_the_job_runs(
    api, client, tenant, demo_model, clock
):
    key = tenant.key
    job = submit(api, key, "a harbour")
    auth = {"Authorization": f"Bearer {key}"}
    for path in (
        f"/api/v4/dreambooth/fetch/{job['id']}",
        f"/api/v6/images/fetch/{job['id']}",
        f"/api/v1/jobs/{job['id']}",
        f"/api/sd/txt2img/{job['id']}",
        "/sdapi/v1/progress",
    ):
        response = client.get(path, headers=auth)
        assert response.status_code == 200, (path, response.content)
        assert 1 <= int(response["Retry-After"]) <= 10, path


def test_it_answers_429_in_each_formats_shape_past_the_poll_limit(
    api, client, free_tenant, demo_model, settings, clock
):
    settings.PICTOR_POLL_RATE_PER_MINUTE = 2
    key = free_tenant.key
    job = submit(api, key, "a storm")
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(2):
        assert client.get(f"/api/v3/fetch/{job['id']}", headers=auth).status_code == 200

    clock.now += 15
    refused = {
        f"/api/v3/fetch/{job['id']}": {
            "status": "error",
            "message": "Rate limit exceeded",
            "tips": "Slow down and retry after the number of seconds in Retry-After.",
        },
        f"/api/v1/jobs/{job['id']}": {
            "error": {"code": "rate_limited", "message": "Rate limit exceeded", "field": None}
        },
        f"/api/sd/txt2img/{job['id']}": {
            "code": 429,
            "data": None,
            "message": "Rate limit exceeded. "
            "Slow down and retry after the number of seconds in Retry-After.",
        },
    }
    for path, body in refused.items():
        response = client.get(path, headers=auth)
        assert response.status_code == 429, path
        assert response.json() == body, path
        assert response["Retry-After"] == "46", path
    progress = client.get("/sdapi/v1/progress", headers=auth)
    assert progress.status_code == 429
    assert progress.json()["detail"] == "Rate limit exceeded"

    # The poll limit leaves the plan's requests per minute alone.
    submit(api, key, "a calm sea")
    # The next minute polls again.
    clock.now += 60
    assert client.get(f"/api/v3/fetch/{job['id']}", headers=auth).status_code == 200


def test_it_still_counts_generations_against_the_plan(api, free_tenant, demo_model, clock):
    from billing.models import Plan

    Plan.objects.filter(slug="free").update(requests_per_minute=1)
    key = free_tenant.key
    submit(api, key, "a boat")
    status, body = api.post("/api/v3/text2img", {"key": key, "prompt": "a ship", "width": 64})
    assert status == 429, body
    assert body["message"] == "Rate limit exceeded"
