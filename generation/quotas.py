"""The counts of a tenant's jobs that plan limits and pages need: queued jobs, images per day.

The rules (what a plan allows, the 429 a breach answers) are billing/limits.py; they take
plain counts, and the counting happens here because billing never imports generation
(docs/architecture.md). Failed and canceled jobs never count as images used.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

from django.db import connection
from django.db.models import IntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDate

from accounts.models import Organization
from billing import limits
from generation.models import Job, JobQuerySet
from sdplatform.rows import compiled, db_value, fixed_cursor

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


def images_today(organization: Organization, besides: int | None = None) -> int:
    """Images this organization asked for today (UTC), not counting failed or canceled jobs.

    `besides`: a job left out, as for queued_jobs. One fixed statement, as queued_jobs is: a
    submit of a tenant with a daily cap sums it after taking the tenant's lock, and the ORM
    built the aggregate anew each time. tests/test_rows.py holds it equal to

        counted(Job.objects.for_org(organization).filter(created_at__gte=start_of_day()))
        .exclude(pk=besides).aggregate(n=images_sum())
    """
    start = db_value(Job, "created_at", limits.start_of_day())
    sql, samples_params = images_today_query()
    with fixed_cursor() as cursor:
        # Job ids start at 1: 0 leaves none out.
        cursor.execute(sql, [*samples_params, organization.pk, start, *NOT_COUNTED, besides or 0])
        return int(cursor.fetchone()[0] or 0)


@functools.cache
def images_today_query() -> tuple[str, tuple[Any, ...]]:
    """What `images_today` runs (served by generation_job_org_idx), and the parameters of its
    samples expression: images_sum()'s, compiled once for the database in use, whose JSON
    reads differ between PostgreSQL and SQLite."""
    samples_sql, samples_params = compiled(Job, images_sum())
    sql = (
        f"SELECT {samples_sql} FROM {connection.ops.quote_name(Job._meta.db_table)}"
        " WHERE organization_id = %s AND created_at >= %s AND status NOT IN (%s, %s)"
        " AND id <> %s"
    )
    return sql, samples_params


def images_per_day(organization: Organization, since: date) -> dict[date, int]:
    """Images asked for per UTC day from `since` on, not counting failed or canceled jobs."""
    rows = (
        counted(Job.objects.for_org(organization).filter(created_at__date__gte=since))
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(images=images_sum())
    )
    return {row["day"]: row["images"] or 0 for row in rows}


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
    limits.check_queue(
        plan, queued_jobs(organization, up_to=limits.queue_cap(plan), besides=job.pk)
    )
    # No daily cap: the day's images are not counted at all.
    if plan.images_per_day is not None:
        used = images_today(organization, besides=job.pk)
        limits.check_daily_images(plan, used, job.params["samples"])
