"""Submitting jobs and reading their state: the one path every wire format shares."""

from __future__ import annotations

import math
import time

from django.db import transaction

from accounts import abuse
from accounts.models import ApiKey, Organization
from billing import ledger
from billing.limits import unique_body
from generation import notify
from generation.engine.request import GenerationRequest
from generation.models import AIModel, Job
from generation.queue import check_broker, enqueue_job
from generation.quotas import check_submit
from sdplatform import logs, metrics

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
