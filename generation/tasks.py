"""Worker-side tasks: claim a job under a lease, generate, store, finish; sweep the queue.

Tasks take primary keys, never model instances. Torch and diffusers are imported lazily so the
web tier can import this module (for the schedule) without loading them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Count, F, QuerySet
from django.utils import timezone

from accounts.models import Organization
from generation import batching, heartbeat, media, own_models, previews, stopping, webhooks
from generation.engine.request import GenerationRequest, ModelRef
from generation.inputs import open_image
from generation.jobs import finish, reap_expired_jobs
from generation.models import AIModel, Job, OutputImage, WebhookEvent
from generation.queue import enqueue_job
from sdplatform import logs, metrics

log = logging.getLogger(__name__)

# How often a running job writes its progress (and so renews its lease), at most.
PROGRESS_WRITE_INTERVAL = 0.25
# Candidates a claim tries when other workers keep filling the tenants' last slots first.
CLAIM_ATTEMPTS = 10


class JobLost(Exception):
    """The job is no longer ours: reaped after a lease expiry, or canceled."""


class HandedBack(Exception):
    """This worker is stopping and gives its running job back to the queue."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_next_job() -> Job | None:
    """Mark the best queued job processing under a fresh lease, or None when none may run.

    Fair share: a job whose organization already runs its plan's `concurrent_jobs` is passed
    over (it waits behind the tenant's running ones) and the next best job is taken instead.
    """
    full: set[int] = set()
    with transaction.atomic():
        for _ in range(CLAIM_ATTEMPTS):
            job = _best_claimable(full)
            if job is None:
                return None
            if _has_free_slot(job.organization_id):
                break
            # Another worker filled the last slot after we looked: try another tenant's job.
            full.add(job.organization_id)
        else:
            return None
        now = timezone.now()
        job.status = Job.Status.PROCESSING
        job.attempts += 1
        job.started_at = now
        job.lease_expires_at = job.lease_deadline()
        job.worker = worker_name()
        job.progress_step = 0
        job.save(
            update_fields=[
                "status",
                "attempts",
                "started_at",
                "lease_expires_at",
                "worker",
                "progress_step",
            ]
        )
        if job.attempts == 1:
            # The first start only: a retried job's second wait is the reaper's, not the queue's.
            waited = (now - job.created_at).total_seconds()
            transaction.on_commit(
                lambda: metrics.QUEUE_WAIT.labels(priority=str(job.priority)).observe(waited)
            )
    return job


def _best_claimable(full: set[int]) -> Job | None:
    """The highest-priority, oldest queued job of an organization with a free slot, locked.

    Adds the organizations found at their limit to `full`.
    """
    # Few jobs are processing at once (one per worker), so this grouping is cheap.
    full.update(
        Job.objects.filter(status=Job.Status.PROCESSING)
        .values("organization")
        .annotate(running=Count("pk"))
        .filter(running__gte=F("organization__plan__concurrent_jobs"))
        .values_list("organization", flat=True)
    )
    queued = (
        Job.objects.filter(status=Job.Status.QUEUED)
        .exclude(organization__in=full)
        .order_by("-priority", "created_at", "id")
    )
    if connection.features.has_select_for_update_skip_locked:
        queued = queued.select_for_update(skip_locked=True, of=("self",))
    return queued.first()


def _has_free_slot(organization_id: int) -> bool:
    """Whether the organization runs fewer jobs than its plan allows, counted under its lock.

    Workers claiming for one organization queue on its row, and each counts after the one
    before it committed, so two workers never both take the last slot. (SQLite transactions
    are IMMEDIATE: one writer at a time, which gives the same guarantee.) The lock is FOR NO KEY
    UPDATE, which the FOR KEY SHARE of a submit's job INSERT does not block: a tenant's stream
    of submits never holds a claim off (docs/architecture.md#the-request-path).
    """
    limit = (
        Organization.objects.select_for_update(of=("self",), no_key=True)
        .values_list("plan__concurrent_jobs", flat=True)
        .get(pk=organization_id)
    )
    running = Job.objects.filter(organization_id=organization_id, status=Job.Status.PROCESSING)
    return running.count() < limit


