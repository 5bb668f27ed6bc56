"""The history gallery: its filters, the lightbox's data, and downloads (one image, or a zip).

Every id taken from a request goes through the organization's own jobs, so another tenant's
job or image answers 404 exactly like a missing one. Zips are streamed as they are built: each
image is read from the default storage (a local folder or an S3 bucket) in chunks and written
into the archive uncompressed (PNG, JPEG and WebP are compressed already), so memory stays
small whatever the archive's size.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, cast

from django.contrib import messages
from django.core.files.storage import default_storage
from django.db.models import Q, QuerySet
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe
from rest_framework.exceptions import APIException

from accounts.requests import MemberRequest
from accounts.tenancy import member_required
from generation import media, service
from generation.api.base import random_seed
from generation.models import Job, OutputImage
from sdplatform import hosts

# The most images one zip may hold: a bound on the work one click can ask of the web server.
ZIP_MAX_IMAGES = 100
# Bytes read from storage at a time while an archive is written.
ZIP_CHUNK = 64 * 1024
# A prompt filter longer than this is cut (the prompt itself is at most 2,000 characters).
MAX_QUERY_LENGTH = 200
# Ids in query strings: more digits than a bigint holds are refused before the database sees them.
MAX_ID_DIGITS = 18
# The parameters shown in the lightbox, in this order, when a job has them.
SHOWN_PARAMETERS = (
    "width",
    "height",
    "samples",
    "steps",
    "guidance_scale",
    "scheduler",
    "seed",
    "strength",
    "clip_skip",
    "lora_models",
    "embeddings_model",
    "vae",
    "safety_checker",
)


@dataclass
class Filters:
    """The history page's filters, each either valid or left empty (and a note says why)."""

    q: str = ""
    status: str = ""
    kind: str = ""
    model: str = ""
    date_from: date | None = None
    date_to: date | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(
            self.q or self.status or self.kind or self.model or self.date_from or self.date_to
        )

    def values(self) -> dict[str, str]:
        """The filters as the form's fields show them."""
        return {
            "q": self.q,
            "status": self.status,
            "kind": self.kind,
            "model": self.model,
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
        }


def parse_date(raw: str, label: str, notes: list[str]) -> date | None:
    """A YYYY-MM-DD date, or None (with a note when `raw` was given but is not one)."""
    if not raw:
        return None
    try:
        # fromisoformat also takes 20240131 and week dates; the form sends YYYY-MM-DD only.
        if len(raw) == 10:
            return date.fromisoformat(raw)
    except ValueError:
        pass
    notes.append(f"Ignored the {label} date “{raw[:40]}”: use the form YYYY-MM-DD.")
    return None


def parse_filters(params: Any, kinds: Iterable[str], models: Iterable[str]) -> Filters:
    """The filters in a query string; unknown or malformed values are dropped with a note."""
    raw = {
        name: params.get(name, "").replace("\x00", "").strip()
        for name in ("q", "status", "kind", "model", "date_from", "date_to")
    }
    found = Filters()
    notes = found.notes
    found.q = raw["q"][:MAX_QUERY_LENGTH]
    if len(raw["q"]) > MAX_QUERY_LENGTH:
        notes.append(f"The prompt filter was cut to {MAX_QUERY_LENGTH} characters.")
    for name, allowed in (("status", Job.Status.values), ("kind", kinds), ("model", models)):
        value = raw[name]
        if value and value not in allowed:
            notes.append(f"Ignored the {name} “{value[:40]}”: no job has it.")
        elif value:
            setattr(found, name, value)
    found.date_from = parse_date(raw["date_from"], "from", notes)
    found.date_to = parse_date(raw["date_to"], "to", notes)
    if found.date_from and found.date_to and found.date_from > found.date_to:
        notes.append("Ignored the dates: the first comes after the second.")
        found.date_from = found.date_to = None
    return found


