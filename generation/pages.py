"""The organization's generation pages: the playground and the job history."""

from __future__ import annotations

import base64
import io
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import MemberSessionAuthentication
from accounts.requests import MemberRequest, OrgRequest
from accounts.tenancy import member_required
from generation import answers, gallery, media
from generation.api import polling
from generation.api.base import MAX_IMAGE_FIELD, usable_samplers
from generation.api.modelslab import views as modelslab
from generation.engine import control
from generation.engine.request import DEFAULT_SCHEDULER
from generation.engine.schedulers import SCHEDULER_NAMES, usable_scheduler_error
from generation.inputs import InputImageError, load_image
from generation.jobs import refresh_lease_state
from generation.models import AIModel, Job
from sdplatform import hosts

HISTORY_PAGE_SIZE = 20
PLAYGROUND_SIDES = (128, 256, 384, 512, 640, 768, 896, 1024)
# What the playground offers: each kind is one ModelsLab route, submitted through its own view.
PLAYGROUND_KINDS = (
    ("text2img", "Text to image"),
    ("img2img", "Image to image"),
    ("inpaint", "Inpaint"),
    ("controlnet", "ControlNet"),
    ("super_resolution", "Super resolution"),
)
# The preprocessors that need no weights (generation/engine/control.py) have a live preview.
PREVIEW_MODULES = control.COMPUTED_TYPES
# The preview runs in the web process: keep its input small.
MAX_PREVIEW_PIXELS = 1024 * 1024
HISTORY_REFRESH_IDS = 50


def checkpoints(org: Any) -> list[AIModel]:
    """The organization's checkpoints for text2img (inpainting models are for inpaint only)."""
    return [m for m in models_of(org, *AIModel.CHECKPOINTS) if m.family != AIModel.Family.INPAINT]


def models_of(org: Any, *families: str) -> list[AIModel]:
    """The models of these families that the organization may use, the default first."""
    return list(
        AIModel.objects.visible_to(org)
        .filter(family__in=families)
        .order_by("-is_default", "model_id")
    )


def schedulers() -> list[str]:
    """The sampler names this server can run: AUTOMATIC1111's first, then diffusers' classes."""
    return [
        *usable_samplers(),
        *(name for name in SCHEDULER_NAMES if usable_scheduler_error(name) is None),
    ]


@member_required
@require_safe
def playground(request: MemberRequest) -> HttpResponse:
    """Every kind the API offers, submitted through the API's own path, with live progress."""
    org = request.org
    plan = org.plan
    base_url = hosts.base_url(request)
    return render(
        request,
        "generation/playground.html",
        {
            "org": org,
            "plan": plan,
            "base_url": base_url,
            "kinds": PLAYGROUND_KINDS,
            "models": checkpoints(org),
            "inpaint_models": models_of(org, AIModel.Family.INPAINT),
            "controlnets": models_of(org, AIModel.Family.CONTROLNET),
            "upscalers": models_of(org, AIModel.Family.UPSCALER),
            "loras": models_of(org, AIModel.Family.LORA),
            "embeddings": models_of(org, AIModel.Family.EMBEDDING),
            "preview_modules": PREVIEW_MODULES,
            "sides": [s for s in PLAYGROUND_SIDES if s <= plan.max_side],
            "samples": range(1, plan.max_samples + 1),
            "schedulers": schedulers(),
            "default_scheduler": DEFAULT_SCHEDULER,
            "prefill": rerun_prefill(request, org),
            "poll_limit": settings.PICTOR_POLL_RATE_PER_MINUTE,
        },
    )


