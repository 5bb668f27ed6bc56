"""Submitting jobs and reading their state: the one path every wire format shares."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django_q.conf import Conf
from rest_framework import status
from rest_framework.exceptions import APIException

from accounts import abuse
from accounts.models import ApiKey, Organization
from billing import ledger
from billing.limits import unique_body
from generation import media, notify
from generation.engine.request import GenerationRequest
from generation.inputs import copy_inputs
from generation.models import AIModel, Job, default_webhook_events
from generation.queue import check_broker, enqueue_job
from generation.quotas import check_submit
from sdplatform import logs, metrics

WAIT_POLL_SECONDS = 0.02
# Where wait_seconds() leaves the `Preference-Applied` value for the API middleware to send
# (in META, which a DRF request shares with Django's).
PREFERENCE_APPLIED = "pictor.preference_applied"
# RFC 7240's wait: delta-seconds, digits only. Longer than this is "huge": the maximum applies.
PREFER_WAIT = re.compile(r"\s*wait\s*=\s*\"?(\d+)\"?\s*(?:;.*)?", re.IGNORECASE)
MAX_WAIT_DIGITS = 9


class IdempotencyKeyReused(APIException):
    """An Idempotency-Key already used for another request (another body or endpoint)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = (
        "This Idempotency-Key was used for a different request; send a new key for a new request."
    )


