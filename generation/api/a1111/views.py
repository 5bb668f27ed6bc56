"""The AUTOMATIC1111 format's views: generate and wait, settings, progress, cancel.

The list views are in listings.py; the routes in urls.py.

What the format is and where it differs from webui: this package's docstring (__init__.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts.models import ApiKey
from generation import estimates, jobs, previews, submission
from generation.api import polling
from generation.api.a1111.answers import (
    GENERATION_ERRORS,
    DetailAnswer,
    EmptyAnswer,
    ErrorAnswer,
    ImagesAnswer,
    OptionsAnswer,
    ProgressAnswer,
    ValidationAnswer,
    echo,
    generation_info,
    read_outputs,
)
from generation.api.a1111.checkpoints import find_model, options
from generation.api.a1111.errors import A1111View, refuse_unstorable_names
from generation.api.a1111.serializers import Img2ImgBody, Txt2ImgBody, read_body, validated
from generation.api.a1111.tables import TAG
from generation.models import Job

if TYPE_CHECKING:
    from accounts.requests import KeyRequest


def own_jobs(request: KeyRequest) -> QuerySet[Job]:
    """The waiting jobs made with the caller's key (never another key's, never another tenant's)."""
    return (
        Job.objects.for_org(request.user.organization)
        .filter(api_key=request.auth)
        .waiting()
        .order_by("created_at", "pk")
    )


def current_job(request: KeyRequest) -> Job | None:
    """The caller's job webui would report: the oldest one running, else the oldest queued."""
    jobs = own_jobs(request)
    return (
        jobs.filter(status=Job.Status.PROCESSING).first()
        or jobs.filter(status=Job.Status.QUEUED).first()
    )


def null_response() -> HttpResponse:
    """FastAPI's answer for an endpoint that returns nothing: JSON `null`."""
    return HttpResponse(b"null", content_type="application/json")


class GenerateView(A1111View):
    """POST txt2img or img2img: queue the job, wait for it, answer webui's images/info."""

    body_class: type[Txt2ImgBody] = Txt2ImgBody

    def post(self, request: KeyRequest) -> Response:
        body = read_body(request.data)
        values = validated(self.body_class, body, request)
        kind = self.body_class.kind
        model, sampler = values["checkpoint"], values["sampler"]
        job_kind, fields = values["job_kind"], values["fields"]
        # Every lookup that names a field ran in the serializer, in webui's names; what submit
        # still checks (GenerationRequest.problems) those fields' bounds have already refused.
        job = submission.submit(request, fields, job_kind, model=model)
        try:
            job = submission.wait_until_done(job, request)
        except submission.GenerationFailed:
            job.refresh_from_db()
            if job.status != Job.Status.CANCELED:
                raise
        images, facts = read_outputs(job) if job.status == Job.Status.SUCCESS else ([], [])
        info = generation_info(job, model, values, sampler, facts)
        return Response(
            ImagesAnswer(
                {
                    "images": images if values["send_images"] else [],
                    "parameters": echo(body, values, sampler, kind),
                    "info": json.dumps(info),
                }
            ).data
        )


class Txt2ImgView(GenerateView):
    """POST /sdapi/v1/txt2img."""

    body_class = Txt2ImgBody

    @extend_schema(
        tags=[TAG],
        summary="Generate images from a prompt (waits for them)",
        request=Txt2ImgBody,
        responses={200: ImagesAnswer, **GENERATION_ERRORS},
    )
    def post(self, request: KeyRequest) -> Response:
        return super().post(request)


class Img2ImgView(GenerateView):
    """POST /sdapi/v1/img2img: from one init image; with a mask, an inpaint."""

    body_class = Img2ImgBody

    @extend_schema(
        tags=[TAG],
        summary="Generate images from an init image, or inpaint with a mask (waits for them)",
        request=Img2ImgBody,
        responses={200: ImagesAnswer, **GENERATION_ERRORS},
    )
    def post(self, request: KeyRequest) -> Response:
        return super().post(request)


