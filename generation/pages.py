"""The organization's generation pages: the playground and the job history."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from rest_framework.exceptions import APIException, NotFound
from rest_framework.response import Response

from accounts.auth import MemberSessionAuthentication
from accounts.requests import MemberRequest, OrgRequest
from accounts.tenancy import member_required
from generation import answers, media, service, submission
from generation.api.modelslab.serializers import Text2ImgSerializer, parse
from generation.api.modelslab.views import ModelsLabView
from generation.engine.request import DEFAULT_SCHEDULER, GenerationRequest
from generation.engine.schedulers import A1111_SAMPLERS, SCHEDULER_NAMES
from generation.jobs import refresh_lease_state
from generation.models import AIModel, Job
from sdplatform import hosts

HISTORY_PAGE_SIZE = 20
PLAYGROUND_SIDES = (128, 256, 384, 512, 640, 768, 896, 1024)


def checkpoints(org: Any) -> list[AIModel]:
    return list(
        AIModel.objects.visible_to(org)
        .filter(family__in=AIModel.CHECKPOINTS)
        .exclude(family=AIModel.Family.INPAINT)
        .order_by("-is_default", "model_id")
    )


@member_required
def playground(request: MemberRequest) -> HttpResponse:
    """A text2img form that submits through the API's own path and shows progress live."""
    org = request.org
    plan = org.plan
    return render(
        request,
        "generation/playground.html",
        {
            "org": org,
            "plan": plan,
            "models": checkpoints(org),
            "sides": [s for s in PLAYGROUND_SIDES if s <= plan.max_side],
            "samples": range(1, plan.max_samples + 1),
            "schedulers": [*A1111_SAMPLERS, *SCHEDULER_NAMES],
            "default_scheduler": DEFAULT_SCHEDULER,
            "prefill": rerun_prefill(request, org),
        },
    )


def rerun_prefill(request: HttpRequest, org: Any) -> dict[str, Any]:
    """The fields of `?from=<job id>` (one of the organization's jobs), to edit and run again."""
    job_id = request.GET.get("from", "")
    job = Job.objects.for_org(org).filter(pk=int(job_id)).first() if job_id.isdigit() else None
    if job is None:
        return {}
    p = job.params
    return {
        "prompt": p["prompt"],
        "negative_prompt": p["negative_prompt"],
        "model_id": job.model.model_id,
        "width": p["width"],
        "height": p["height"],
        "samples": p["samples"],
        "steps": p["steps"],
        "guidance_scale": p["guidance_scale"],
        "scheduler": p["scheduler"],
        "seed": p["seed"],
    }


class PlaygroundSubmitView(ModelsLabView):
    """POST /app/playground/submit: the ModelsLab text2img body, from a logged-in page."""

    authentication_classes = [MemberSessionAuthentication]
    schema = None  # a page's helper, not part of the public API

    def post(self, request: OrgRequest) -> Response:
        plan = request.user.organization.plan
        fields = parse(Text2ImgSerializer, request.data, plan)
        fields.pop("instant_response")
        job = submission.submit(
            request,
            fields,
            "text2img",
            model_id=fields.pop("model_id", None),
            track_id=fields.pop("track_id", ""),
            webhook=fields.pop("webhook", ""),
            output_base64=fields.pop("base64"),
        )
        # The page polls for progress, so answer at once.
        return self.answer(request, job, instant=True)


class PlaygroundJobView(ModelsLabView):
    """GET /app/playground/jobs/<id>: the job's state for the page's progress bar."""

    authentication_classes = [MemberSessionAuthentication]
    schema = None

    def get(self, request: OrgRequest, job_id: int) -> Response:
        job = Job.objects.for_org(request.user.organization).filter(pk=job_id).first()
        if job is None:
            raise NotFound("Request not found")
        job = refresh_lease_state(job)
        return Response(answers.job_answer(job, answers.base_url_for(request), preview=True))


@member_required
def history(request: MemberRequest) -> HttpResponse:
    """The organization's jobs, newest first, filterable by status, kind, model and prompt."""
    org = request.org
    jobs = Job.objects.for_org(org).select_related("model").prefetch_related("outputs")
    filters = {name: request.GET.get(name, "").strip() for name in ("status", "kind", "model", "q")}
    if filters["status"] in Job.Status.values:
        jobs = jobs.filter(status=filters["status"])
    if filters["kind"]:
        jobs = jobs.filter(kind=filters["kind"])
    if filters["model"]:
        jobs = jobs.filter(model__model_id=filters["model"])
    if filters["q"]:
        jobs = jobs.filter(params__prompt__icontains=filters["q"])
    page = Paginator(jobs.order_by("-created_at", "-pk"), HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    rows = [
        {
            "job": job,
            # Signed for this page view; a reload signs fresh links.
            "thumbnails": [
                media.signed_url(o.path, media.job_lifetime(job)) for o in job.outputs.all()
            ]
            if job.expired_at is None
            else [],
            "parameters": parameters_text(job.params),
        }
        for job in page.object_list
    ]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "generation/history.html",
        {
            "org": org,
            "page": page,
            "rows": rows,
            "filters": filters,
            "statuses": Job.Status.values,
            "kinds": sorted(set(Job.objects.for_org(org).values_list("kind", flat=True))),
            "models": sorted(
                set(Job.objects.for_org(org).values_list("model__model_id", flat=True))
            ),
            "query": query.urlencode(),
        },
    )


def parameters_text(params: dict[str, Any]) -> str:
    """The parameters that matter to a person, as one line."""
    shown = ("width", "height", "samples", "steps", "guidance_scale", "scheduler", "seed")
    return ", ".join(f"{name}: {params[name]}" for name in shown if name in params)


@member_required
@require_POST
def rerun(request: MemberRequest, job_id: int) -> HttpResponse:
    """Run one of the organization's jobs again with the same parameters (and seed)."""
    org = request.org
    job = get_object_or_404(Job.objects.for_org(org).select_related("model"), pk=job_id)
    req = GenerationRequest.from_params(job.params)
    names = list(req.input_images().values())
    if not all(default_storage.exists(name) for name in names):
        messages.error(request, f"Job {job.pk}'s input images are no longer kept.")
        return redirect("app-history")
    try:
        new = service.submit(
            req,
            org,
            job.model,
            kind=job.kind,
            base_url=hosts.base_url(request),
        )
    except APIException as exc:  # a plan limit, the credit balance: say which
        messages.error(request, f"Not queued: {exc.detail}")
        return redirect("app-history")
    messages.success(request, f"Job {new.pk} queued with the parameters of job {job.pk}.")
    return redirect("app-history")
