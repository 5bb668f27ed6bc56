"""The job API's views (the format: this package's docstring); every job comes from for_org()."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import Count, Exists, OuterRef, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.response import Response

from accounts.auth import require_manager_or_submitter
from billing import ledger, limits
from billing.models import CreditEntry
from generation import estimates, jobs, media, quotas, retention
from generation.answers import absolute, base_url_for, job_meta
from generation.api import polling
from generation.api.base import FormatView
from generation.api.errors import Problem, modelslab_body
from generation.api.jobs import serializers as shapes
from generation.models import Job, JobQuerySet

if TYPE_CHECKING:
    from accounts.models import Organization
    from accounts.requests import KeyRequest

TAG = "Jobs"
ERROR_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}
# The reasons a client may read as they are; a worker's exception text may name server paths.
PUBLIC_ERRORS = {
    jobs.CANCELED_BY_CLIENT,
    jobs.NOT_READY_IN_TIME,
    "The worker running this job stopped answering.",
}
FAILED = "The generation failed; its credits were refunded."
CANCELED = "Canceled"
NOT_FOUND = "No such job."


def error_body(problem: Problem) -> dict[str, Any]:
    """{"error": {"code", "message", "field"}}: `field` names the one field or filter at fault."""
    field = None
    if isinstance(problem.message, dict) and len(problem.message) == 1:
        field = next(iter(problem.message))
    code = ERROR_CODES.get(problem.status) or problem.kind or "error"
    return {"error": {"code": code, "message": problem.text, "field": field}}


class Conflict(APIException):
    """The job is in a state that does not allow this (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The job's state does not allow this."
    default_code = "conflict"


def job_body(job: Job, base_url: str) -> dict[str, Any]:
    """A job as the job API shows it, with fresh signed links to its images."""
    waiting = not job.is_finished
    if job.status == Job.Status.SUCCESS:
        progress = 1.0
    else:
        progress = job.progress_step / job.progress_total if job.progress_total else 0.0
    outputs = []
    if job.status == Job.Status.SUCCESS and job.expired_at is None:
        seconds = media.job_lifetime(job)
        outputs = [
            {
                "index": row.index,
                "url": absolute(base_url, media.signed_url(row.path, seconds)),
                "seed": row.seed,
                "nsfw": row.nsfw,
                "width": row.width,
                "height": row.height,
            }
            for row in job.outputs.all()
        ]
    refunded = getattr(job, "refunded", None)
    if refunded is None:
        refunded = CreditEntry.objects.filter(job=job, kind=CreditEntry.Kind.REFUND).exists()
    error = None
    if job.status in (Job.Status.FAILED, Job.Status.CANCELED):
        fallback = FAILED if job.status == Job.Status.FAILED else CANCELED
        error = job.error if job.error in PUBLIC_ERRORS else fallback
    return {
        "id": job.pk,
        "status": job.status,
        "kind": job.kind,
        "model_id": job.model.model_id,
        "track_id": job.track_id or None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": round(progress, 3),
        "eta": estimates.eta(job) if waiting else None,
        "generation_time": job.generation_time,
        "cost": job.cost,
        "refunded": refunded,
        "error": error,
        "outputs": outputs,
        "outputs_deleted_at": job.expired_at,
        "meta": job_meta(job),
    }


def org_jobs(organization: Organization) -> JobQuerySet:
    """The organization's jobs with what job_body reads, in as few queries as a page allows."""
    refunds = CreditEntry.objects.filter(job=OuterRef("pk"), kind=CreditEntry.Kind.REFUND)
    return (
        Job.objects.for_org(organization)
        .select_related("model")
        .prefetch_related("outputs")
        .annotate(refunded=Exists(refunds))
    )


def own_job(request: KeyRequest, job_id: int) -> Job:
    """The caller's job, its lease checked; another tenant's is a 404, like a missing one."""
    job = org_jobs(request.user.organization).filter(pk=job_id).first()
    if job is None:
        raise NotFound(NOT_FOUND)
    return jobs.refresh_lease_state(job)


class JobCursor(CursorPagination):
    """Newest first; a cursor the client altered is a 400, never a 500."""

    ordering = ("-created_at", "-id")
    page_size = shapes.DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = shapes.MAX_PAGE_SIZE
    invalid_cursor_message = "The cursor is not valid: use a page's next or previous link as is."

    def decode_cursor(self, request: Any) -> Cursor | None:
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": [self.invalid_cursor_message]}) from None
        if cursor is not None and cursor.position is not None:
            # DRF trusts the position it decodes; a made-up one would reach the query.
            try:
                when = parse_datetime(str(cursor.position))
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                raise ValidationError({"cursor": [self.invalid_cursor_message]})
        return cursor

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any] | None:
        page: list[Any] | None = super().paginate_queryset(queryset, request, view)
        # Links from the configured base URL, never from the request's Host header.
        self.base_url = base_url_for(request) + request.get_full_path()
        return page