class OptionsView(A1111View):
    """GET /sdapi/v1/options; POST sets this key's default checkpoint."""

    @extend_schema(
        tags=[TAG],
        summary="Settings (the checkpoint is this key's default)",
        request=None,
        responses={200: OptionsAnswer, 401: DetailAnswer},
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(OptionsAnswer(options(request.user.organization, request.auth)).data)

    @extend_schema(
        tags=[TAG],
        summary="Set this key's default checkpoint",
        request=inline_serializer(
            "A1111SetOptions",
            {"sd_model_checkpoint": serializers.CharField(help_text="A title or model name")},
        ),
        responses={
            200: OpenApiResponse(description="The body is JSON null."),
            400: ErrorAnswer,
            404: DetailAnswer,
            422: ValidationAnswer,
        },
    )
    def post(self, request: KeyRequest) -> HttpResponse:
        org = request.user.organization
        body = read_body(request.data)
        # Checked here too, not only by the JSON parser: a name or value that cannot be stored
        # must not reach a query or an error message (which could not be encoded).
        refuse_unstorable_names(body, "body")
        current = options(org, request.auth)
        model = None
        for key, value in body.items():
            if key == "sd_model_checkpoint":
                model = find_model(org, value, key)
            elif key not in current or value != current[key]:
                raise ValidationError(
                    {
                        key: [
                            "Only sd_model_checkpoint can be set on this server; other settings "
                            "keep the values GET /sdapi/v1/options reports."
                        ]
                    }
                )
        if model is not None:
            ApiKey.objects.filter(pk=request.auth.pk).update(default_model=model)
        return null_response()


class ProgressView(A1111View):
    """GET /sdapi/v1/progress: the caller's current job (made with this key), as webui's state."""

    poll_methods = polling.POLL_METHODS

    @extend_schema(
        tags=[TAG],
        summary="Progress of this key's current job",
        request=None,
        parameters=[
            OpenApiParameter(
                "skip_current_image", bool, description="Leave out the running job's preview"
            )
        ],
        responses={200: ProgressAnswer, 401: DetailAnswer},
    )
    def get(self, request: KeyRequest) -> Response:
        job = current_job(request)
        state = {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if job is None:
            return Response(
                ProgressAnswer(
                    {
                        "progress": 0,
                        "eta_relative": 0,
                        "state": state,
                        "current_image": None,
                        "textinfo": None,
                    }
                ).data
            )
        job = jobs.refresh_lease_state(job)
        running = job.status == Job.Status.PROCESSING
        step, total = (job.progress_step, job.progress_total) if running else (0, 0)
        skip = request.query_params.get("skip_current_image", "").lower() in ("true", "1")
        current_image = previews.latest(job.pk) if running and not skip else None
        state.update(
            job=job.kind,
            job_count=own_jobs(request).count(),
            job_timestamp=(job.started_at or job.created_at).strftime("%Y%m%d%H%M%S"),
            sampling_step=step,
            sampling_steps=total,
        )
        answer = ProgressAnswer(
            {
                "progress": round(step / total, 4) if total else 0.0,
                "eta_relative": estimates.eta(job),
                "state": state,
                "current_image": current_image,
                "textinfo": f"Step {step}/{total}" if running else "Waiting in the queue",
            }
        )
        return polling.hinted(Response(answer.data), job)


class InterruptView(A1111View):
    """POST /sdapi/v1/interrupt: cancel (and refund) every queued or running job of this key."""

    @extend_schema(
        tags=[TAG],
        summary="Cancel this key's queued and running jobs",
        request=None,
        # drf-spectacular writes a serializer without fields as "no body": say what it is.
        responses={
            200: OpenApiResponse(EmptyAnswer, description="An empty JSON object."),
            401: DetailAnswer,
        },
    )
    def post(self, request: KeyRequest) -> Response:
        for job in own_jobs(request):
            jobs.cancel(job)
        return Response(EmptyAnswer({}).data)


class SkipView(A1111View):
    """POST /sdapi/v1/skip: cancel (and refund) this key's current job only."""

    @extend_schema(
        tags=[TAG],
        summary="Cancel this key's current job",
        request=None,
        responses={200: OpenApiResponse(description="The body is JSON null."), 401: DetailAnswer},
    )
    def post(self, request: KeyRequest) -> HttpResponse:
        job = current_job(request)
        if job is not None:
            jobs.cancel(job)
        return null_response()
