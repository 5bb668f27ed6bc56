"""Private images: every output and input image is reached through a signed link that expires.

On S3 the link is a presigned URL (the bucket itself stays private). On local storage it points
at `serve` below, with the expiry and an HMAC of the storage name and expiry in the query
string; the key is derived from SECRET_KEY, so a link cannot be made or altered without it.
Nothing under MEDIA_ROOT is reachable without such a link: sequential job ids give nothing away.
Links are signed when an answer is built, so every fetch hands out fresh ones.
"""

from __future__ import annotations

import math
import mimetypes
import os
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.http import require_safe

# Separates these signatures from every other use of SECRET_KEY.
SIGNING_SALT = "pictor.generation.media.signed-url"
# The largest expiry a link may carry: ten digits reach the year 2286.
MAX_EXPIRES_DIGITS = 10


def save_over(name: str, data: bytes) -> None:
    """Store `data` under exactly `name`, replacing what is there.

    Storage backends rename a clash instead; callers whose names are fixed (a job's n-th image,
    a model's sample) write the same name again on a retry.
    """
    if default_storage.exists(name):
        default_storage.delete(name)
    default_storage.save(name, ContentFile(data))


def lifetime(temp: bool = False) -> int:
    """Seconds a new image link stays valid: PICTOR_MEDIA_TEMP_URL_EXPIRE for `temp` requests."""
    return settings.PICTOR_MEDIA_TEMP_URL_EXPIRE if temp else settings.PICTOR_MEDIA_URL_EXPIRE


def job_lifetime(job: Any) -> int:
    """Seconds a new link to one of the job's images stays valid.

    A `temp` job's images are deleted PICTOR_MEDIA_TEMP_URL_EXPIRE after submission
    (generation/retention.py), so its links end then, however late they are signed: shorter
    than a kept job's, whose links last the full PICTOR_MEDIA_URL_EXPIRE from each fetch.
    """
    if not job.params.get("temp"):
        return lifetime()
    created = getattr(job, "created_at", None)
    if created is None:
        return lifetime(temp=True)
    left: float = created.timestamp() + lifetime(temp=True) - time.time()
    return max(1, min(lifetime(temp=True), math.ceil(left)))


def is_local() -> bool:
    """True when images live under MEDIA_ROOT (served by `serve`), not in a bucket."""
    return isinstance(default_storage, FileSystemStorage)


def signature(name: str, expires: int) -> str:
    """The HMAC that binds a storage name to its expiry (hex)."""
    value = f"{name}\n{expires}".encode("utf-8", "surrogatepass")
    return salted_hmac(SIGNING_SALT, value, algorithm="sha256").hexdigest()


def signed_url(name: str, expires_in: int | None = None) -> str:
    """A link to a stored image that works for `expires_in` seconds (default: the setting).

    On local storage the link is a path on this site (make it absolute with the base URL); on
    S3 it is an absolute presigned URL.
    """
    seconds = lifetime() if expires_in is None else expires_in
    if not is_local():
        # django-storages' S3Storage.url takes `expire`; Django's Storage type does not know it.
        url: str = cast(Any, default_storage).url(name, expire=seconds)
        return url
    # Rounded up, so a link is never valid for less than it promises.
    expires = math.ceil(time.time() + seconds)
    query = urlencode({"expires": expires, "signature": signature(name, expires)})
    return f"{reverse('media-file', args=[name])}?{query}"


def check(name: str, expires: str, given: str) -> str | None:
    """None when the link is genuine and unexpired, else why it is refused."""
    if not (expires.isascii() and expires.isdigit() and len(expires) <= MAX_EXPIRES_DIGITS):
        return "This link is not valid."
    if not (given.isascii() and constant_time_compare(given, signature(name, int(expires)))):
        return "This link is not valid."
    if time.time() >= int(expires):
        return "This link has expired; fetch the job again for a new one."
    return None


def local_file(name: str) -> Path:
    """The file a storage name stands for, never outside MEDIA_ROOT (else Http404)."""
    try:
        path = Path(default_storage.path(name)).resolve()
    except (NotImplementedError, SuspiciousFileOperation, ValueError):
        raise Http404("No such image.") from None
    # path() succeeded, so this is file-system storage (other storages raise NotImplementedError).
    root = Path(cast(FileSystemStorage, default_storage).location).resolve()
    # A symlink under the root could point anywhere; the resolved path must stay inside.
    if not path.is_relative_to(root) or not path.is_file():
        raise Http404("No such image.")
    return path


@require_safe
def serve(request: HttpRequest, name: str) -> HttpResponseBase:
    """GET /files/<name>?expires=…&signature=…: the image, if the link is genuine and current."""
    # The signature is checked before the file system is touched, so a refused link says
    # nothing about whether the file exists.
    refused = check(name, request.GET.get("expires", ""), request.GET.get("signature", ""))
    if refused:
        return HttpResponseForbidden(refused, content_type="text/plain; charset=utf-8")
    path = local_file(name)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    mode = settings.PICTOR_MEDIA_SENDFILE
    if mode == "nginx":
        # nginx serves the file from an `internal` location that aliases MEDIA_ROOT.
        response: HttpResponseBase = HttpResponse(content_type=content_type)
        prefix = settings.PICTOR_MEDIA_ACCEL_PREFIX.rstrip("/")
        response["X-Accel-Redirect"] = f"{prefix}/{quote(name)}"
    elif mode == "apache":
        response = HttpResponse(content_type=content_type)
        response["X-Sendfile"] = str(path)
    else:
        response = FileResponse(path.open("rb"), content_type=content_type)
    remaining = max(0, int(request.GET["expires"]) - math.ceil(time.time()))
    # Only the holder of the link may keep a copy, and no longer than the link lasts.
    response["Cache-Control"] = f"private, max-age={remaining}"
    return response


def delete_files(names: list[str]) -> None:
    """Delete stored images; on local storage, each one's folder too once it is empty."""
    for name in names:
        default_storage.delete(name)
        try:
            folder = os.path.dirname(default_storage.path(name))
        except NotImplementedError:
            continue  # object storage has no folders
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty, or already gone