def run_next_job(hint_job_id: int | None = None) -> int | None:
    """The django-q2 task: run the highest-priority queued job, if any; returns its id."""
    if stopping.requested():
        # This host is stopping: a task it had prefetched goes back for another worker.
        enqueue_job(hint_job_id)
        return None
    try:
        return run_claimed_jobs()
    finally:
        # After the task, not before its claim: a client's job waits for no one else's lease
        # (two queries on every pickup). The sweep reaps as well, and each reaped job gets a
        # wake-up of its own.
        reap_expired_jobs()


def run_claimed_jobs() -> int | None:
    """Claim the best queued job, with the companions that can share its call, and run them."""
    job = claim_next_job()
    if job is None:
        return None
    jobs = [job, *companions_of(job)]
    report(current_job=job.pk)
    for claimed in jobs:
        announce(webhooks.job_started, claimed.pk)
    try:
        with logs.job_context(job):
            if len(jobs) == 1:
                log.info("job %s started (attempt %s)", job.pk, job.attempts)
                execute(job)
            else:
                log.info("jobs %s started as one batch", ", ".join(str(j.pk) for j in jobs))
                execute_batch(jobs)
    finally:
        for claimed in jobs:
            previews.clear(claimed.pk)
            report(job_done=True)
        wake_waiting_job()
    return job.pk


def companions_of(job: Job) -> list[Job]:
    """Queued jobs that can share the claimed job's diffusers call (generation/batching.py)."""
    try:
        return batching.claim_companions(job)
    except Exception:
        # Batching is an optimisation: a failure here must not strand the job already claimed.
        log.exception("could not claim jobs to batch with job %s", job.pk)
        return []


def report(*, job_done: bool = False, current_job: int | None = None) -> None:
    """Tell the ops dashboard what this worker is doing; never fails the job."""
    try:
        heartbeat.beat(worker_name(), job_done=job_done, current_job=current_job)
    except Exception:
        log.exception("worker heartbeat failed")


def announce(event: Callable[..., None], *args: int) -> None:
    """Create a webhook event's delivery; a failure there (the broker down) never fails the job."""
    try:
        event(*args)
    except Exception:
        log.exception("webhook %s for job %s could not be created", event.__name__, args[0])


def wake_waiting_job() -> None:
    """Enqueue one more run when jobs still wait, as a job has just freed a slot.

    Each submit enqueues one task, but a task that meets only jobs held back by fair share
    runs nothing; the jobs it passed over are run by the task a finishing job enqueues here.
    """
    waiting = Job.objects.filter(status=Job.Status.QUEUED).order_by("-priority", "created_at")
    next_id = waiting.values_list("pk", flat=True).first()
    if next_id is not None:
        enqueue_job(next_id)


def execute(job: Job) -> None:
    """Generate a claimed job's images, store them and finish the job (fenced by attempt)."""
    from generation.engine import runner

    run = _Running(job)
    started = time.monotonic()
    try:
        with lease_kept(job, run.mine):
            result = runner.generate(
                run.req,
                job.model.ref(),
                addons=addon_refs(job, run.req),
                images=input_images(run.req),
                progress=run.progress,
                nsfw_threshold=settings.PICTOR_NSFW_THRESHOLD,
                previews=previews.previewer(job.pk),
            )
            outputs = run.outputs(result)
    except Exception as exc:
        run.end(exc)
        return
    run.succeed(outputs, round(time.monotonic() - started, 3))


def execute_batch(jobs: list[Job]) -> None:
    """Run claimed jobs that share one diffusers call; each ends on its own (see batching.py).

    One job's cancellation, lost lease or bad input ends that job alone: the engine runs the
    others on, or alone (generation/engine/runner.py generate_batch).
    """
    from generation.engine import runner
    from generation.engine.batch import BatchItem

    runs = [_Running(job) for job in jobs]
    started = time.monotonic()
    with ExitStack() as leases:
        for run in runs:
            leases.enter_context(lease_kept(run.job, run.mine))
        items: list[BatchItem] = []
        ready: list[_Running] = []
        for run in runs:
            try:
                addons = addon_refs(run.job, run.req)
                images = input_images(run.req)
            except Exception as exc:
                with logs.job_context(run.job):
                    run.end(exc)
                continue
            preview = previews.previewer(run.job.pk)
            items.append(BatchItem(run.req, addons, run.progress, preview, images))
            ready.append(run)
        try:
            results: list[Any] = runner.generate_batch(
                items, jobs[0].model.ref(), nsfw_threshold=settings.PICTOR_NSFW_THRESHOLD
            )
        except Exception as exc:
            # generate_batch ends requests one by one; this is a bug or the model failing to load.
            results = [exc] * len(ready)
        stored: list[tuple[_Running, list[OutputImage]]] = []
        for run, result in zip(ready, results, strict=True):
            with logs.job_context(run.job):
                try:
                    if isinstance(result, BaseException):
                        raise result
                    stored.append((run, run.outputs(result)))
                except Exception as exc:
                    run.end(exc)
    seconds = round(time.monotonic() - started, 3)
    for run, outputs in stored:
        with logs.job_context(run.job):
            run.succeed(outputs, seconds)