class JobsView(FormatView):
    error_body = staticmethod(error_body)


class JobListView(JobsView):
    """GET /api/v1/jobs: the organization's jobs, newest first, in cursor pages."""

    poll_methods = ("GET", "HEAD")

    @extend_schema(
        tags=[TAG],
        summary="List this organization's jobs, newest first",
        operation_id="jobs_list",
        parameters=[shapes.JobFilters],
        responses={200: shapes.JobPage, 400: shapes.JobsError},
    )
    def get(self, request: KeyRequest) -> Response:
        filters = shapes.JobFilters(data=request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        rows = org_jobs(request.user.organization)
        if "status" in wanted:
            rows = rows.filter(status=wanted["status"])
        if "kind" in wanted:
            rows = rows.filter(kind=wanted["kind"])
        if "model" in wanted:
            rows = rows.filter(model__model_id=wanted["model"])
        if "created_after" in wanted:
            rows = rows.filter(created_at__gte=wanted["created_after"])
        if "created_before" in wanted:
            rows = rows.filter(created_at__lt=wanted["created_before"])
        paginator = JobCursor()
        page: list[Job] = paginator.paginate_queryset(rows, request, self) or []
        base_url = base_url_for(request)
        return Response(
            {
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "results": [job_body(job, base_url) for job in page],
            }
        )


JOB_ID = OpenApiParameter("job_id", OpenApiTypes.INT, OpenApiParameter.PATH)


class JobDetailView(JobsView):
    """GET /api/v1/jobs/<id>: one job."""

    poll_methods = ("GET", "HEAD")

    @extend_schema(
        tags=[TAG],
        summary="One job",
        operation_id="jobs_retrieve",
        parameters=[JOB_ID],
        responses={200: shapes.JobAnswer, 404: shapes.JobsError},
    )
    def get(self, request: KeyRequest, job_id: int) -> Response:
        job = own_job(request, job_id)
        return polling.hinted(Response(job_body(job, base_url_for(request))), job)


class JobCancelView(JobsView):
    """POST /api/v1/jobs/<id>/cancel: cancel a queued or running job and refund it."""

    @extend_schema(
        tags=[TAG],
        summary="Cancel a queued or processing job (its credits are refunded)",
        operation_id="jobs_cancel",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: shapes.JobAnswer,
            404: shapes.JobsError,
            409: OpenApiResponse(shapes.JobsError, description="The job has already finished."),
        },
    )
    def post(self, request: KeyRequest, job_id: int) -> Response:
        job = own_job(request, job_id)
        require_manager_or_submitter(request, job.api_key_id, "cancel it")
        if not jobs.cancel(job):
            job.refresh_from_db(fields=["status"])
            raise Conflict(
                f"Job {job.pk} has already finished ({job.status}); it cannot be canceled."
            )
        return Response(job_body(own_job(request, job_id), base_url_for(request)))


