"""Counters and claims that every web process shares, exact under concurrent requests.

Two stores, picked by the configured cache:

- Redis (or any cache with an atomic `incr`, like memcached): `cache.add(key, 0)` starts a
  window, `cache.incr(key)` counts in it; a claim is `cache.add(key, 1, ttl)` (Redis SET NX).
- Django's database cache (the embedded default): its `incr` is a get and a set, so two
  processes can read the same count and both write count+1; and its `add` over an expired row
  is a SELECT then an UPDATE that two processes can both win. So instead of the cache table,
  counters live in `billing.RateCounter`, one row per key, moved by one INSERT ... ON CONFLICT
  DO UPDATE ... RETURNING statement: PostgreSQL (and SQLite, which has one writer at a time)
  runs it atomically per row, so concurrent requests each get a distinct count.

Windows are fixed and aligned to the clock (a minute starts at :00), so every process agrees
on where a window ends without talking to the others.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.core.cache import cache, caches
from django.core.cache.backends.db import DatabaseCache
from django.db import connection

from billing.models import RateCounter


@dataclass(frozen=True)
class Hit:
    """One request counted: its number in the window, and seconds until the window ends."""

    count: int
    resets_in: float


def in_database() -> bool:
    """True when the shared cache is Django's database cache (counters use RateCounter)."""
    return isinstance(caches["default"], DatabaseCache)


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
    if in_database():
        with connection.cursor() as cursor:
            cursor.execute(_sql(HIT_SQL), [key, end])
            count, end = cursor.fetchone()
        return Hit(int(count), max(end - now, 0.0))
    # The window's end in the key: each window is a fresh key that expires on its own.
    window_key = f"pictor:{key}:{int(end)}"
    timeout = math.ceil(end - now) + 1
    for _ in range(3):
        cache.add(window_key, 0, timeout)
        try:
            return Hit(int(cache.incr(window_key)), end - now)
        except ValueError:
            continue  # evicted between add and incr (a full Redis); start it again
    raise RuntimeError(f"the cache keeps dropping the counter {window_key}")


def claim(key: str, ttl: int) -> float:
    """Take `key` for `ttl` seconds: 0.0 when taken now, else seconds the holder keeps it."""
    now = time.time()
    if in_database():
        with connection.cursor() as cursor:
            cursor.execute(_sql(CLAIM_SQL), [key, now + ttl, now])
            if cursor.fetchone() is not None:
                return 0.0
        held = RateCounter.objects.filter(key=key).values_list("expires", flat=True).first()
        return max(held - now, 1.0) if held else float(ttl)
    cache_key = f"pictor:{key}"
    if cache.add(cache_key, 1, ttl):
        return 0.0
    remaining = cache.ttl(cache_key) if hasattr(cache, "ttl") else None
    return float(remaining) if remaining and remaining > 0 else float(ttl)


def release(key: str) -> None:
    """Give a claim back before its time, so the same key can be claimed again at once."""
    if in_database():
        RateCounter.objects.filter(key=key).delete()
    else:
        cache.delete(f"pictor:{key}")


def prune_expired() -> int:
    """Delete database counters whose window or claim has ended (a scheduled task)."""
    deleted, _ = RateCounter.objects.filter(expires__lt=time.time() - 60).delete()
    return deleted
