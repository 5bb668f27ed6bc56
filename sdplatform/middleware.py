"""Response headers every page carries on top of Django's own security headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from accounts import challenge

# Pages load scripts, styles and fonts from this host only (static files are vendored, no CDN).
# Images come from this host, data: URLs, and the bucket when images are on S3 (image_sources);
# an injected <img> cannot reach anywhere else, nor leak the page's URL or a signed link there.
POLICY = (
    "default-src 'self'",
    "img-src {images}",
    "style-src 'self'",
    "script-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'none'",
)

# Swagger UI (/api/docs/) sets inline styles as it renders; its scripts stay 'self' only.
DOCS_POLICY = tuple(
    "style-src 'self' 'unsafe-inline'" if d == "style-src 'self'" else d for d in POLICY
)
DOCS_PATH = "/api/docs/"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def storage_origins() -> list[str]:
    """The origins image URLs are served from when images are on S3; none on local storage."""
    if not settings.S3_BUCKET:
        return []
    # The settings module builds STORAGES from literals, so its values type as plain objects.
    default = cast("dict[str, Any]", settings.STORAGES["default"])
    options: dict[str, Any] = default.get("OPTIONS", {})
    # As django-storages and boto3 build presigned URLs: on the endpoint, else on AWS.
    bucket = options.get("bucket_name") or settings.S3_BUCKET
    virtual = options.get("addressing_style") == "virtual"
    if endpoint := options.get("endpoint_url"):
        parts = urlsplit(endpoint)
        host = f"{bucket}.{parts.netloc}" if virtual else parts.netloc
        return [f"{parts.scheme}://{host}"]
    # AWS: the bucket's own host name, global and regional; a dotted name does not fit a TLS
    # wildcard certificate, so boto3 puts it in the path instead.
    hosts = ["s3.amazonaws.com"]
    if region := options.get("region_name"):
        hosts.append(f"s3.{region}.amazonaws.com")
    prefix = "" if "." in bucket and not virtual else f"{bucket}."
    return [f"https://{prefix}{host}" for host in hosts]


def image_sources() -> str:
    """The pages' img-src: this site, data: URLs, and the image storage's origins."""
    sources = ["'self'", "data:"]
    if settings.PICTOR_BASE_URL:
        # Links are built on the base URL, which may differ from the host a page was asked on.
        sources.append(_origin(settings.PICTOR_BASE_URL))
    sources += storage_origins()
    return " ".join(dict.fromkeys(sources))


def content_security_policy(directives: tuple[str, ...] = POLICY) -> str:
    """The Content-Security-Policy header for the current settings."""
    return "; ".join(directives).format(images=image_sources())


class ContentSecurityPolicyMiddleware:
    """Sets Content-Security-Policy on HTML responses that do not set their own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            policy = content_security_policy(DOCS_POLICY if request.path == DOCS_PATH else POLICY)
            # The sign-up challenge's script and frame (Turnstile, hCaptcha), only when it is on.
            policy = challenge.content_security_policy(policy)
            response.headers.setdefault("Content-Security-Policy", policy)
        return response


class HeadWithoutBodyMiddleware:
    """A HEAD answer carries the headers of the GET (or the 405) and no body.

    Django's views render the body for HEAD as for GET; runserver drops it, but gunicorn logs a
    warning for each one it drops. Emptied here, outermost, with Content-Length kept as the body's.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method == "HEAD" and not response.streaming:
            if not response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
            response.content = b""
        return response