class Replayed(Exception):
    """A submit whose Idempotency-Key names a job made before: answer that job, charge nothing."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.pk)
        job.replayed = True
        self.job = job


def image_cost(width: int, height: int, steps: int) -> int:
    """Credits for one image: ceil(w*h / 512^2) * ceil(steps / 21)."""
    return math.ceil(width * height / (512 * 512)) * math.ceil(steps / 21)


def job_cost(req: GenerationRequest) -> int:
    """Credits for a whole request."""
    # Priced on what comes back: a hires-fix job returns (and runs) larger images.
    return req.samples * image_cost(req.output_width, req.output_height, req.steps)


def submit_again(job: Job, seed: int | None = None, **options: Any) -> Job:
    """Queue a job with `job`'s parameters (and `seed`, when given), as submit with `options`.

    The new job gets its own copies of the input images, since a job's images (inputs
    included) go when its outputs are deleted. Raises FileNotFoundError when one is no longer
    kept, and what submit raises (nothing is copied then).
    """
    params, copies = copy_inputs(job.params, job.organization_id)
    req = GenerationRequest.from_params(params)
    if seed is not None:
        req = dataclasses.replace(req, seed=seed)
    try:
        return submit(req, job.organization, job.model, kind=job.kind, **options)
    except BaseException:
        media.delete_files(copies)
        raise


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
    webhook_events: list[str] | None = None,
    idempotency_key: str = "",
) -> Job:
    """Create a queued job for a validated request; the worker task is enqueued on commit.

    With an `idempotency_key` that names a job of the organization already, raises Replayed
    (that job) when `fingerprint` matches its request, IdempotencyKeyReused when not.
    """
    request_hash = fingerprint or ""
    if idempotency_key:
        replay(organization, idempotency_key, request_hash)
    # A broker that is down refuses the submit (503) before anything is claimed or charged.
    check_broker()
    abuse.check_prompt(organization, api_key, req.prompt, req.negative_prompt)
    # The spam filter claims the body first; a refusal below gives the claim back. A request
    # with an Idempotency-Key skips it: a retry with the key is answered its job (below), and
    # the same body under a new key is a new request on purpose.
    try:
        with (
            unique_body(organization, None if idempotency_key else fingerprint),
            transaction.atomic(),
        ):
            # The job first, then the tenant's lock, so that the lock is held for as few statements
            # as possible (docs/architecture.md#the-request-path); a refusal rolls both back.
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
                webhook_events=webhook_events or default_webhook_events(),
                base_url=base_url,
                output_base64=output_base64,
                progress_total=req.steps,
                http_request_id=logs.request_id.get() or "",
                idempotency_key=idempotency_key,
                request_hash=request_hash if idempotency_key else "",
            )
            # Its conditional UPDATE takes the lock; raises InsufficientCredits (402), which rolls
            # the job back.
            debit = ledger.debit_for_job(job)
            # Raises LimitExceeded (429), which rolls the job back with the debit.
            check_submit(organization, job, locked=debit is not None)
            # robust: a broker that fails after the commit (past check_broker) is logged, not a
            # 500 to a client already charged; the job stays queued and the sweep enqueues it.
            transaction.on_commit(lambda: enqueue_job(job.pk), robust=True)
            transaction.on_commit(
                lambda: metrics.JOBS_SUBMITTED.labels(kind=kind, model=model.model_id).inc()
            )
    except IntegrityError:
        # Two submits with one key at once: the unique constraint let the other one's job in
        # (this insert waited for its commit); this one's debit rolled back with its row.
        if idempotency_key:
            replay(organization, idempotency_key, request_hash)
        raise
    return job


def replay(organization: Organization, idempotency_key: str, request_hash: str) -> None:
    """Raise Replayed with the organization's job made with this key, if there is one.

    A job made with the key for another request (body or endpoint) raises IdempotencyKeyReused.
    """
    # generation_job_unique_idempotency_key serves this lookup.
    job = (
        Job.objects.for_org(organization)
        .select_related("model")
        .filter(idempotency_key=idempotency_key)
        .first()
    )
    if job is None:
        return
    if job.request_hash != request_hash:
        raise IdempotencyKeyReused()
    raise Replayed(job)


def wait_seconds(
    request: Any, default: float, maximum: float | None = None, minimum: float = 0
) -> float:
    """The blocking wait for this request: `Prefer: wait=N` (RFC 7240) if sent, else `default`.

    N is clamped to [minimum, maximum] (maximum: PICTOR_BLOCKING_WAIT, the longest any request
    holds a web thread) and the applied value is answered in `Preference-Applied`. A value that
    is not whole seconds is ignored, as RFC 7240 says of a preference a server cannot honour.
    """
    asked = prefer_wait(request.headers.get("Prefer", ""))
    if asked is None:
        return default
    top = settings.PICTOR_BLOCKING_WAIT if maximum is None else maximum
    applied = min(max(float(asked), minimum), top)
    request.META[PREFERENCE_APPLIED] = f"wait={applied:g}"
    return applied


def prefer_wait(header: str) -> int | None:
    """The seconds of the first `wait` preference in a Prefer header; None if none or invalid.

    A number too long to matter is read as "as long as allowed" (the caller clamps it).
    """
    for preference in header.split(","):
        name = preference.split("=", 1)[0].split(";", 1)[0].strip().lower()
        if name != "wait":
            continue
        # Only the first `wait` counts (RFC 7240, section 2); a bad one is ignored whole.
        match = PREFER_WAIT.fullmatch(preference)
        if match is None:
            return None
        # Leading zeros do not make a wait long: 0000000000 is none at all.
        digits = match.group(1).lstrip("0") or "0"
        return int(digits) if len(digits) <= MAX_WAIT_DIGITS else 10**MAX_WAIT_DIGITS
    return None


def wait_for(job: Job, seconds: float) -> Job:
    """Wait up to `seconds` for the job to finish; returns it refreshed (as it is for none).

    With no wait (`instant_response`) the job in hand is answered: it was just created or
    read, so reading it again would only tell whether a worker took it in the last moment.
    (Unless tasks run inline, where the job has already run by now.)
    """
    if seconds <= 0 and not Conf.SYNC:
        return job
    deadline = time.monotonic() + seconds
    # An announcement of a run that did not finish the job (one retried since) stays in Redis a
    # while: once one is seen with the job unfinished, the row is polled instead.
    block = notify.can_block()
    while True:
        status = Job.objects.filter(pk=job.pk).values_list("status", flat=True).first()
        remaining = deadline - time.monotonic()
        if status in Job.FINISHED or remaining <= 0:
            break
        if block:
            block = not notify.block_until_finished(job.pk, remaining)
        else:
            time.sleep(min(WAIT_POLL_SECONDS, remaining))
    job.refresh_from_db()
    return job
