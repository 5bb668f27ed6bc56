"""Output retention: a job's images are deleted once its organization's plan stops keeping them.

A scheduled task (generation/apps.py) deletes, for finished jobs older than the plan's
`retention_days`, the generated images and the input images the web tier stored for the
worker, then marks the job `expired_at`. Jobs submitted with `temp` go the same way once
PICTOR_MEDIA_TEMP_URL_EXPIRE has passed. A fetch of such a job still answers `success`, with
no outputs and the message "Outputs expired".

The same task deletes the test pings sent from the settings page (with their attempts) once
they are older than the organization's plan keeps images; a job's own deliveries stay with it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Plan
from generation import media
from generation.engine.request import input_images
from generation.inputs import is_own_input
from generation.models import PING_EVENT, Job, OutputImage, WebhookDelivery

log = logging.getLogger(__name__)

# Jobs expired (and test pings deleted) per plan per run; the next run goes on from there.
BATCH_SIZE = 500


def expire_outputs(now: datetime | None = None) -> int:
    """Delete the stored images of jobs past their plan's retention; returns jobs expired."""
    now = now or timezone.now()
    expired = 0
    for plan in Plan.objects.all():
        due = Job.objects.filter(
            organization__plan=plan, created_at__lt=now - timedelta(days=plan.retention_days)
        )
        expired += _expire_oldest(due, now, "job")
    # `temp` requests keep their images only as long as their links last (generation/media.py).
    temp_due = Job.objects.filter(
        params__temp=True,
        created_at__lt=now - timedelta(seconds=settings.PICTOR_MEDIA_TEMP_URL_EXPIRE),
    )
    expired += _expire_oldest(temp_due, now, "temp job")
    if expired:
        log.info("retention: deleted the images of %s jobs", expired)
    delete_old_pings(now)
    return expired


def delete_old_pings(now: datetime | None = None) -> int:
    """Delete finished test pings past their organization's plan retention; returns how many."""
    now = now or timezone.now()
    deleted = 0
    for plan in Plan.objects.all():
        # A pending ping may still have an attempt on its way: it goes once it has finished.
        due = (
            WebhookDelivery.objects.filter(
                event=PING_EVENT,
                organization__plan=plan,
                created_at__lt=now - timedelta(days=plan.retention_days),
            )
            .exclude(status=WebhookDelivery.Status.PENDING)
            .order_by("created_at")
            .values_list("pk", flat=True)
        )
        ids = list(due[:BATCH_SIZE])
        if ids:
            # Their attempts go with them (on_delete=CASCADE); one redelivered meanwhile stays.
            gone = WebhookDelivery.objects.filter(pk__in=ids).exclude(
                status=WebhookDelivery.Status.PENDING
            )
            deleted += gone.delete()[1].get(WebhookDelivery._meta.label, 0)
    if deleted:
        log.info("retention: deleted %s test pings", deleted)
    return deleted


def _expire_oldest(due: QuerySet[Job], now: datetime, what: str) -> int:
    """Expire the oldest finished, unexpired jobs of `due`, BATCH_SIZE at most; returns how many."""
    due = due.filter(status__in=Job.FINISHED, expired_at__isnull=True).order_by("created_at")
    expired = 0
    for job in due.prefetch_related("outputs")[:BATCH_SIZE]:
        try:
            expire_job(job, now)
        except Exception:
            # Left unmarked, so the next run tries again; one bad object stops nothing else.
            log.exception("could not delete the images of %s %s", what, job.pk)
        else:
            expired += 1
    return expired


def stored_files(job: Job) -> list[str]:
    """Storage names of the job's images: outputs, and inputs in the organization's folder."""
    names = [output.path for output in job.outputs.all()]
    inputs = input_images(job.params).values()
    return names + [name for name in inputs if is_own_input(name, job.organization_id)]


def expire_job(job: Job, now: datetime) -> None:
    """Delete one job's images from storage, then mark it expired."""
    media.delete_files(stored_files(job))
    with transaction.atomic():
        OutputImage.objects.filter(job=job).delete()
        Job.objects.filter(pk=job.pk).update(expired_at=now)