def day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def apply_filters(jobs: QuerySet[Job], filters: Filters) -> QuerySet[Job]:
    """`jobs` narrowed by the filters (the dates are whole days in the site's time zone)."""
    if filters.status:
        jobs = jobs.filter(status=filters.status)
    if filters.kind:
        jobs = jobs.filter(kind=filters.kind)
    if filters.model:
        jobs = jobs.filter(model__model_id=filters.model)
    if filters.q:
        jobs = jobs.filter(params__prompt__icontains=filters.q)
    if filters.date_from:
        jobs = jobs.filter(created_at__gte=day_start(filters.date_from))
    # No job is created after the last day a date can name (it has no next day to stop at).
    if filters.date_to and filters.date_to < date.max:
        jobs = jobs.filter(created_at__lt=day_start(filters.date_to + timedelta(days=1)))
    return jobs


def shown_parameters(job: Job) -> list[tuple[str, str]]:
    """The parameters that matter to a person, as (name, value) pairs."""
    params = job.params
    # Strength only acts where there is an input image to start from.
    hidden = {"strength"} if job.kind == "text2img" else set()
    return [
        (name, str(params[name]))
        for name in SHOWN_PARAMETERS
        if params.get(name) not in ("", None) and name not in hidden
    ]


def gallery_items(jobs: Iterable[Job]) -> list[dict[str, Any]]:
    """One entry per image on the page, in order: what the lightbox shows and links to."""
    items = []
    for job in jobs:
        if job.expired_at is not None:
            continue
        params = dict(shown_parameters(job))
        for output in job.outputs.all():
            items.append(
                {
                    "id": output.pk,
                    "job": job.pk,
                    "index": output.index,
                    # Signed for this page view; a reload signs fresh links.
                    "url": media.signed_url(output.path, media.job_lifetime(job)),
                    "download": reverse("app-history-image", args=[output.pk]),
                    "zip": f"{reverse('app-history-zip')}?job={job.pk}",
                    "seed": output.seed,
                    "size": f"{output.width}×{output.height}",
                    "prompt": job.params.get("prompt", ""),
                    "negative_prompt": job.params.get("negative_prompt", ""),
                    "model": job.model.model_id,
                    "kind": job.kind,
                    "created": timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M"),
                    "parameters": [[k, v] for k, v in params.items() if k != "seed"],
                    # The playground edits text2img jobs only.
                    "use": f"{reverse('app-playground')}?from={job.pk}"
                    if job.kind == "text2img"
                    else "",
                    "vary": reverse("app-history-vary", args=[job.pk]),
                }
            )
    return items


def parse_ids(values: list[str]) -> list[int] | None:
    """Positive integer ids, or None when one is not (the caller answers 400)."""
    ids = []
    for value in values:
        value = value.strip()
        if not (value.isascii() and value.isdigit() and 0 < len(value) <= MAX_ID_DIGITS):
            return None
        if int(value) == 0:
            return None
        ids.append(int(value))
    return list(dict.fromkeys(ids))


def bad_request(text: str) -> HttpResponseBadRequest:
    return HttpResponseBadRequest(text, content_type="text/plain; charset=utf-8")


def archive_name(output: OutputImage) -> str:
    """The image's file name inside a zip: job, index and seed, with the stored extension."""
    extension = posixpath.splitext(output.path)[1] or ".png"
    return f"job-{output.job_id}-{output.index}-seed-{output.seed}{extension}"


class _Pipe:
    """A write-only file that keeps what zipfile writes until the response takes it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> list[bytes]:
        """What was written since the last call, as one chunk (none when nothing was)."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        return [data] if data else []


def zip_stream(outputs: list[OutputImage]) -> Iterator[bytes]:
    """The bytes of a zip of `outputs`, read from storage and yielded as they are written."""
    pipe = _Pipe()
    # zipfile writes to an unseekable file with data descriptors, so nothing is buffered whole.
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:
        for output in outputs:
            info = zipfile.ZipInfo(
                archive_name(output),
                date_time=timezone.localtime(output.created_at).timetuple()[:6],
            )
            with default_storage.open(output.path, "rb") as source, archive.open(info, "w") as dest:
                while chunk := source.read(ZIP_CHUNK):
                    dest.write(chunk)
                    yield from pipe.take()
            yield from pipe.take()
    yield from pipe.take()


