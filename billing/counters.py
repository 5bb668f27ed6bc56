"""Counters and claims that every web process shares, exact under concurrent requests.

Two stores, picked by the configured cache:

- Redis (or any cache with an atomic `incr`, like memcached): `cache.incr(key)` counts in a
  window, after `cache.add(key, 0)` where it found no key yet; a claim is `cache.add(key, 1,
  ttl)` (Redis SET NX).
- Django's database cache (the embedded default): its `incr` is a get and a set, so two
  processes can read the same count and both write count+1; and its `add` over an expired row
  is a SELECT then an UPDATE that two processes can both win. So instead of the cache table,
  counters live in `billing.RateCounter`, one row per key, moved by one INSERT ... ON CONFLICT
  DO UPDATE ... RETURNING statement: PostgreSQL (and SQLite, which has one writer at a time)
  runs it atomically per row, so concurrent requests each get a distinct count.

Windows are fixed and aligned to the clock (a minute starts at :00), so every process agrees
on where a window ends without talking to the others.

When Redis cannot be reached, every counter falls back to RateCounter rather than refusing the
request with a 503: the database is the store of record and still answers, so requests per
minute, the spam filter and the login limits all stay in force across processes (nothing is let
through uncounted), while fetches, listings and logins keep working through a cache outage.
Submits still answer 503 then, because their job needs the broker (generation/queue.py). The
price: a window that spans the switch is counted in two stores, so for that one window a key
may get up to twice its limit, a bounded slack rather than a bypass. After a failure a process
counts in the database for REDIS_RETRY_SECONDS before it tries Redis again, so a dead Redis
costs one failed connection per process per interval, not one per request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import TypeVar

from django.core.cache import cache, caches
from django.core.cache.backends.db import DatabaseCache
from django.core.signals import setting_changed
from django.db import connection
from django.dispatch import receiver
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from billing.models import RateCounter

log = logging.getLogger(__name__)

# What the cache raises when Redis is down or failing: django-redis wraps redis-py's errors in
# ConnectionInterrupted; Django's own Redis backend lets them through; sockets raise OSError.
REDIS_DOWN = (ConnectionInterrupted, RedisError, OSError)
REDIS_RETRY_SECONDS = 5.0
# monotonic() until which this process counts in the database (Redis failed just now); imported
# by name so that tests which fake `time` for the windows leave the back-off on the real clock.
_redis_down_until = 0.0


@dataclass(frozen=True)
class Hit:
    """One request counted: its number in the window, and seconds until the window ends."""

    count: int
    resets_in: float


def in_database() -> bool:
    """True when the shared cache is Django's database cache (counters use RateCounter)."""
    return isinstance(caches["default"], DatabaseCache)


def _use_database() -> bool:
    """True when counters go to RateCounter now: the database cache, or Redis failed just now."""
    return in_database() or monotonic() < _redis_down_until


def _redis_failed(exc: Exception) -> None:
    """Count in the database for a while; log the outage once, not once per request."""
    global _redis_down_until
    if not _redis_down_until:
        log.warning("the cache (Redis) is unreachable, counting in the database: %s", exc)
    _redis_down_until = monotonic() + REDIS_RETRY_SECONDS


def _redis_answered() -> None:
    global _redis_down_until
    if _redis_down_until:
        log.info("the cache (Redis) answers again; counting there")
        _redis_down_until = 0.0


T = TypeVar("T")


def _from_redis(ask: Callable[[], T]) -> T | None:
    """Redis's answer to `ask()`; None when the counters are in the database, or move there now."""
    if _use_database():
        return None
    try:
        answer = ask()
    except REDIS_DOWN as exc:
        _redis_failed(exc)
        return None
    _redis_answered()
    return answer


@receiver(setting_changed)
def _cache_changed(setting: str, **kwargs: object) -> None:
    """A new cache (tests switch them) starts with no memory of the old one's outage."""
    global _redis_down_until
    if setting == "CACHES":
        _redis_down_until = 0.0


def _sql(template: str) -> str:
    quote = connection.ops.quote_name
    return template.format(
        t=quote(RateCounter._meta.db_table), k=quote("key"), h=quote("hits"), e=quote("expires")
    )


