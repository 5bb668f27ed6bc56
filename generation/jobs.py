"""A job's state changes, shared by the web tier and the worker: finish, cancel, reap.

Cancelling (a client, the admin, a blocking wait that ran out) and reaping a dead worker's job
happen in web requests as well as in the worker, so they live here: the web tier's service and
views use them without importing the worker's tasks module.
"""

from __future__ import annotations

import functools
import logging
from functools import partial
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing import ledger
from generation import notify, quotas, retention, webhooks
from generation.models import AIModel, Job, OutputImage
from generation.queue import enqueue_job
from sdplatform import metrics
from sdplatform.rows import Selected, fixed_cursor, set_prefetched

if TYPE_CHECKING:
    from accounts.models import Organization

log = logging.getLogger(__name__)

# Why a job was canceled, as its `error` (the jobs API shows both): a client's cancel (the jobs
# API, /sdapi/v1/interrupt), or a blocking format's wait running out.
CANCELED_BY_CLIENT = "Canceled by the client"
NOT_READY_IN_TIME = "Canceled: the image was not ready within the request's wait"


def finish(rows: QuerySet[Job], job_id: int, **fields: object) -> bool:
    """Put the job in a final state if `rows` still selects it; wake its waiters on commit.

    A failed or canceled job gets its credits back in the same transaction (once: the refund
    has a unique ledger key, and only the caller whose update changed the row gets here), and
    its images stop counting against the day's cap. `rows` selects only a waiting job.
    """
    with transaction.atomic():
        changed = rows.update(finished_at=timezone.now(), lease_expires_at=None, **fields)
        if changed:
            kind, model, organization_id, created_at, samples = Job.objects.values_list(
                "kind", "model__model_id", "organization_id", "created_at", "params__samples"
            ).get(pk=job_id)
            if fields.get("status") in quotas.NOT_COUNTED:
                ledger.refund_job(job_id)
                quotas.uncount_images(organization_id, created_at, samples)
            counted = metrics.JOBS_FINISHED.labels(status=fields["status"], kind=kind, model=model)
            transaction.on_commit(counted.inc)
            transaction.on_commit(lambda: notify.job_finished(job_id))
            transaction.on_commit(lambda: webhooks.job_finished(job_id), robust=True)
    return bool(changed)


def reap_expired_jobs() -> int:
    """Requeue processing jobs whose lease ran out (or fail them after the last attempt).

    Webhook deliveries whose attempt was lost are picked up again here too, as this runs
    every minute on the reaper's schedule.
    """
    webhooks.resume_stalled_deliveries()
    now = timezone.now()
    reaped = 0
    expired = Job.objects.filter(status=Job.Status.PROCESSING, lease_expires_at__lt=now)
    for job_id, attempts in expired.values_list("pk", "attempts")[:100]:
        # The same filter again makes the update a compare-and-set: a renewal wins over us.
        this = Job.objects.filter(
            pk=job_id, status=Job.Status.PROCESSING, attempts=attempts, lease_expires_at__lt=now
        )
        changed: int  # finish() says yes or no; update() counts rows
        if attempts >= settings.PICTOR_JOB_MAX_ATTEMPTS:
            changed = finish(
                this,
                job_id,
                status=Job.Status.FAILED,
                error="The worker running this job stopped answering.",
            )
        else:
            with transaction.atomic():
                changed = this.update(
                    status=Job.Status.QUEUED, lease_expires_at=None, worker="", progress_step=0
                )
                if changed:
                    transaction.on_commit(partial(enqueue_job, job_id))
        if changed:
            log.warning("reaped job %s after its lease expired (attempt %s)", job_id, attempts)
            reaped += changed
    return reaped


# A job id in a database's signed 64-bit key; a larger one from a URL finds nothing.
MAX_JOB_ID = 2**63 - 1


def polled(organization: Organization, job_id: int) -> Job | None:
    """The tenant's job `job_id` with its model and outputs, as a poll answers it; else None.

    `Job.objects.for_org(organization).select_related("model").prefetch_related("outputs")` in
    one fixed statement: polls are the API's most frequent request, and the ORM's building of
    those two queries cost more than PostgreSQL's answers (docs/benchmarks.md).
    """
    if not 0 < job_id <= MAX_JOB_ID:
        return None
    job, model, output, sql = polled_job_query()
    with fixed_cursor() as cursor:
        cursor.execute(sql, [job_id, organization.pk])
        rows = cursor.fetchall()
    if not rows:
        return None
    found = job.instance(rows[0])
    found.model = model.instance(rows[0])
    # A job without outputs has one row, its output columns NULL (the LEFT JOIN).
    set_prefetched(
        found, "outputs", [output.instance(row) for row in rows if not output.is_null(row)]
    )
    return found


@functools.cache
def polled_job_query() -> tuple[Selected[Job], Selected[AIModel], Selected[OutputImage], str]:
    job = Selected(Job, "j")
    model = Selected(AIModel, "m", after=job)
    output = Selected(OutputImage, "o", after=model)
    sql = (
        f"SELECT {job.sql}, {model.sql}, {output.sql} FROM {Job._meta.db_table} j"
        f" JOIN {AIModel._meta.db_table} m ON m.id = j.model_id"
        f" LEFT JOIN {OutputImage._meta.db_table} o ON o.job_id = j.id"
        f" WHERE j.id = %s AND j.organization_id = %s"
        f" ORDER BY o.{connection.ops.quote_name('index')}"
    )
    return job, model, output, sql


def refresh_lease_state(job: Job) -> Job:
    """Reap the job first if its worker's lease ran out, so a poller never waits on a dead one."""
    lease = job.lease_expires_at  # a processing job always has one (tasks.py sets it)
    if job.status == Job.Status.PROCESSING and lease is not None and lease < timezone.now():
        reap_expired_jobs()
        job.refresh_from_db()
    return job


def cancel(job: Job, reason: str = CANCELED_BY_CLIENT) -> bool:
    """Cancel a queued or running job and refund it; False if it had already finished.

    A worker running it notices at its next progress write (the row is no longer `processing`)
    and drops the result.
    """
    rows = Job.objects.filter(pk=job.pk, status__in=Job.WAITING)
    return finish(rows, job.pk, status=Job.Status.CANCELED, error=reason)


def call_off(job: Job) -> None:
    """Undo a job whose request failed as a whole: cancel it, or take back what it delivered.

    A request that queues several jobs and answers all or nothing (AUTOMATIC1111's extras batch)
    never hands over the parts that finished before another failed: such a part is refunded and
    its images deleted, so the client neither pays for nor keeps what it was never given.
    """
    if cancel(job):
        return
    with transaction.atomic():
        rows = Job.objects.select_for_update().filter(
            pk=job.pk, status=Job.Status.SUCCESS, expired_at__isnull=True
        )
        done = rows.values_list("organization_id", "created_at", "params__samples").first()
        if done is None:
            return  # failed or canceled, so refunded already; or taken back before
        organization_id, created_at, samples = done
        ledger.refund_job(job.pk, note="Part of a request that failed as a whole")
        quotas.uncount_images(organization_id, created_at, samples)
    retention.expire_job(job, timezone.now())