def rerun_prefill(request: HttpRequest, org: Any) -> dict[str, Any]:
    """The fields of `?from=<job id>` (one of the organization's jobs), to edit and run again."""
    job_id = request.GET.get("from", "")
    job = (
        Job.objects.for_org(org).filter(pk=int(job_id)).first()
        if job_id.isascii() and job_id.isdigit() and len(job_id) < 19
        else None
    )
    if job is None:
        return {}
    p = job.params
    return {
        "prompt": p.get("prompt", ""),
        "negative_prompt": p.get("negative_prompt", ""),
        "model_id": job.model.model_id,
        "width": p.get("width"),
        "height": p.get("height"),
        "samples": p.get("samples"),
        "steps": p.get("steps"),
        "guidance_scale": p.get("guidance_scale"),
        "scheduler": p.get("scheduler"),
        "seed": p.get("seed"),
    }


class PlaygroundView(modelslab.ModelsLabView):
    """A ModelsLab view acting for the logged-in member, answering at once (the page polls)."""

    authentication_classes = [MemberSessionAuthentication]
    schema = None  # a page's helper, not part of the public API

    def answer(self, request: Request, job: Job, instant: bool = False) -> Response:
        return super().answer(request, job, instant=True)


class PlaygroundText2Img(PlaygroundView, modelslab.Text2ImgView):
    """POST /app/playground/submit/text2img (and /app/playground/submit)."""


class PlaygroundImg2Img(PlaygroundView, modelslab.Img2ImgView):
    """POST /app/playground/submit/img2img."""


class PlaygroundInpaint(PlaygroundView, modelslab.InpaintView):
    """POST /app/playground/submit/inpaint."""


class PlaygroundControlNet(PlaygroundView, modelslab.ControlNetView):
    """POST /app/playground/submit/controlnet."""


class PlaygroundSuperResolution(PlaygroundView, modelslab.SuperResolutionView):
    """POST /app/playground/submit/super_resolution."""


# Kept for the route that predates the other kinds.
PlaygroundSubmitView = PlaygroundText2Img
SUBMIT_VIEWS: dict[str, Any] = {
    "text2img": PlaygroundText2Img,
    "img2img": PlaygroundImg2Img,
    "inpaint": PlaygroundInpaint,
    "controlnet": PlaygroundControlNet,
    "super_resolution": PlaygroundSuperResolution,
}


class PlaygroundJobView(modelslab.ModelsLabView):
    """GET /app/playground/jobs/<id>: the job's state for the page's progress bar."""

    poll_methods = ("GET", "HEAD")
    authentication_classes = [MemberSessionAuthentication]
    schema = None

    def get(self, request: OrgRequest, job_id: int) -> Response:
        job = Job.objects.for_org(request.user.organization).filter(pk=job_id).first()
        if job is None:
            raise NotFound("Request not found")
        job = refresh_lease_state(job)
        answer = answers.job_answer(job, answers.base_url_for(request), preview=True)
        # The page shows exactly what the job did: queued or running, its step, why it failed.
        answer["state"] = job.status
        if job.status == Job.Status.PROCESSING and job.progress_total:
            answer["steps"] = f"{job.progress_step}/{job.progress_total}"
        if job.status == Job.Status.FAILED and job.error:
            answer["error"] = job.error
        return polling.hinted(Response(answer), job)


class PlaygroundPreprocessView(APIView):
    """POST /app/playground/preprocess: a weight-free ControlNet preprocessor's control image.

    No public route shows a control image before a job runs; the playground shows it here.
    The inpaint control holds -1 for masked pixels, which a PNG cannot: they are shown black.
    """

    authentication_classes = [MemberSessionAuthentication]
    schema = None

    def post(self, request: OrgRequest) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        module = data.get("module")
        if module not in PREVIEW_MODULES:
            raise ValidationError({"module": [f"Choose one of: {', '.join(PREVIEW_MODULES)}."]})
        image = self.image(data, "image")
        if module == "canny":
            result = control.canny(image)
        elif module == "tile":
            result = control.tile(image)
        elif module == "shuffle":
            result = control.shuffle(image, seed=0)
        else:
            result = self.inpaint_preview(image, self.image(data, "mask"))
        buffer = io.BytesIO()
        result.save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        return Response({"image": f"data:image/png;base64,{encoded}"})

    @staticmethod
    def image(data: dict[str, Any], field: str) -> Any:
        value = data.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ValidationError({field: [f"The {field} field is required (a data: URL)."]})
        if len(value) > MAX_IMAGE_FIELD or value[:5].lower() != "data:":
            raise ValidationError({field: [f"The {field} must be a data: URL of an image."]})
        try:
            return load_image(value, is_base64=True, field=field, max_pixels=MAX_PREVIEW_PIXELS)
        except InputImageError as exc:
            raise ValidationError({field: [str(exc)]}) from None

    @staticmethod
    def inpaint_preview(image: Any, mask: Any) -> Any:
        import numpy as np
        from PIL import Image

        pixels = control.inpaint(image, mask)
        return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


