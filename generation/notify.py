"""Telling a waiting web request that its job finished, without polling where Redis is there.

With Redis the worker pushes onto a short-lived per-job list and the web request blocks on it;
the embedded mode (no Redis) falls back to polling the job row.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# Long enough for any web request still waiting; the key vanishes on its own afterwards.
DONE_TTL_SECONDS = 300


@functools.cache
def _client(url: str) -> redis.Redis:
    import redis

    # No socket read timeout: BLPOP's own timeout bounds the wait, and a shorter socket timeout
    # would cut a legitimate long wait.
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=None)


def _redis() -> redis.Redis | None:
    return _client(settings.REDIS_URL) if settings.REDIS_URL else None


def _key(job_id: int) -> str:
    return f"pictor:job-done:{job_id}"


def job_finished(job_id: int) -> None:
    """Wake whoever waits on this job (no-op without Redis)."""
    import redis

    client = _redis()
    if client is None:
        return
    try:
        _announce(client, job_id)
    except redis.RedisError:
        log.warning("could not announce job %s through Redis", job_id, exc_info=True)


def _announce(client: redis.Redis, job_id: int) -> None:
    pipe = client.pipeline()
    pipe.rpush(_key(job_id), 1)
    pipe.expire(_key(job_id), DONE_TTL_SECONDS)
    pipe.execute()


def can_block() -> bool:
    return bool(settings.REDIS_URL)


def block_until_finished(job_id: int, timeout: float) -> bool:
    """Block up to `timeout` seconds for job_finished(job_id); the caller re-reads the row.

    True when the announcement came. It is passed on, so that every request waiting on the job
    wakes (retries that share a job by their Idempotency-Key), not only the first to take it.
    """
    import redis

    client = _redis()
    assert client is not None, "callers wait here only when can_block()"
    try:
        if client.blpop([_key(job_id)], timeout=max(timeout, 0.01)) is None:
            return False
        _announce(client, job_id)
        return True
    except redis.RedisError:
        # The job row is the truth; without the wake-up the caller simply reads it again.
        log.warning("waiting on job %s through Redis failed", job_id, exc_info=True)
        return False
