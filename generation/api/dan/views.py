"""The Dan wire format (docs/architecture.md): Bearer key, `{"code", "data", "message"}` answers.

POST /api/sd/txt2img queues a text2img (or ControlNet) task, waits up to PICTOR_SYNC_WAIT like
the ModelsLab endpoints, then answers the task's state; GET /api/sd/txt2img/<taskId> (or Dan's
POST /api/sd/task/status) polls it. The public anonymous key works here and nowhere else. The
body's fields and sizes are in serializers.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Q
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from accounts.auth import AnonymousKeyAuthentication
from generation import answers, jobs, media, service
from generation.api import base
from generation.api.dan.serializers import DanTxt2ImgSerializer
from generation.api.errors import Problem
from generation.models import Job

if TYPE_CHECKING:
    from accounts.requests import OrgRequest

QUEUED, RUNNING, DONE, FAILED = 0, 1, 2, 3
TASK_STATUS: dict[str, int] = {
    Job.Status.QUEUED: QUEUED,
    Job.Status.PROCESSING: RUNNING,
    Job.Status.SUCCESS: DONE,
    Job.Status.FAILED: FAILED,
    Job.Status.CANCELED: FAILED,
}
TASK_NOT_FOUND = "Task not found"


def error_body(problem: Problem) -> dict[str, Any]:
    """Dan's error: {"code": <HTTP status>, "data": null, "message": "<one line>"}."""
    message = problem.text
    if problem.tips and problem.kind != "auth":
        message = f"{message}. {problem.tips}"
    return {"code": problem.status, "data": None, "message": message}


class DanTaskSerializer(serializers.Serializer):
    taskId = serializers.CharField()
    queuePosition = serializers.IntegerField(help_text="Queued jobs ahead of this one")
    status = serializers.ChoiceField(
        choices=[QUEUED, RUNNING, DONE, FAILED], help_text="0 queued, 1 running, 2 done, 3 failed"
    )
    images = serializers.ListField(child=serializers.URLField(), help_text="PNG URLs when done")
    seed = serializers.IntegerField(help_text="The seed used (of the first image)")
    error = serializers.CharField(required=False, help_text="Why, when status is 3")


ANSWER = inline_serializer(
    "DanTaskAnswer",
    {
        "code": serializers.IntegerField(default=200),
        "data": DanTaskSerializer(),
        "message": serializers.CharField(default="success"),
    },
)
ERROR = inline_serializer(
    "DanError",
    {
        "code": serializers.IntegerField(help_text="The HTTP status"),
        "data": serializers.JSONField(allow_null=True, help_text="Always null"),
        "message": serializers.CharField(),
    },
)
ERRORS = {status: ERROR for status in (400, 401, 402, 403, 404, 429, 503)}
POLL_ERRORS = {status: ERROR for status in (401, 403, 404, 429)}


def queue_position(job: Job) -> int:
    """How many queued jobs the worker claims before this one (0 once it runs or ends)."""
    if job.status != Job.Status.QUEUED:
        return 0
    # The claim order: priority first, then age (generation/tasks.py claim_next_job).
    ahead = Q(priority__gt=job.priority) | Q(priority=job.priority, created_at__lt=job.created_at)
    ahead |= Q(priority=job.priority, created_at=job.created_at, pk__lt=job.pk)
    return Job.objects.filter(ahead, status=Job.Status.QUEUED).count()


def task_answer(job: Job, base_url: str) -> dict[str, Any]:
    """Dan's body for a task in any state."""
    status = TASK_STATUS[job.status]
    images: list[str] = []
    if status == DONE and not job.expired_at:
        seconds = media.job_lifetime(job)
        images = [
            answers.absolute(base_url, media.signed_url(output.path, seconds))
            for output in job.outputs.order_by("index")
        ]
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


class DanView(base.FormatView):
    """A Dan endpoint: Bearer or anonymous key, errors as {"code", "data": null, "message"}."""

    # The only views that take the public anonymous key (when it is switched on).
    authentication_classes = [AnonymousKeyAuthentication]
    error_body = staticmethod(error_body)

    def task(self, request: OrgRequest, task_id: Any) -> Response:
        """The caller's task by id; another tenant's or a malformed id is "not found" too."""
        text = str(task_id).strip()
        job = None
        if text.isdigit() and len(text) < 19:
            job = Job.objects.for_org(request.user.organization).filter(pk=int(text)).first()
        if job is None:
            raise NotFound(TASK_NOT_FOUND)
        job = jobs.refresh_lease_state(job)
        return Response(task_answer(job, answers.base_url_for(request)))


class Txt2ImgView(DanView):
    """POST /api/sd/txt2img: queue a task, wait PICTOR_SYNC_WAIT, answer its state."""

    @extend_schema(
        tags=["Dan"],
        summary="Generate an image from text (Dan)",
        description=(
            "Queues the task and waits a few seconds for it; answers its state (status 2 with "
            "image URLs when it finished in time, else poll GET /api/sd/txt2img/{taskId}). "
            "width/height: 8..1024, rounded to the nearest multiple of 8 and at least 64."
        ),
        request=DanTxt2ImgSerializer,
        responses={200: ANSWER, **ERRORS},
    )
    def post(self, request: OrgRequest) -> Response:
        job = self.submit_body(request, DanTxt2ImgSerializer)
        job = service.wait_for(job, settings.PICTOR_SYNC_WAIT)
        return Response(task_answer(job, answers.base_url_for(request)))


class TaskView(DanView):
    """GET /api/sd/txt2img/<taskId>: the caller's task."""

    @extend_schema(
        tags=["Dan"],
        summary="A text2img task's state (Dan)",
        responses={200: ANSWER, **POLL_ERRORS},
    )
    def get(self, request: OrgRequest, task_id: str) -> Response:
        return self.task(request, task_id)


class TaskStatusView(DanView):
    """POST /api/sd/task/status with {"taskId": ...}: Dan's own poll, for its clients."""

    @extend_schema(
        tags=["Dan"],
        summary="A task's state, by taskId in the body (Dan)",
        request=inline_serializer("DanTaskStatusRequest", {"taskId": serializers.CharField()}),
        responses={200: ANSWER, 400: ERROR, **POLL_ERRORS},
    )
    def post(self, request: OrgRequest) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        task_id = data.get("taskId")
        if task_id is None or task_id == "":
            raise ValidationError({"taskId": ["The taskId field is required."]})
        return self.task(request, task_id)
