"""Sample thumbnails of checkpoints on the models page: one small image per model, made once.

When the page shows a ready checkpoint without a sample, the page claims it (sample_state '' ->
pending, one atomic UPDATE, so two views at once queue it once) and a worker makes it
(make_sample, a django-q2 task): a fixed neutral prompt and seed, few steps, a small side, through
the engine's runner like a job's images, but without a Job, so no tenant is charged and no
history lists it. The PNG is stored privately beside the outputs and shown through a signed link
(generation/media.py), rendered only for organizations that see the model.

A failure is recorded on the model and never retried. A claim whose task never ran (the broker
lost it) is taken again once it is older than stale_after(); after MAX_ATTEMPTS such claims the
sample is given up as failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task
from PIL import Image

from generation import media
from generation.engine.request import GenerationRequest
from generation.fewstep import DEFAULT_FEW_STEPS, LCM_SCHEDULER
from generation.models import AIModel
from generation.queue import QueueUnavailable, check_broker

log = logging.getLogger(__name__)

SAMPLE_TASK = "generation.model_samples.make_sample"
State = AIModel.SampleState
# The same picture for every model, so samples compare checkpoints and nothing else.
PROMPT = "a quiet lake between green hills under a clear sky, soft daylight"
NEGATIVE_PROMPT = "text, watermark"
SEED = 1234
STEPS = 8
GUIDANCE = 7.0
# Small and cheap: the page shows 64 px. SDXL makes little of less than 256 px.
SIDE = 128
SIDES: dict[str, int] = {AIModel.Base.SDXL: 256}
# Claims of one model, the first and those after a lost task; then it is given up.
MAX_ATTEMPTS = 3
# Samples one page view queues at most, so a first view of many checkpoints stays quick.
PER_VIEW = 10


def side(model: AIModel) -> int:
    """The width and height of a model's sample, in pixels."""
    return SIDES.get(model.base, SIDE)


def storage_name(model: AIModel) -> str:
    """Where a model's sample is stored: fixed per model, so a second attempt overwrites it."""
    owner = model.organization_id if model.organization_id is not None else "public"
    return f"samples/{owner}/{model.pk}.png"


def stale_after() -> timedelta:
    """How long a claim waits for its task before a page view may queue the model again."""
    # Past django-q2's own retries of a task that a killed worker left (retry × max_attempts).
    cluster: dict[str, Any] = settings.Q_CLUSTER
    seconds = int(cluster.get("retry", 0)) * max(int(cluster.get("max_attempts", 1)), 1)
    return timedelta(seconds=max(seconds, 3600))


def wanted(model: AIModel) -> bool:
    """Whether the page should claim this model's sample now (a cheap check before the claim)."""
    if not (model.is_checkpoint and model.enabled and model.status == AIModel.Status.READY):
        return False
    if model.sample_state == State.NONE:
        return True
    return (
        model.sample_state == State.PENDING
        and model.sample_at is not None
        and model.sample_at < timezone.now() - stale_after()
    )


def claim(model_pk: int) -> int | None:
    """Mark the model's sample pending if nobody has (an atomic UPDATE); the attempt, or None.

    A pending claim older than stale_after() lost its task: it is taken again, or given up as
    failed once MAX_ATTEMPTS claims were lost.
    """
    now = timezone.now()
    rows = AIModel.objects.filter(
        pk=model_pk, enabled=True, status=AIModel.Status.READY, family__in=AIModel.CHECKPOINTS
    )
    lost = Q(sample_state=State.PENDING, sample_at__lt=now - stale_after())
    rows.filter(lost, sample_attempts__gte=MAX_ATTEMPTS).update(
        sample_state=State.FAILED,
        sample_error=f"Its task was lost {MAX_ATTEMPTS} times.",
        sample_at=now,
    )
    claimed = rows.filter(
        Q(sample_state=State.NONE) | (lost & Q(sample_attempts__lt=MAX_ATTEMPTS))
    ).update(
        sample_state=State.PENDING,
        sample_attempts=F("sample_attempts") + 1,
        sample_at=now,
        sample_error="",
    )
    if not claimed:
        return None
    return AIModel.objects.values_list("sample_attempts", flat=True).get(pk=model_pk)