# A new window (the stored one ended before this one) restarts at 1; the same window adds 1.
HIT_SQL = """
INSERT INTO {t} ({k}, {h}, {e}) VALUES (%s, 1, %s)
ON CONFLICT ({k}) DO UPDATE SET
    {h} = CASE WHEN {t}.{e} < excluded.{e} THEN 1 ELSE {t}.{h} + 1 END,
    {e} = CASE WHEN {t}.{e} < excluded.{e} THEN excluded.{e} ELSE {t}.{e} END
RETURNING {h}, {e}
"""

# Inserted, or took over an expired claim: a row comes back. A live claim: no row.
CLAIM_SQL = """
INSERT INTO {t} ({k}, {h}, {e}) VALUES (%s, 1, %s)
ON CONFLICT ({k}) DO UPDATE SET {h} = 1, {e} = excluded.{e} WHERE {t}.{e} <= %s
RETURNING {h}
"""


def hit(key: str, window: int) -> Hit:
    """Count one request in the current `window`-second window of `key`."""
    now = time.time()
    end = (now // window + 1) * window
    counted = _from_redis(lambda: _redis_hit(key, end, now))
    if counted is not None:
        return counted
    with connection.cursor() as cursor:
        cursor.execute(_sql(HIT_SQL), [key, end])
        count, end = cursor.fetchone()
    return Hit(int(count), max(end - now, 0.0))


def _redis_hit(key: str, end: float, now: float) -> Hit:
    # The window's end in the key: each window is a fresh key that expires on its own.
    window_key = f"pictor:{key}:{int(end)}"
    timeout = math.ceil(end - now) + 1
    # The count first: once a window has begun, a request costs one round trip, not two.
    for _ in range(3):
        try:
            return Hit(int(cache.incr(window_key)), end - now)
        except ValueError:
            # The window's first request (or its key evicted from a full Redis): start it. Of
            # two requests here at once, one add wins and both count on it.
            cache.add(window_key, 0, timeout)
    raise RuntimeError(f"the cache keeps dropping the counter {window_key}")


def peek(key: str, window: int) -> Hit:
    """The count of `key` in the current `window`-second window, without counting a request."""
    now = time.time()
    end = (now // window + 1) * window
    seen = _from_redis(lambda: cache.get(f"pictor:{key}:{int(end)}", 0))
    if seen is not None:
        return Hit(int(seen), end - now)
    # A row whose window has not ended is this window's: every hit on a key uses one length.
    row = RateCounter.objects.filter(key=key, expires__gt=now).values_list("hits", "expires")
    hits, end = row.first() or (0, end)
    return Hit(int(hits), max(end - now, 0.0))


def forget(key: str, window: int) -> None:
    """Reset the current `window`-second window of `key` to zero."""
    # Both stores: a count kept in the database during an outage must not outlive the reset.
    RateCounter.objects.filter(key=key).delete()
    if not _use_database():
        end = (time.time() // window + 1) * window
        try:
            cache.delete(f"pictor:{key}:{int(end)}")
        except REDIS_DOWN as exc:
            _redis_failed(exc)


def claim(key: str, ttl: int) -> float:
    """Take `key` for `ttl` seconds: 0.0 when taken now, else seconds the holder keeps it."""
    now = time.time()
    held = _from_redis(lambda: _redis_claim(key, ttl))
    if held is not None:
        return held
    with connection.cursor() as cursor:
        cursor.execute(_sql(CLAIM_SQL), [key, now + ttl, now])
        if cursor.fetchone() is not None:
            return 0.0
    held = RateCounter.objects.filter(key=key).values_list("expires", flat=True).first()
    return max(held - now, 1.0) if held else float(ttl)


def _redis_claim(key: str, ttl: int) -> float:
    cache_key = f"pictor:{key}"
    if cache.add(cache_key, 1, ttl):
        return 0.0
    remaining = cache.ttl(cache_key) if hasattr(cache, "ttl") else None
    return float(remaining) if remaining and remaining > 0 else float(ttl)


def release(key: str) -> None:
    """Give a claim back before its time, so the same key can be claimed again at once."""
    # Both stores: the claim may have been taken in the database while Redis was down.
    RateCounter.objects.filter(key=key).delete()
    if not _use_database():
        try:
            cache.delete(f"pictor:{key}")
        except REDIS_DOWN as exc:
            _redis_failed(exc)


def prune_expired() -> int:
    """Delete database counters whose window or claim has ended (a scheduled task)."""
    deleted, _ = RateCounter.objects.filter(expires__lt=time.time() - 60).delete()
    return deleted
