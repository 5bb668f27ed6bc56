"""The Dan wire format (docs/architecture.md): Bearer key, `{"code", "data", "message"}` answers.

POST /api/sd/txt2img queues a text2img (or ControlNet) task, waits up to PICTOR_SYNC_WAIT like
the ModelsLab endpoints, then answers the task's state; GET /api/sd/txt2img/<taskId> (or Dan's
POST /api/sd/task/status) polls it. The public anonymous key works here and nowhere else. The
body's fields and sizes are in serializers.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from accounts.auth import AnonymousKeyAuthentication
from generation import jobs, service
from generation.api import base, polling
from generation.api.dan.answers import DanTaskAnswer, task_body
from generation.api.dan.serializers import DanTxt2ImgSerializer
from generation.api.errors import Problem

if TYPE_CHECKING:
    from accounts.requests import OrgRequest

TASK_NOT_FOUND = "Task not found"


def error_body(problem: Problem) -> dict[str, Any]:
    """Dan's error: {"code": <HTTP status>, "data": null, "message": "<one line>"}."""
    message = problem.text
    if problem.tips and problem.kind != "auth":
        message = f"{message}. {problem.tips}"
    return {"code": problem.status, "data": None, "message": message}


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


class DanView(base.FormatView):
    """A Dan endpoint: Bearer or anonymous key, errors as {"code", "data": null, "message"}."""

    # The only views that take the public anonymous key (when it is switched on).
    authentication_classes = [AnonymousKeyAuthentication]
    error_body = staticmethod(error_body)

    def task(self, request: OrgRequest, task_id: Any) -> Response:
        """The caller's task by id; another tenant's or a malformed id is "not found" too."""
        text = str(task_id).strip()
        job = None
        if text.isascii() and text.isdigit() and len(text) < 19:
            job = jobs.polled(request.user.organization, int(text))
        if job is None:
            raise NotFound(TASK_NOT_FOUND)
        job = jobs.refresh_lease_state(job)
        return polling.hinted(Response(DanTaskAnswer(task_body(job)).data), job)


class Txt2ImgView(DanView):
    """POST /api/sd/txt2img: queue a task, wait PICTOR_SYNC_WAIT, answer its state."""

    @extend_schema(
        tags=["Dan"],
        summary="Generate an image from text (Dan)",
        description=(
            "Queues the task and waits a few seconds for it; answers its state (status 2 with "
            "the images as base64 PNGs when it finished in time, else poll "
            "GET /api/sd/txt2img/{taskId}). "
            "width/height: 8..1024, rounded to the nearest multiple of 8 and at least 64."
        ),
        request=DanTxt2ImgSerializer,
        responses={200: DanTaskAnswer, **ERRORS},
    )
    def post(self, request: OrgRequest) -> Response:
        job = self.submit_body(request, DanTxt2ImgSerializer)
        job = service.wait_for(job, service.wait_seconds(request, settings.PICTOR_SYNC_WAIT))
        return Response(DanTaskAnswer(task_body(job)).data)


class TaskView(DanView):
    """GET /api/sd/txt2img/<taskId>: the caller's task."""

    poll_methods = polling.POLL_METHODS

    @extend_schema(
        tags=["Dan"],
        summary="A text2img task's state (Dan)",
        responses={200: DanTaskAnswer, **POLL_ERRORS},
    )
    def get(self, request: OrgRequest, task_id: str) -> Response:
        return self.task(request, task_id)


class TaskStatusView(DanView):
    """POST /api/sd/task/status with {"taskId": ...}: Dan's own poll, for its clients."""

    poll_methods = polling.POLL_METHODS

    @extend_schema(
        tags=["Dan"],
        summary="A task's state, by taskId in the body (Dan)",
        request=inline_serializer("DanTaskStatusRequest", {"taskId": serializers.CharField()}),
        responses={200: DanTaskAnswer, 400: ERROR, **POLL_ERRORS},
    )
    def post(self, request: OrgRequest) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        task_id = data.get("taskId")
        if task_id is None or task_id == "":
            raise ValidationError({"taskId": ["The taskId field is required."]})
        return self.task(request, task_id)