def request_samples(models: Iterable[AIModel]) -> int:
    """Queue a sample for each of these models that lacks one; returns how many were queued.

    The page calls this with the models it shows. A broker that does not answer queues nothing
    and claims nothing (a later view tries again), so the page renders as before.
    """
    todo = [model for model in models if wanted(model)][:PER_VIEW]
    if not todo:
        return 0
    try:
        check_broker()
    except QueueUnavailable:
        return 0
    queued = 0
    for model in todo:
        attempt = claim(model.pk)
        if attempt is None:  # another view claimed it first, or it was given up
            refresh(model)
            continue
        try:
            async_task(
                SAMPLE_TASK,
                model.pk,
                attempt,
                task_name=f"model-sample-{model.pk}-{attempt}",
                group="models",
            )
        except Exception as exc:  # any broker client error: give the claim back
            log.warning("model %s: its sample could not be queued: %s", model.model_id, exc)
            AIModel.objects.filter(
                pk=model.pk, sample_state=State.PENDING, sample_attempts=attempt
            ).update(sample_state=State.NONE, sample_attempts=F("sample_attempts") - 1)
        else:
            queued += 1
        refresh(model)  # pending now, or made already when tasks run inline
    return queued


def refresh(model: AIModel) -> None:
    model.refresh_from_db(
        fields=["sample_state", "sample_path", "sample_error", "sample_attempts", "sample_at"]
    )


def sample_request(model: AIModel) -> GenerationRequest:
    """The fixed request a model's sample is made with (an inpainting one repaints a blank)."""
    n = side(model)
    few = bool(model.distillation)
    options: dict[str, Any] = {}
    if model.distillation == AIModel.Distillation.LCM:
        options["scheduler"] = LCM_SCHEDULER
    if model.family == AIModel.Family.INPAINT:
        options.update(kind="inpaint", init_image="blank", mask_image="all", strength=1.0)
    return GenerationRequest(
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        model_id=model.model_id,
        width=n,
        height=n,
        # A few-step model runs its own few steps, without classifier-free guidance.
        steps=DEFAULT_FEW_STEPS if few else STEPS,
        guidance_scale=1.0 if few else GUIDANCE,
        seed=SEED,
        safety_checker=True,
        safety_checker_type="blur",
        **options,
    )


def render(model: AIModel, req: GenerationRequest) -> Image.Image:
    """Run the sample's request on this worker's engine; the one image."""
    from generation.engine import runner

    images: dict[str, Any] = {}
    if req.kind == "inpaint":
        size = (req.width, req.height)
        # The request names these inputs; the engine takes them from here, not from storage.
        images = {
            "init_image": Image.new("RGB", size, (128, 128, 128)),
            "mask_image": Image.new("L", size, 255),  # repaint every pixel
        }
    result = runner.generate(
        req, model.ref(), images=images, nsfw_threshold=settings.PICTOR_NSFW_THRESHOLD
    )
    return result.images[0]


def make_sample(model_pk: int, attempt: int) -> str:
    """The django-q2 task: make and store one model's sample; "ready", "failed" or "gone"."""
    from generation.engine.pngmeta import a1111_parameters, encode_image

    mine = AIModel.objects.filter(pk=model_pk, sample_state=State.PENDING, sample_attempts=attempt)
    model = mine.first()
    if model is None:
        return "gone"  # made, failed, requeued or deleted since it was queued
    name = storage_name(model)
    try:
        req = sample_request(model)
        image = render(model, req)
        media.save_over(name, encode_image(image, a1111_parameters(req, req.seed)))
    except Exception as exc:
        log.warning("model %s: its sample failed: %s", model.model_id, exc)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        changed = mine.update(
            sample_state=State.FAILED, sample_error=error, sample_at=timezone.now()
        )
        return "failed" if changed else "gone"
    if not mine.update(sample_state=State.READY, sample_path=name, sample_at=timezone.now()):
        if not AIModel.objects.filter(pk=model_pk, enabled=True).exists():
            default_storage.delete(name)  # deleted while it was made
        return "gone"
    log.info("model %s: sample made", model.model_id)
    return "ready"


def sample_url(model: AIModel) -> str:
    """A signed link to the model's sample, or "" when there is none (yet)."""
    if model.sample_state != State.READY or not model.sample_path:
        return ""
    return media.signed_url(model.sample_path)


def delete_sample(model: AIModel) -> None:
    """Remove a deleted model's stored sample."""
    if model.sample_path:
        default_storage.delete(model.sample_path)