@member_required
@require_safe
def download_zip(request: MemberRequest) -> HttpResponse:
    """GET /app/history/download/?job=<id>…&image=<id>…: a zip of those jobs' and images' files."""
    job_ids = parse_ids(request.GET.getlist("job"))
    image_ids = parse_ids(request.GET.getlist("image"))
    if job_ids is None or image_ids is None:
        return bad_request("Job and image ids are positive whole numbers.")
    if not job_ids and not image_ids:
        return bad_request("Choose a job (job=<id>) or images (image=<id>) to download.")
    if len(job_ids) + len(image_ids) > ZIP_MAX_IMAGES:
        return bad_request(f"A zip holds at most {ZIP_MAX_IMAGES} images; choose fewer.")
    jobs = Job.objects.for_org(request.org)
    # Another organization's id looks missing: 404, whichever list it came in.
    if jobs.filter(pk__in=job_ids).count() != len(job_ids):
        raise Http404("No such job.")
    by_image = OutputImage.objects.filter(job__in=jobs, pk__in=image_ids)
    if by_image.count() != len(image_ids):
        raise Http404("No such image.")
    outputs = list(
        OutputImage.objects.filter(job__in=jobs, job__expired_at__isnull=True)
        .filter(Q(job_id__in=job_ids) | Q(pk__in=image_ids))
        .order_by("-job_id", "index")
    )
    if len(outputs) > ZIP_MAX_IMAGES:
        return bad_request(
            f"These jobs have {len(outputs)} images; a zip holds at most {ZIP_MAX_IMAGES}."
        )
    # Checked before the first byte goes out: a missing file cannot fail the stream half-way.
    outputs = [o for o in outputs if default_storage.exists(o.path)]
    if not outputs:
        raise Http404("These images are no longer kept.")
    one_job = len(job_ids) == 1 and not image_ids
    name = f"pictor-job-{job_ids[0]}.zip" if one_job else "pictor-images.zip"
    response = StreamingHttpResponse(zip_stream(outputs), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    # member_required is typed for HttpResponse; Django serves any HttpResponseBase.
    return cast(HttpResponse, response)


@member_required
@require_safe
def download_image(request: MemberRequest, image_id: int) -> HttpResponse:
    """GET /app/history/images/<id>/download/: one of the organization's images, as a file."""
    output = get_object_or_404(
        OutputImage.objects.filter(
            job__in=Job.objects.for_org(request.org), job__expired_at__isnull=True
        ),
        pk=image_id,
    )
    if not default_storage.exists(output.path):
        raise Http404("This image is no longer kept.")
    response = FileResponse(
        default_storage.open(output.path, "rb"), as_attachment=True, filename=archive_name(output)
    )
    response["Cache-Control"] = "private, no-store"
    return cast(HttpResponse, response)


@member_required
@require_POST
def vary(request: MemberRequest, job_id: int) -> HttpResponse:
    """Run one of the organization's jobs again with the same settings and a new seed."""
    job = get_object_or_404(Job.objects.for_org(request.org).select_related("model"), pk=job_id)
    new = submit_again(request, job, new_seed=True)
    if new is not None:
        seed = new.params.get("seed")
        messages.success(request, f"Job {new.pk} queued: job {job.pk}'s settings, seed {seed}.")
    return redirect("app-history")


def submit_again(request: MemberRequest, job: Job, new_seed: bool = False) -> Job | None:
    """Queue one of the organization's jobs again; None, with a message saying why, if not."""
    seed = random_seed(None) if new_seed else None
    try:
        return service.submit_again(job, seed=seed, base_url=hosts.base_url(request))
    except FileNotFoundError:
        messages.error(request, f"Job {job.pk}'s input images are no longer kept.")
    except APIException as exc:  # a plan limit, the credit balance: say which
        messages.error(request, f"Not queued: {exc.detail}")
    return None


def history_context(request: HttpRequest, org: Any, jobs: QuerySet[Job]) -> dict[str, Any]:
    """The filter form's choices and the parsed filters for the history page."""
    kinds = sorted(set(Job.objects.for_org(org).values_list("kind", flat=True)))
    models = sorted(set(Job.objects.for_org(org).values_list("model__model_id", flat=True)))
    filters = parse_filters(request.GET, kinds, models)
    return {
        "filters": filters,
        "kinds": kinds,
        "models": models,
        "jobs": apply_filters(jobs, filters),
    }
