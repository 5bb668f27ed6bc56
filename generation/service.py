"""Submitting jobs and reading their state: the one path every wire format shares."""

from __future__ import annotations

import math
import statistics
import time

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts import abuse
from accounts.models import ApiKey, Organization
from billing import ledger
from billing.limits import check_submit, unique_body
from generation import notify
from generation.engine.request import GenerationRequest
from generation.models import AIModel, Job
from generation.queue import check_broker, enqueue_job
from generation.tasks import finish, reap_expired_jobs
from sdplatform import logs, metrics

# Seconds of generation per image-step at 512x512 when nothing has been measured yet.
DEFAULT_SECONDS_PER_STEP = 0.05
WAIT_POLL_SECONDS = 0.02


def image_cost(width: int, height: int, steps: int) -> int:
    """Credits for one image: ceil(w*h / 512^2) * ceil(steps / 21)."""
    return math.ceil(width * height / (512 * 512)) * math.ceil(steps / 21)


def job_cost(req: GenerationRequest) -> int:
    """Credits for a whole request."""
    # Priced on what comes back: a hires-fix job returns (and runs) larger images.
    return req.samples * image_cost(req.output_width, req.output_height, req.steps)


def submit(
    req: GenerationRequest,
    organization: Organization,
    model: AIModel,
    *,
    api_key: ApiKey | None = None,
    kind: str = "text2img",
    track_id: str = "",
    webhook: str = "",
    base_url: str = "",
    output_base64: bool = False,
    fingerprint: str | None = None,
    temp: bool = False,
) -> Job:
    """Create a queued job for a validated request; the worker task is enqueued on commit."""
    # A broker that is down refuses the submit (503) before anything is claimed or charged.
    check_broker()
    abuse.check_prompt(organization, api_key, req.prompt, req.negative_prompt)
    # The spam filter claims the body first; a refusal below gives the claim back.
    with unique_body(organization, fingerprint), transaction.atomic():
        check_submit(organization, req.samples)
        job = Job.objects.create(
            organization=organization,
            api_key=api_key,
            model=model,
            kind=kind,
            # `temp` rides with the request's fields: its image links expire sooner (media.py).
            params={**req.to_params(), **({"temp": True} if temp else {})},
            priority=organization.plan.priority,
            cost=job_cost(req),
            track_id=track_id,
            webhook=webhook,
            base_url=base_url,
            output_base64=output_base64,
            progress_total=req.steps,
            http_request_id=logs.request_id.get() or "",
        )
        # Raises InsufficientCredits (402), which rolls the job back with the debit.
        ledger.debit_for_job(job)
        # robust: a broker that fails after the commit (past check_broker) is logged, not a 500
        # to a client already charged; the job stays queued and the worker's sweep enqueues it.
        transaction.on_commit(lambda: enqueue_job(job.pk), robust=True)
        transaction.on_commit(
            lambda: metrics.JOBS_SUBMITTED.labels(kind=kind, model=model.model_id).inc()
        )
    return job


def wait_for(job: Job, seconds: float) -> Job:
    """Wait up to `seconds` for the job to finish; returns it refreshed."""
    deadline = time.monotonic() + seconds
    while True:
        status = Job.objects.filter(pk=job.pk).values_list("status", flat=True).first()
        remaining = deadline - time.monotonic()
        if status in Job.FINISHED or remaining <= 0:
            break
        if notify.can_block():
            notify.block_until_finished(job.pk, remaining)
        else:
            time.sleep(min(WAIT_POLL_SECONDS, remaining))
    job.refresh_from_db()
    return job


def _work_units(params: dict) -> float:
    """Image-steps at 512x512 that a request asks for (smaller images count as one)."""
    scale = max(1.0, params["width"] * params["height"] / (512 * 512))
    return scale * params["samples"] * params["steps"]


def seconds_per_unit() -> float:
    """Recent generation seconds per 512x512 image-step, from the last successful jobs."""
    recent = Job.objects.filter(status=Job.Status.SUCCESS, generation_time__isnull=False)
    rates = [
        generation_time / _work_units(params)
        for generation_time, params in recent.order_by("-finished_at").values_list(
            "generation_time", "params"
        )[:50]
    ]
    # The median, so one cold start (a model load inside generation_time) does not skew it.
    return statistics.median(rates) if rates else DEFAULT_SECONDS_PER_STEP


def estimate_seconds(job: Job, per_unit: float) -> float:
    """Seconds of generation this job still needs."""
    units = _work_units(job.params)
    if job.status == Job.Status.PROCESSING and job.progress_total:
        units *= max(job.progress_total - job.progress_step, 0) / job.progress_total
    return units * per_unit


def eta(job: Job) -> float:
    """Seconds until this job should be done: the jobs ahead of it, then itself."""
    if job.is_finished:
        return 0.0
    per_unit = seconds_per_unit()
    ahead = 0.0
    if job.status == Job.Status.QUEUED:
        before = Job.objects.waiting().filter(
            Q(status=Job.Status.PROCESSING)
            | Q(priority__gt=job.priority)
            | Q(priority=job.priority, created_at__lt=job.created_at)
        )
        ahead = sum(estimate_seconds(j, per_unit) for j in before[:200])
    return round(ahead + estimate_seconds(job, per_unit), 2)


def system_load() -> dict[str, object]:
    """Queue length and the time a new job would wait, for /system_load."""
    waiting = list(Job.objects.waiting()[:500])
    per_unit = seconds_per_unit()
    return {
        "status": "ok",
        "queue_num": len(waiting),
        "queue_time": round(sum(estimate_seconds(j, per_unit) for j in waiting), 2),
    }


def refresh_lease_state(job: Job) -> Job:
    """Reap the job first if its worker's lease ran out, so a poller never waits on a dead one."""
    if job.status == Job.Status.PROCESSING and job.lease_expires_at < timezone.now():
        reap_expired_jobs()
        job.refresh_from_db()
    return job


def cancel(job: Job) -> bool:
    """Cancel a queued or running job and refund it; False if it had already finished.

    A worker running it notices at its next progress write (the row is no longer `processing`)
    and drops the result.
    """
    rows = Job.objects.filter(pk=job.pk, status__in=(Job.Status.QUEUED, Job.Status.PROCESSING))
    return finish(rows, job.pk, status=Job.Status.CANCELED, error="Canceled by the client")