class HistoryStatesView(APIView):
    """GET /app/history/jobs.json?ids=1,2: the state of the listed jobs, for the page's refresh."""

    poll_methods = ("GET", "HEAD")
    authentication_classes = [MemberSessionAuthentication]
    schema = None

    def get(self, request: OrgRequest) -> Response:
        text = request.query_params.get("ids", "")
        ids = [
            int(part)
            for part in text.split(",")
            if part.isascii() and part.isdigit() and len(part) < 19
        ]
        if len(ids) > HISTORY_REFRESH_IDS:
            raise ValidationError({"ids": [f"At most {HISTORY_REFRESH_IDS} ids at once."]})
        rows = Job.objects.for_org(request.user.organization).filter(pk__in=ids)
        jobs = [refresh_lease_state(job) for job in rows.prefetch_related("outputs")]
        states = []
        for job in jobs:
            states.append(
                {
                    "id": job.pk,
                    "status": job.status,
                    "progress": job.progress_step / job.progress_total
                    if job.progress_total and job.status == Job.Status.PROCESSING
                    else None,
                    "error": job.error or "",
                    "thumbnails": [
                        media.signed_url(o.path, media.job_lifetime(job)) for o in job.outputs.all()
                    ]
                    if job.status == Job.Status.SUCCESS and job.expired_at is None
                    else [],
                }
            )
        waiting = [job for job in jobs if not job.is_finished]
        response = Response({"jobs": states})
        return polling.hinted(response, waiting[0]) if waiting else response


@member_required
@require_safe
def history(request: MemberRequest) -> HttpResponse:
    """The organization's jobs as a gallery, newest first, filtered (generation/gallery.py)."""
    org = request.org
    jobs = Job.objects.for_org(org).select_related("model").prefetch_related("outputs")
    found = gallery.history_context(request, org, jobs)
    page = Paginator(found.pop("jobs").order_by("-created_at", "-pk"), HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    items = gallery.gallery_items(page.object_list)
    by_job: dict[int, list[dict[str, Any]]] = {}
    for position, item in enumerate(items):
        by_job.setdefault(item["job"], []).append({**item, "position": position})
    rows = [
        {"job": job, "images": by_job.get(job.pk, []), "parameters": parameters_text(job.params)}
        for job in page.object_list
    ]
    query = request.GET.copy()
    query.pop("page", None)
    filters = found.pop("filters")
    return render(
        request,
        "generation/history.html",
        {
            "org": org,
            "page": page,
            "rows": rows,
            "items": items,
            "filters": filters.values(),
            "filtered": filters.active,
            "notes": filters.notes,
            "statuses": Job.Status.values,
            "zip_max": gallery.ZIP_MAX_IMAGES,
            "query": query.urlencode(),
            **found,
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
    job = get_object_or_404(Job.objects.for_org(request.org).select_related("model"), pk=job_id)
    new = gallery.submit_again(request, job)
    if new is not None:
        messages.success(request, f"Job {new.pk} queued with the parameters of job {job.pk}.")
    return redirect("app-history")
