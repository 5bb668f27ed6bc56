"""Plan limits checked when a job is submitted: images per day, the queue cap, the spam filter.

The rules live here and take counts; the counting of jobs is generation/quotas.py
(check_submit()), since billing never imports generation (docs/architecture.md).
Requests per minute are billing/throttles.py; samples, sizes and steps are checked while the
request is parsed; concurrent jobs are enforced by the worker's claim (generation/tasks.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled

from accounts.models import Organization
from billing import counters
from billing.models import Plan

# The same body from the same organization within this many seconds is refused.
DUPLICATE_WINDOW_SECONDS = 30
# An organization may have this many times its concurrent_jobs waiting in the queue.
QUEUED_PER_CONCURRENT_JOB = 10
# Body fields that do not make a request different (the key may travel in a header instead).
FINGERPRINT_IGNORES = ("key",)


class LimitExceeded(APIException):
    """A plan limit refused the request: 429, naming the limit, with a tip and Retry-After."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, detail: str, tips: str, wait: float | None = None) -> None:
        super().__init__(detail)
        self.tips = tips
        self.wait = wait


class DuplicateRequest(Throttled):
    """The spam filter: answered like any rate limit ("Rate limit exceeded", Retry-After)."""

    tips = (
        f"The same request was sent less than {DUPLICATE_WINDOW_SECONDS} seconds ago; "
        "change it or retry after the number of seconds in Retry-After."
    )


def body_fingerprint(data: Any, path: str = "") -> str | None:
    """A hash of the request as sent to `path`, without the key; None for a non-object body."""
    if not isinstance(data, dict):
        return None
    body = {k: v for k, v in data.items() if k not in FINGERPRINT_IGNORES}
    canonical = json.dumps([path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@contextmanager
def unique_body(organization: Organization, fingerprint: str | None) -> Iterator[None]:
    """Refuse a body this organization sent in the last 30 s; give the claim back on failure.

    A request that fails after the claim (no credits, a limit, an error) releases it, so a
    corrected retry is not refused as a duplicate.
    """
    if fingerprint is None:
        yield
        return
    key = f"dup:{organization.pk}:{fingerprint}"
    held_for = counters.claim(key, DUPLICATE_WINDOW_SECONDS)
    if held_for:
        raise DuplicateRequest(wait=held_for)
    try:
        yield
    except BaseException:
        counters.release(key)
        raise


def start_of_day(now: datetime | None = None) -> datetime:
    """Midnight UTC of today: daily limits count from here."""
    now = now or timezone.now()
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def queue_cap(plan: Plan) -> int:
    """How many of an organization's jobs may wait in the queue at once."""
    return QUEUED_PER_CONCURRENT_JOB * plan.concurrent_jobs


def check_queue(plan: Plan, queued: int) -> None:
    """Raise LimitExceeded when `queued` waiting jobs already fill the plan's queue."""
    cap = queue_cap(plan)
    if queued >= cap:
        raise LimitExceeded(
            "Too many queued jobs",
            f"The {plan.name} plan allows {cap} jobs waiting in the queue; "
            "retry when some have finished.",
            wait=5,
        )


def check_daily_images(plan: Plan, used: int, samples: int) -> None:
    """Raise LimitExceeded when `samples` more images pass the plan's daily cap (`used` today)."""
    if plan.images_per_day is None:
        return
    if used + samples > plan.images_per_day:
        midnight = start_of_day() + timedelta(days=1)
        raise LimitExceeded(
            "Daily image limit reached",
            f"The {plan.name} plan allows {plan.images_per_day} images per day (UTC); "
            f"{used} used today. Upgrade the plan or retry after midnight UTC.",
            wait=(midnight - timezone.now()).total_seconds(),
        )
