"""The counts of a tenant's jobs that plan limits and pages need: queued jobs, images per day.

The rules (what a plan allows, the 429 a breach answers) are billing/limits.py; they take
plain counts, and the counting happens here because billing never imports generation
(docs/architecture.md). Failed and canceled jobs never count as images used.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection
from django.db.models import F, IntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from accounts.models import Organization
from billing import limits
from generation.models import DailyImages, Job, JobQuerySet
from sdplatform.rows import db_value, fixed_cursor

# Jobs in these states never count as images used.
NOT_COUNTED = (Job.Status.FAILED, Job.Status.CANCELED)


def counted(jobs: JobQuerySet) -> JobQuerySet:
    """The jobs that count as images used: all but failed and canceled ones."""
    return jobs.exclude(status__in=NOT_COUNTED)


def images_sum() -> Sum:
    """The number of images a set of jobs asked for (each job's `samples`), for aggregate()."""
    return Sum(Cast(KT("params__samples"), IntegerField()))


def queued_jobs(organization: Organization, up_to: int, besides: int) -> int:
    """Jobs of this organization waiting for a worker, counted no further than `up_to`.

    `besides`: a job left out (a submit's own, inserted before it counts the others). One
    fixed statement, as the request path's lookups are (sdplatform/rows.py): the ORM's count
    of a sliced queryset built the same SQL on every submit at several times the server's
    cost. tests/test_rows.py holds it equal to the queryset it replaces.
    """
    with fixed_cursor() as cursor:
        cursor.execute(queued_jobs_query(), [organization.pk, Job.Status.QUEUED, besides, up_to])
        return cursor.fetchone()[0]


@functools.cache
def queued_jobs_query() -> str:
    """What `queued_jobs` runs (served by generation_job_org_status_idx)."""
    return (
        f"SELECT COUNT(*) FROM (SELECT 1 FROM {Job._meta.db_table}"
        " WHERE organization_id = %s AND status = %s AND id <> %s LIMIT %s) queued"
    )


def images_today(organization: Organization) -> int:
    """Images this organization asked for today (UTC), not counting failed or canceled jobs.

    Its DailyImages row, the running total a submit checks the daily cap against, so the pages
    show the count the cap uses; tests/test_rows.py holds it equal to the sum over the jobs.
    """
    today = usage_day(timezone.now())
    return images_per_day(organization, today).get(today, 0)


def usage_day(created_at: datetime) -> date:
    """The UTC day a job created at `created_at` counts on."""
    return created_at.astimezone(UTC).date()


def count_images(job: Job) -> int:
    """Add the just-inserted `job`'s images to its organization's day; the day's total after.

    An upsert of the day's DailyImages row: a submit used to sum the day's jobs here, which took
    longer with each job of the day. Every submit adds its images, capped or not, so that a plan
    given a cap later in the day finds the day already counted.
    """
    with fixed_cursor() as cursor:
        cursor.execute(count_images_query(), count_images_params(job))
        return int(cursor.fetchone()[0])


@functools.cache
def count_images_query() -> str:
    """What `count_images` runs (served by generation_dailyimages_unique_org_day)."""
    table = connection.ops.quote_name(DailyImages._meta.db_table)
    return (
        f"INSERT INTO {table} (organization_id, day, images) VALUES (%s, %s, %s)"
        " ON CONFLICT (organization_id, day)"
        f" DO UPDATE SET images = {table}.images + EXCLUDED.images RETURNING images"
    )


def count_images_params(job: Job) -> list[Any]:
    day = db_value(DailyImages, "day", usage_day(job.created_at))
    return [job.organization_id, day, job.params["samples"]]


def count_submit(organization: Organization, job: Job, up_to: int) -> tuple[int, int]:
    """A submit's counts, once it holds the tenant's lock: its organization's queued jobs but
    `job` (queued_jobs), and its images today with `job`'s added (count_images).

    On PostgreSQL one prepared statement, the upsert in a WITH clause: the lock is held to the
    commit, and each round trip inside it is one more that the tenant's next submit waits for.
    The count reads a snapshot taken after the lock, as it did alone. SQLite has no INSERT in a
    WITH clause: the two statements, one after the other.
    """
    if connection.vendor != "postgresql":
        return queued_jobs(organization, up_to, job.pk), count_images(job)
    with fixed_cursor() as cursor:
        cursor.execute(
            count_submit_query(),
            [*count_images_params(job), organization.pk, Job.Status.QUEUED, job.pk, up_to],
        )
        queued, images = cursor.fetchone()
    return int(queued), int(images)


@functools.cache
def count_submit_query() -> str:
    """What `count_submit` runs on PostgreSQL: the upsert, then both counts, in one statement."""
    queued = queued_jobs_query()
    return f"WITH day AS ({count_images_query()}) SELECT ({queued}), day.images FROM day"


def uncount_images(organization_id: int, created_at: datetime, samples: int) -> None:
    """Take the `samples` images of a job created at `created_at` that just failed or was
    canceled off its organization's day.

    finish() calls it once per such job, in the transaction of its update, with the job's row
    it has read anyway: it only ever ends a job that is still waiting, so the job was counted
    until then.
    """
    DailyImages.objects.filter(organization_id=organization_id, day=usage_day(created_at)).update(
        images=F("images") - samples
    )


def images_per_day(organization: Organization, since: date) -> dict[date, int]:
    """Images asked for per UTC day from `since` on, not counting failed or canceled jobs: the
    DailyImages rows, one read per page instead of a sum over a month of a busy tenant's jobs.
    """
    rows = DailyImages.objects.filter(organization=organization, day__gte=since)
    return dict(rows.values_list("day", "images"))


def check_submit(organization: Organization, job: Job, *, locked: bool) -> None:
    """Raise LimitExceeded unless the plan lets this organization queue `job`, just inserted.

    Call it inside the submit's transaction, after the job's INSERT, holding the organization's
    row lock (`locked`: its debit's UPDATE took it; else it is taken here), so that concurrent
    submits of one tenant are counted one after the other and the caps are exact: each count is
    a statement after the lock, which sees the jobs of every submit that held it before
    (docs/architecture.md#the-request-path).
    """
    if not locked:
        Organization.objects.select_for_update(no_key=True).values_list("pk", flat=True).get(
            pk=organization.pk
        )
    plan = organization.plan
    # Counting stops at the cap: a deep queue costs a submit no more than a full one.
    queued, images = count_submit(organization, job, up_to=limits.queue_cap(plan))
    limits.check_queue(plan, queued)
    if plan.images_per_day is not None:
        samples = job.params["samples"]
        limits.check_daily_images(plan, images - samples, samples)
