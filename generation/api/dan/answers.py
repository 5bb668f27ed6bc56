"""What Dan answers: `{"code": 200, "data": <the task>, "message": "success"}`.

`task_body` builds the answer for a task in any state; the `DanTaskAnswer` serializer renders
it and is what the OpenAPI schema names, so the two cannot drift apart. Images are base64 PNG
strings, as Dan's document says, never URLs.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from django.db.models import Q
from PIL import Image
from rest_framework import serializers

from generation import answers
from generation.answers import Answer
from generation.models import Job

QUEUED, RUNNING, DONE, FAILED = 0, 1, 2, 3
TASK_STATUS: dict[str, int] = {
    Job.Status.QUEUED: QUEUED,
    Job.Status.PROCESSING: RUNNING,
    Job.Status.SUCCESS: DONE,
    Job.Status.FAILED: FAILED,
    Job.Status.CANCELED: FAILED,
}


class DanTask(Answer):
    """The task: its id, place in the queue, state and, once done, images."""

    taskId = serializers.CharField()  # noqa: N815 (the wire name)
    queuePosition = serializers.IntegerField(help_text="Queued jobs ahead of this one")  # noqa: N815
    status = serializers.ChoiceField(
        choices=[QUEUED, RUNNING, DONE, FAILED], help_text="0 queued, 1 running, 2 done, 3 failed"
    )
    images = serializers.ListField(
        child=serializers.CharField(), help_text="The PNGs, base64, once done (else empty)"
    )
    seed = serializers.IntegerField(help_text="The seed used (of the first image)")
    error = serializers.CharField(required=False, help_text="Why, when status is 3")


class DanTaskAnswer(Answer):
    """A task in any state, wrapped as Dan wraps every answer."""

    code = serializers.IntegerField(help_text="Always 200 here")
    # The wire name; DRF takes declared fields off the class, so `.data` still renders.
    # The wire field `data`: DRF's metaclass moves declared fields off the class, so the
    # serializer's `.data` property stays; mypy sees only the name clash.
    data = DanTask()  # type: ignore[assignment]
    message = serializers.CharField(help_text='Always "success" here')


def queue_position(job: Job) -> int:
    """How many queued jobs the worker claims before this one (0 once it runs or ends)."""
    if job.status != Job.Status.QUEUED:
        return 0
    # The claim order: priority first, then age (generation/tasks.py claim_next_job).
    ahead = Q(priority__gt=job.priority) | Q(priority=job.priority, created_at__lt=job.created_at)
    ahead |= Q(priority=job.priority, created_at=job.created_at, pk__lt=job.pk)
    return Job.objects.filter(ahead, status=Job.Status.QUEUED).count()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def as_png_base64(data: bytes) -> str:
    """An image as base64 PNG, as Dan's document promises: a job another format submitted with
    `output_format` jpeg or webp (its id polled here) is stored in that format."""
    if not data.startswith(PNG_SIGNATURE):
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data = buffer.getvalue()
    return base64.b64encode(data).decode()


def task_body(job: Job) -> dict[str, Any]:
    """Dan's body for a task in any state, before `DanTaskAnswer` renders it."""
    status = TASK_STATUS[job.status]
    # A done task's images, unless the plan's retention has deleted them.
    images = (
        [as_png_base64(data) for _row, data in answers.output_files(job)]
        if status == DONE and not job.expired_at
        else []
    )
    data: dict[str, Any] = {
        "taskId": str(job.pk),
        "queuePosition": queue_position(job),
        "status": status,
        "images": images,
        "seed": job.params["seed"],
    }
    if status == FAILED:
        data["error"] = (
            "Canceled; the credits were refunded."
            if job.status == Job.Status.CANCELED
            else "Generation failed; the credits were refunded."
        )
    return {"code": 200, "data": data, "message": "success"}