class JobOutputsView(JobsView):
    """DELETE /api/v1/jobs/<id>/outputs: delete the job's images from storage now."""

    @extend_schema(
        tags=[TAG],
        summary="Delete a finished job's images (its links stop working)",
        operation_id="jobs_outputs_delete",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: shapes.JobAnswer,
            404: shapes.JobsError,
            409: OpenApiResponse(shapes.JobsError, description="The job has not finished yet."),
        },
    )
    def delete(self, request: KeyRequest, job_id: int) -> Response:
        job = own_job(request, job_id)
        require_manager_or_submitter(request, job.api_key_id, "delete its outputs")
        if not job.is_finished:
            # A worker would write the images after the delete: cancel first, or wait.
            raise Conflict(
                f"Job {job.pk} is {job.status}; cancel it or wait until it finishes, "
                "then delete its outputs."
            )
        # Retention's own deletion: outputs, the tenant's stored inputs, then the mark.
        retention.expire_job(job, job.expired_at or timezone.now())
        return Response(job_body(own_job(request, job_id), base_url_for(request)))


def account_body(organization: Organization) -> dict[str, Any]:
    """The organization, its plan's limits, its balance, today's usage and what is left of it."""
    plan = organization.plan
    since = limits.start_of_day()
    today_jobs = Job.objects.for_org(organization).filter(created_at__gte=since)
    images = quotas.images_today(organization)
    spent = CreditEntry.objects.filter(
        organization=organization,
        created_at__gte=since,
        kind__in=[CreditEntry.Kind.DEBIT, CreditEntry.Kind.REFUND],
    ).aggregate(total=Sum("amount"))["total"]
    waiting = dict(
        Job.objects.for_org(organization)
        .waiting()
        .values("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    queue_cap = limits.queue_cap(plan)
    queued = waiting.get(Job.Status.QUEUED, 0)
    balance = ledger.balance(organization)
    return {
        "organization": {"name": organization.name, "slug": organization.slug},
        "plan": {
            "slug": plan.slug,
            "name": plan.name,
            "requests_per_minute": plan.requests_per_minute,
            "concurrent_jobs": plan.concurrent_jobs,
            "queued_jobs": queue_cap,
            "images_per_day": plan.images_per_day,
            "max_samples": plan.max_samples,
            "max_side": plan.max_side,
            "steps_list": plan.steps_list,
            "retention_days": plan.retention_days,
            "monthly_credits": plan.monthly_credits,
            "model_max_bytes": plan.model_max_bytes,
            "model_storage_bytes": plan.model_storage_bytes,
        },
        "credits": balance,
        "today": {
            "since": since,
            "jobs": today_jobs.count(),
            "images": images,
            "credits": -(spent or 0),
        },
        "remaining_today": {
            "images": None if plan.images_per_day is None else max(plan.images_per_day - images, 0),
            "queued_jobs": max(queue_cap - queued, 0),
            "credits": balance,
        },
        "jobs": {"queued": queued, "processing": waiting.get(Job.Status.PROCESSING, 0)},
    }


class AccountView(JobsView):
    """GET /api/v1/account: plan, limits, balance and today's usage."""

    @extend_schema(
        tags=[TAG],
        summary="This organization's plan, balance and usage today",
        operation_id="account_retrieve",
        responses={200: shapes.Account},
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(account_body(request.user.organization))


# ModelsLab's general routes (docs.modelslab.com "General APIs"), from the same data, in
# ModelsLab's shape; Pictor's balance is in credits, not dollars.
class ModelsLabAccountView(FormatView):
    error_body = staticmethod(modelslab_body)


class WalletBalanceView(ModelsLabAccountView):
    """POST /api/wallet_balance: ModelsLab's wallet balance, in credits."""

    @extend_schema(
        tags=["ModelsLab"],
        summary="The credit balance (ModelsLab's wallet_balance)",
        operation_id="wallet_balance",
        request=None,
        responses={200: shapes.WalletBalance},
    )
    def post(self, request: KeyRequest) -> Response:
        balance = account_body(request.user.organization)["credits"]
        return Response({"status": "success", "data": {"balance": balance, "currency": "credits"}})


class SubscribedPlanView(ModelsLabAccountView):
    """POST /api/subscribed_plan: ModelsLab's plan route; `data` is GET /api/v1/account's body."""

    @extend_schema(
        tags=["ModelsLab"],
        summary="The plan, its limits and the balance (ModelsLab's subscribed_plan)",
        operation_id="subscribed_plan",
        request=None,
        responses={200: shapes.SubscribedPlan},
    )
    def post(self, request: KeyRequest) -> Response:
        return Response({"status": "success", "data": account_body(request.user.organization)})