class _Running:
    """One claimed job's side of a run: progress writes under its fence, outputs, its end."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.mine = Job.objects.filter(
            pk=job.pk, status=Job.Status.PROCESSING, attempts=job.attempts
        )
        self.req = GenerationRequest.from_params(job.params)
        self.last_write = 0.0
        self.wants_progress = bool(job.webhook) and WebhookEvent.PROGRESS in job.webhook_events
        self.reached = 0  # quarters of the steps announced by a progress webhook

    def progress(self, step: int, total: int) -> None:
        """Save progress (renewing nothing: the lease has its own thread); raise to leave."""
        job = self.job
        if stopping.seconds_since_request() > settings.PICTOR_WORKER_STOP_GRACE:
            raise HandedBack(job.pk)
        now = time.monotonic()
        passed = webhooks.quarter(step, total) if self.wants_progress else 0
        # A quarter passed is written (and announced) at once, so no quarter's event is skipped.
        if (
            step < total
            and now - self.last_write < PROGRESS_WRITE_INTERVAL
            and passed <= self.reached
        ):
            return
        self.last_write = now
        if not self.mine.update(progress_step=step, progress_total=total):
            raise JobLost(job.pk)
        if passed > self.reached:
            self.reached = passed
            announce(webhooks.job_progressed, job.pk, passed)

    def outputs(self, result: Any) -> list[OutputImage]:
        """Encode and store the result's images; the rows to create when the job succeeds."""
        from generation.engine.pngmeta import a1111_parameters, encode_image

        job, req = self.job, self.req
        outputs = []
        for index, (image, seed, nsfw) in enumerate(
            zip(result.images, result.seeds, result.nsfw, strict=True)
        ):
            path = job.output_path(index)
            parameters = a1111_parameters(req, seed)
            # Paths are fixed per job and index, so a retried job overwrites its own files.
            media.save_over(
                path, encode_image(image, parameters, req.output_format, req.output_quality)
            )
            outputs.append(
                OutputImage(
                    job=job,
                    index=index,
                    path=path,
                    seed=seed,
                    nsfw=nsfw,
                    width=image.width,
                    height=image.height,
                )
            )
        return outputs

    def end(self, exc: BaseException) -> None:
        """The job stops early: lost (nothing to do), handed back, or failed and refunded."""
        job = self.job
        if isinstance(exc, JobLost):
            log.warning("job %s was taken from this worker; its result is dropped", job.pk)
        elif isinstance(exc, HandedBack):
            hand_back(self.mine, job.pk)
        else:
            log.error("job %s failed", job.pk, exc_info=exc)
            error = f"{type(exc).__name__}: {exc}"[:2000]
            finish(self.mine, job.pk, status=Job.Status.FAILED, error=error)

    def succeed(self, outputs: list[OutputImage], seconds: float) -> None:
        """Mark the job a success with its outputs, unless it is no longer ours."""
        job, req = self.job, self.req
        with transaction.atomic():
            finished = finish(
                self.mine,
                job.pk,
                status=Job.Status.SUCCESS,
                generation_time=seconds,
                progress_step=req.steps,
                progress_total=req.steps,
            )
            if finished:
                OutputImage.objects.bulk_create(outputs)
                transaction.on_commit(
                    lambda: metrics.GENERATION.labels(
                        kind=job.kind, model=job.model.model_id
                    ).observe(seconds)
                )
        if finished:
            log.info("job %s done in %.2f s", job.pk, seconds)
        else:
            log.warning("job %s finished after losing its lease; result dropped", job.pk)


