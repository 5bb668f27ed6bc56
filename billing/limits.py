"""Plan limits checked when a job is submitted: images per day, the queue cap, the spam filter.

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

from django.db.models import IntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled

from accounts.models import Organization
from billing import counters

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


def images_today(organization: Organization) -> int:
    """Images this organization asked for today (UTC), not counting failed or canceled jobs."""
    from generation.models import Job

    jobs = Job.objects.for_org(organization).filter(created_at__gte=start_of_day())
    jobs = jobs.exclude(status__in=[Job.Status.FAILED, Job.Status.CANCELED])
    total = jobs.aggregate(n=Sum(Cast(KT("params__samples"), IntegerField())))["n"]
    return total or 0


def check_submit(organization: Organization, samples: int) -> None:
    """Raise LimitExceeded unless the plan lets this organization queue `samples` more images.

    Call it inside the submit's transaction: it locks the organization's row, so concurrent
    submits of one tenant are counted one after the other and the caps are exact.
    """
    from generation.models import Job

    Organization.objects.select_for_update().values_list("pk", flat=True).get(pk=organization.pk)
    plan = organization.plan
    queue_cap = QUEUED_PER_CONCURRENT_JOB * plan.concurrent_jobs
    queued = Job.objects.for_org(organization).filter(status=Job.Status.QUEUED).count()
    if queued >= queue_cap:
        raise LimitExceeded(
            "Too many queued jobs",
            f"The {plan.name} plan allows {queue_cap} jobs waiting in the queue; "
            "retry when some have finished.",
            wait=5,
        )
    if plan.images_per_day is None:
        return
    used = images_today(organization)
    if used + samples > plan.images_per_day:
        midnight = start_of_day() + timedelta(days=1)
        raise LimitExceeded(
            "Daily image limit reached",
            f"The {plan.name} plan allows {plan.images_per_day} images per day (UTC); "
            f"{used} used today. Upgrade the plan or retry after midnight UTC.",
            wait=(midnight - timezone.now()).total_seconds(),
        )
