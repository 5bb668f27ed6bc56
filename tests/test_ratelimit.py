"""Requests per minute per organization (billing/throttles.py) and the counters behind it."""

from __future__ import annotations

import os
import uuid

import pytest

from billing import counters
from billing.models import Plan, RateCounter

# No worker runs here: answer `processing` at once instead of waiting for one.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_wait")]

LOAD = "/api/v3/system_load"


@pytest.fixture
def clock(monkeypatch):
    """The counters' clock, at the start of a minute unless moved."""

    class Clock:
        now = 1_800_000_000.0  # a multiple of 60: the start of a window

        def time(self) -> float:
            return self.now

    fake = Clock()
    monkeypatch.setattr(counters, "time", fake)
    return fake


def set_rpm(slug: str, limit: int) -> None:
    Plan.objects.filter(slug=slug).update(requests_per_minute=limit)


def test_it_accepts_the_plans_requests_per_minute_then_answers_429(api, free_tenant, clock):
    set_rpm("free", 3)
    clock.now += 20
    answers = [api.post(LOAD, {"key": free_tenant.key}) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]

    response = api.raw(LOAD, f'{{"key": "{free_tenant.key}"}}', "application/json")
    assert response.status_code == 429
    assert response.json() == {
        "status": "error",
        "message": "Rate limit exceeded",
        "tips": "Slow down and retry after the number of seconds in Retry-After.",
    }
    # 40 seconds are left in the minute.
    assert response["Retry-After"] == "41"


def test_every_endpoint_counts_and_the_next_minute_starts_afresh(
    api, free_tenant, demo_model, no_wait, clock
):
    set_rpm("free", 2)
    key = free_tenant.key
    status, job = api.post("/api/v3/text2img", {"key": key, "prompt": "a cat", "width": 64})
    assert status == 200, job
    # A poll is counted apart (tests/test_poll_limits.py): it leaves the minute's second request.
    assert api.post(f"/api/v3/fetch/{job['id']}", {"key": key})[0] == 200
    assert api.post(LOAD, {"key": key})[0] == 200
    assert api.post(LOAD, {"key": key})[0] == 429
    assert api.post("/api/v3/text2img", {"key": key, "prompt": "a dog"})[0] == 429

    clock.now += 60
    assert api.post(LOAD, {"key": key})[0] == 200


def test_one_tenant_at_its_limit_does_not_slow_another(api, free_tenant, tenant, clock):
    set_rpm("free", 1)
    assert api.post(LOAD, {"key": free_tenant.key})[0] == 200
    assert api.post(LOAD, {"key": free_tenant.key})[0] == 429
    assert api.post(LOAD, {"key": tenant.key})[0] == 200


def test_requests_without_a_valid_key_get_401_and_are_not_counted(api, free_tenant, clock):
    set_rpm("free", 1)
    for _ in range(3):
        status, data = api.post(LOAD, {"key": "pct_wrong"})
        assert (status, data["message"]) == (401, "Invalid Api Key")
        assert api.post(LOAD, {})[0] == 401
    assert api.post(LOAD, {"key": free_tenant.key})[0] == 200


def test_a_plan_change_applies_to_the_next_request(api, free_tenant, clock):
    set_rpm("free", 1)
    assert api.post(LOAD, {"key": free_tenant.key})[0] == 200
    assert api.post(LOAD, {"key": free_tenant.key})[0] == 429
    set_rpm("free", 5)
    assert api.post(LOAD, {"key": free_tenant.key})[0] == 200


def test_the_database_counter_counts_in_one_row_per_key(clock):
    assert counters.in_database()
    assert [counters.hit("rpm:test", 60).count for _ in range(3)] == [1, 2, 3]
    clock.now += 59.5
    last = counters.hit("rpm:test", 60)
    assert (last.count, last.resets_in) == (4, 0.5)
    clock.now += 1
    assert counters.hit("rpm:test", 60).count == 1
    assert RateCounter.objects.filter(key="rpm:test").count() == 1


def test_a_claim_is_held_until_it_ends_or_is_released(clock):
    assert counters.claim("dup:x", 30) == 0.0
    clock.now += 10
    assert counters.claim("dup:x", 30) == 20.0
    counters.release("dup:x")
    assert counters.claim("dup:x", 30) == 0.0
    clock.now += 30
    assert counters.claim("dup:x", 30) == 0.0


def test_ended_counters_are_pruned(clock):
    counters.hit("rpm:old", 60)
    counters.claim("dup:old", 30)
    clock.now += 3600
    counters.claim("dup:new", 30)
    assert counters.prune_expired() == 2
    assert list(RateCounter.objects.values_list("key", flat=True)) == ["dup:new"]


@pytest.fixture
def redis_cache(settings):
    """The default cache on the local Redis, under a key prefix of its own."""
    import redis

    url = os.environ.get("PICTOR_TEST_REDIS", "redis://127.0.0.1:6379") + "/0"
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable: {exc}")
        pytest.skip(f"Redis is not reachable: {exc}")
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        }
    }


def test_on_redis_counts_and_claims_live_in_redis(redis_cache, api, free_tenant, clock):
    assert not counters.in_database()
    assert [counters.hit("rpm:r", 60).count for _ in range(3)] == [1, 2, 3]
    clock.now += 60
    assert counters.hit("rpm:r", 60).count == 1
    assert counters.claim("dup:r", 30) == 0.0
    assert 0 < counters.claim("dup:r", 30) <= 30
    counters.release("dup:r")
    assert counters.claim("dup:r", 30) == 0.0

    set_rpm("free", 2)
    statuses = [api.post(LOAD, {"key": free_tenant.key})[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert not RateCounter.objects.exists()


def test_on_redis_a_window_expires_with_its_minute_and_an_evicted_one_starts_again(
    redis_cache, clock
):
    from django.core.cache import cache

    window_key = f"pictor:rpm:e:{int(clock.now) + 60}"
    assert counters.hit("rpm:e", 60).count == 1
    assert 60 <= cache.ttl(window_key) <= 61
    assert counters.hit("rpm:e", 60).count == 2
    assert 60 <= cache.ttl(window_key) <= 61  # counting keeps the key's expiry
    cache.delete(window_key)  # what a full Redis does to a key
    assert [counters.hit("rpm:e", 60).count for _ in range(2)] == [1, 2]


def test_on_redis_concurrent_first_hits_of_a_window_each_get_their_own_count(redis_cache, clock):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(lambda _: counters.hit("rpm:c", 60).count, range(200)))
    assert sorted(counts) == list(range(1, 201))