def hand_back(rows: QuerySet[Job], job_id: int) -> None:
    """Put a job this stopping worker claimed back in the queue, for another worker, now."""
    with transaction.atomic():
        changed = rows.update(
            status=Job.Status.QUEUED, lease_expires_at=None, worker="", progress_step=0
        )
        if changed:
            transaction.on_commit(lambda: enqueue_job(job_id))
    if changed:
        log.warning("job %s handed back to the queue: this worker is stopping", job_id)


def addon_refs(job: Job, req: GenerationRequest) -> dict[str, ModelRef]:
    """The LoRAs, embeddings, VAE and ControlNet the request names, among the tenant's models."""
    names = {name for name, _weight in req.loras} | set(req.embeddings)
    names |= {name for name in (req.vae, req.controlnet_model, req.ip_adapter, req.refiner) if name}
    names |= {unit.model for unit in req.controlnet_units}
    if not names:
        return {}
    found = AIModel.objects.visible_to(job.organization).filter(model_id__in=names)
    return {model.model_id: model.ref() for model in found}


def input_images(req: GenerationRequest) -> dict[str, Any]:
    """The request's input images, read back from storage where the web tier put them."""
    return {name: open_image(stored) for name, stored in req.input_images().items()}


@contextmanager
def lease_kept(job: Job, mine: QuerySet[Job]) -> Iterator[None]:
    """Renew the job's lease from a heartbeat thread while the body runs.

    The lease says "this worker process is alive", so it must not depend on diffusion steps:
    a VAE decode or an upload can outlast it. A killed process stops renewing at once.
    """
    stop = threading.Event()
    interval = max(settings.PICTOR_JOB_LEASE / 3, 0.1)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                if not mine.update(lease_expires_at=job.lease_deadline()):
                    return
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name=f"lease-{job.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def sweep() -> int:
    """Reap expired leases, give each runnable queued job a broker task if it lacks one, and
    queue again the own-model validations that seem lost (own_models.requeue_lost_validations).

    The Job table is the queue of record; broker tasks are only wake-ups. They are lost when
    Redis restarts without persistence or a killed worker took some in advance, and then queued
    jobs would wait for unrelated traffic. Returns the number of wake-ups enqueued.
    """
    from django_q.brokers import get_broker

    reap_expired_jobs()
    try:
        own_models.requeue_lost_validations()
    except Exception:  # the job queue's sweep must go on
        log.exception("could not queue lost model validations again")
    missing = max(runnable_queued_jobs() - get_broker().queue_size(), 0)
    for _ in range(missing):
        enqueue_job(None)
    if missing:
        log.info("sweep enqueued %s wake-ups for queued jobs", missing)
    return missing


def runnable_queued_jobs() -> int:
    """Queued jobs a worker could claim now: per organization, at most its free slots."""
    queued = dict(
        Job.objects.filter(status=Job.Status.QUEUED)
        .values_list("organization")
        .annotate(count=Count("pk"))
    )
    if not queued:
        return 0
    running = dict(
        Job.objects.filter(status=Job.Status.PROCESSING, organization__in=queued)
        .values_list("organization")
        .annotate(count=Count("pk"))
    )
    limits = Organization.objects.filter(pk__in=queued).values_list("pk", "plan__concurrent_jobs")
    return sum(min(queued[org], max(limit - running.get(org, 0), 0)) for org, limit in limits)


def warm_worker(sender: object, proc_name: str = "", **kwargs: object) -> None:
    """Start the heartbeat, and load the default model and the safety classifier (post_spawn).

    So the first job a fresh worker gets runs warm instead of paying seconds of loading.
    """
    from django_q.conf import Conf

    # Before anything else: a device this host lacks stops the worker with the reason.
    heartbeat.engine_device()
    # In sync mode django-q2 "spawns" inside the caller (a web process, a test) for every
    # task: no heartbeat thread there, only the rows run_next_job writes.
    if not Conf.SYNC:
        heartbeat.start(worker_name())
    if not settings.PICTOR_WARM_WORKERS:
        return
    model = AIModel.objects.filter(is_default=True, enabled=True).first()
    if model is None:
        return
    from generation.engine import safety
    from generation.engine.cache import default_cache

    try:
        default_cache.get(model.ref())
        safety.classifier()
    except Exception:
        # Not fatal: the first job loads it again and reports the error on the job.
        log.exception("worker %s could not preload %s", proc_name, model.model_id)
    else:
        log.info("worker %s preloaded %s", proc_name, model.model_id)
