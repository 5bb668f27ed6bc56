"""Batching across requests: the queued jobs a worker runs with the one it claimed, in one call.

A worker that claimed a job also claims queued jobs that can share its diffusers call (same
model and kind, and the same batch key: every request field but prompts, seed and samples, see
generation/engine/batch.py), up to PICTOR_MAX_BATCH_IMAGES images in all. Two rules hold:

- Priority: a job joins only if no claimable queued job of higher priority is left out (one that
  cannot share the call, or no longer fits). Within one priority a batch may take a younger job
  past an older one it cannot include; that is what batching is for.
- Fair share: a tenant never runs more jobs than its plan's concurrent_jobs, batch included; a
  job whose tenant is full is not claimable, so it neither joins nor blocks.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from accounts.models import Organization
from generation.engine.batch import batch_key, batchable, family_batches
from generation.engine.pipelines import pipeline_family
from generation.engine.request import GenerationRequest
from generation.models import Job
from sdplatform import metrics

log = logging.getLogger(__name__)

# Queued jobs a batch looks through for companions, best first.
SCAN = 64
# "auto" on a CPU host: a few images share a call (measured gain, bench/throughput.py).
CPU_BATCH_IMAGES = 4
# "auto" on CUDA: one image per this much free GPU memory (a 512² SD 1.5 image at fp16 needs
# well under it), up to CUDA_MAX_BATCH_IMAGES.
CUDA_BYTES_PER_IMAGE = 1024**3
CUDA_MAX_BATCH_IMAGES = 16


def max_batch_images() -> int:
    """Images one call may hold (PICTOR_MAX_BATCH_IMAGES; "auto": by device, 1: no batching)."""
    value = settings.PICTOR_MAX_BATCH_IMAGES
    if value != "auto":
        return int(value)
    try:
        import torch  # lazy: only workers get here, and they have it loaded

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return max(1, min(CUDA_MAX_BATCH_IMAGES, free // CUDA_BYTES_PER_IMAGE))
    except Exception:
        log.warning("could not size batches by GPU memory", exc_info=True)
    return CPU_BATCH_IMAGES


def key_of(params: dict[str, Any]) -> str | None:
    """The batch key of a job's params, or None when it runs alone."""
    try:
        req = GenerationRequest.from_params(params)
    except Exception:
        return None  # unreadable params: it fails alone, with its own error
    return batch_key(params) if batchable(req) else None


def claim_companions(leader: Job, images: int | None = None) -> list[Job]:
    """Claim queued jobs that can share `leader`'s call, marked processing like it; best first."""
    budget = (max_batch_images() if images is None else images) - leader.params.get("samples", 1)
    key = key_of(leader.params)
    if budget < 1 or key is None:
        return []
    # Companions share the leader's model: a family whose calls of this kind run one by one
    # (ControlNet on an SDXL inpainting checkpoint) would only hold them processing while they
    # wait their turn.
    model = leader.model
    if not family_batches(leader.kind, pipeline_family(model.family, model.base)):
        return []
    # Chosen unlocked, outside the transaction: a lone job (nothing to choose) costs one read,
    # not a transaction; _lock_and_take checks the chosen ones again under their locks.
    chosen = _choose(leader, key, budget)
    if not chosen:
        return []
    with transaction.atomic():
        taken = _lock_and_take(chosen)
        if not taken:
            return []
        now = timezone.now()
        Job.objects.filter(pk__in=taken).update(
            status=Job.Status.PROCESSING,
            attempts=F("attempts") + 1,
            started_at=now,
            lease_expires_at=leader.lease_deadline(),
            worker=leader.worker,
            progress_step=0,
        )
        jobs = {job.pk: job for job in Job.objects.select_related("model").filter(pk__in=taken)}
        companions = [jobs[pk] for pk in taken]
        for job in companions:
            if job.attempts == 1:
                waited = (now - job.created_at).total_seconds()
                observe = metrics.QUEUE_WAIT.labels(priority=str(job.priority)).observe
                transaction.on_commit(functools.partial(observe, waited))
    return companions


def _running_by_org(orgs: set[int]) -> Counter[int]:
    rows = (
        Job.objects.filter(status=Job.Status.PROCESSING, organization__in=orgs)
        .values_list("organization")
        .annotate(count=Count("pk"))
    )
    return Counter(dict(rows))


def _choose(leader: Job, key: str, budget: int) -> list[tuple[int, int, int]]:
    """(job id, organization id, priority) of the companions, by the rules above; unlocked."""
    rows = list(
        Job.objects.filter(status=Job.Status.QUEUED)
        .order_by("-priority", "created_at", "id")
        .values("pk", "organization_id", "priority", "model_id", "kind", "params")[:SCAN]
    )
    if not rows:
        return []
    orgs = {row["organization_id"] for row in rows}
    limits = dict(
        Organization.objects.filter(pk__in=orgs).values_list("pk", "plan__concurrent_jobs")
    )
    running = _running_by_org(orgs)
    chosen: list[tuple[int, int, int]] = []
    blocked_below: int | None = None  # the priority of the best claimable job left out
    for row in rows:
        org, priority = row["organization_id"], row["priority"]
        if blocked_below is not None and priority < blocked_below:
            break
        if running[org] >= limits.get(org, 0):
            continue  # its tenant is full: no worker may run it now
        samples = row["params"].get("samples", 1) if isinstance(row["params"], dict) else 1
        fits = (
            row["model_id"] == leader.model_id
            and row["kind"] == leader.kind
            and isinstance(samples, int)
            and 1 <= samples <= budget
            and key_of(row["params"]) == key
        )
        if not fits:
            if blocked_below is None:
                blocked_below = priority
            continue
        chosen.append((row["pk"], org, priority))
        running[org] += 1
        budget -= samples
        if budget < 1:
            break
    return chosen


def _lock_and_take(chosen: list[tuple[int, int, int]]) -> list[int]:
    """The chosen jobs still queued, locked, whose tenant still has a slot, in order."""
    orgs = {org for _pk, org, _priority in chosen}
    locked_orgs = Organization.objects.filter(pk__in=orgs)
    locked_jobs = Job.objects.filter(
        pk__in=[pk for pk, _org, _p in chosen], status=Job.Status.QUEUED
    )
    if connection.features.has_select_for_update_skip_locked:
        # Skip what another worker is claiming right now instead of waiting on it (and never
        # deadlock on two tenants' rows locked in opposite orders). FOR NO KEY UPDATE, as in
        # tasks._has_free_slot: a submit's job INSERT does not hold it off.
        locked_orgs = locked_orgs.select_for_update(skip_locked=True, of=("self",), no_key=True)
        locked_jobs = locked_jobs.select_for_update(skip_locked=True, of=("self",))
    limits = dict(locked_orgs.values_list("pk", "plan__concurrent_jobs"))
    queued = set(locked_jobs.values_list("pk", flat=True))
    running = _running_by_org(set(limits))
    taken: list[int] = []
    blocked_below: int | None = None
    for pk, org, priority in chosen:
        if blocked_below is not None and priority < blocked_below:
            break
        if pk not in queued:
            continue  # another worker took it: no longer queued, so it blocks nothing
        if org not in limits:
            # Its tenant's row is locked by a worker claiming now: the job may still be
            # claimable, so nothing below it may pass it.
            blocked_below = priority
            continue
        if running[org] >= limits[org]:
            continue  # its tenant filled up meanwhile: no worker may run it now
        taken.append(pk)
        running[org] += 1
    return taken
