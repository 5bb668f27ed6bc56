"""Errors of every wire format: one reading of an exception, rendered in each format's shape."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from generation.api.parsers import BodyTooLarge, too_large_message

RATE_LIMIT_TIP = "Slow down and retry after the number of seconds in Retry-After."
INVALID_KEY_TIP = "Send your API key as `key` in the JSON body (or a Bearer token)."
INVALID_KEY = "Invalid Api Key"


@dataclass
class Problem:
    """What went wrong, independent of any wire format."""

    status: int
    # A sentence, or {field: [messages]} for a 400 naming the bad fields.
    message: Any
    kind: str = "error"  # auth | invalid | not_found | rate_limit | credits | ... | error
    tips: str | None = None
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The one field at fault, for a problem whose message is a sentence (a model not found).
    field: str | None = None

    @property
    def text(self) -> str:
        """The message as one line, for formats whose errors are a single string."""
        if isinstance(self.message, dict):
            return "; ".join(
                f"{name}: {' '.join(str(m) for m in messages)}"
                if isinstance(messages, list)
                else f"{name}: {messages}"
                for name, messages in self.message.items()
            )
        if isinstance(self.message, list):
            return " ".join(str(m) for m in self.message)
        return str(self.message)


def describe(exc: Exception, context: dict[str, Any]) -> Problem | None:
    """Read a DRF or Django exception as a Problem; None for an exception DRF does not handle."""
    if isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated):
        return Problem(status.HTTP_401_UNAUTHORIZED, INVALID_KEY, "auth", tips=INVALID_KEY_TIP)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        # One message alone is answered as itself, not as a list of one.
        shown = detail[0] if isinstance(detail, list) and len(detail) == 1 else detail
        return Problem(status.HTTP_400_BAD_REQUEST, shown, "invalid")
    if isinstance(exc, exceptions.ParseError):
        return Problem(
            status.HTTP_400_BAD_REQUEST, f"Invalid request body: {exc.detail}", "invalid"
        )
    if isinstance(exc, BodyTooLarge):
        return Problem(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc.detail), "invalid")
    if isinstance(exc, RequestDataTooBig):
        # Django's own check of Content-Length (DATA_UPLOAD_MAX_MEMORY_SIZE), met first.
        return Problem(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, too_large_message(), "invalid")
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Problem(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Send the request body as JSON.", "invalid"
        )
    if isinstance(exc, Http404 | exceptions.NotFound):
        message = str(getattr(exc, "detail", "")) or "Not found"
        return Problem(
            status.HTTP_404_NOT_FOUND, message, "not_found", field=getattr(exc, "field", None)
        )
    if isinstance(exc, exceptions.Throttled):
        # DRF's Throttled sets `wait` in __init__; the stubs leave the attribute out.
        throttled_wait: float | None = getattr(exc, "wait", None)
        return Problem(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Rate limit exceeded",
            "rate_limit",
            tips=getattr(exc, "tips", None) or RATE_LIMIT_TIP,
            retry_after=int(throttled_wait) + 1 if throttled_wait else None,
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    wait = getattr(exc, "wait", None)
    return Problem(
        response.status_code,
        str(getattr(exc, "detail", None) or response.data),
        getattr(exc, "default_code", "error"),
        # Plan limits (billing/limits.py) say which limit and what to do, like a rate limit.
        tips=getattr(exc, "tips", None),
        retry_after=math.ceil(wait) if wait else None,
        headers={k: v for k, v in response.items() if k in ("Allow", "WWW-Authenticate")},
    )


def respond(body: Any, problem: Problem) -> Response:
    """A Response for `problem` with `body`, carrying Retry-After and the framework's headers."""
    response = Response(body, status=problem.status, headers=problem.headers)
    if problem.retry_after:
        response["Retry-After"] = str(problem.retry_after)
    return response


def handler_for(render: Callable[[Problem], Any]) -> Callable[..., Response | None]:
    """A DRF exception handler that renders each Problem with `render` (a format's body)."""

    def handle(exc: Exception, context: dict[str, Any]) -> Response | None:
        problem = describe(exc, context)
        return None if problem is None else respond(render(problem), problem)

    return handle


def modelslab_body(problem: Problem) -> dict[str, Any]:
    """ModelsLab's {"status": "error", "message": ...}, with `tip`/`tips` where it has them."""
    body: dict[str, Any] = {"status": "error", "message": problem.message}
    if problem.kind == "auth":
        body["tip"] = problem.tips
    elif problem.tips:
        body["tips"] = problem.tips
    return body


modelslab_exception_handler = handler_for(modelslab_body)


# Each wire format's URL prefix and error body, longest prefix first: Dan's /api/sd/ lies inside
# ModelsLab's /api/. Django-level errors (no route, a non-integer id, an oversize body, a crash)
# answer in the route's format here; every other path gets Django's HTML pages.
API_FORMATS: tuple[tuple[str, str], ...] = (
    ("/api/sd/", "generation.api.dan.views.error_body"),
    ("/api/v1/", "generation.api.jobs.views.error_body"),
    ("/api/", "generation.api.errors.modelslab_body"),
    ("/sdapi/", "generation.api.a1111.errors.error_body"),
    # The ControlNet extension's lists, served with the A1111 format.
    ("/controlnet/", "generation.api.a1111.errors.error_body"),
    ("/sd/", "generation.api.synapse.views.error_body"),
    # Hyperbolic owns the singular /v1/image/; the rest of /v1/ is OpenAI's namespace, which
    # an OpenAI SDK pointed at Pictor calls (an unknown route answers in the shape it reads).
    ("/v1/image/", "generation.api.hyperbolic.views.error_body"),
    ("/v1/", "generation.api.openai.views.error_body"),
)
DOUBLED_SLASHES = re.compile(r"//+")
STATUS_MESSAGES = {
    status.HTTP_400_BAD_REQUEST: "Bad request",
    status.HTTP_404_NOT_FOUND: "Not Found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "Method not allowed",
    status.HTTP_500_INTERNAL_SERVER_ERROR: "Internal server error",
}


def error_body_for(path: str) -> Callable[[Problem], Any] | None:
    """The error body of the wire format serving `path`, or None outside the APIs."""
    # A client's base URL with a trailing slash asks for //api/v3/…: still that format's 404.
    path = DOUBLED_SLASHES.sub("/", path)
    for prefix, body in API_FORMATS:
        if path.startswith(prefix):
            # Imported late: the format modules import this one.
            return import_string(body)
    return None


def error_page(request: HttpRequest, code: int, message: str | None = None) -> HttpResponse:
    """An error answered outside any view: JSON in the route's format, else a plain page."""
    text = message or STATUS_MESSAGES.get(code, "Error")
    render = error_body_for(request.path_info)
    if render is None:
        return HttpResponse(
            defaults.ERROR_PAGE_TEMPLATE % {"title": text, "details": ""},
            status=code,
            content_type="text/html",
        )
    kind = (
        "not_found" if code == status.HTTP_404_NOT_FOUND else "invalid" if code < 500 else "error"
    )
    body = render(Problem(code, text, kind))
    # Compact, like the API views' own JSON answers.
    return JsonResponse(body, status=code, safe=False, json_dumps_params={"separators": (",", ":")})


def api_html_errors_as_json(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """The response, with an HTML error page on an API route (DEBUG's pages) made JSON."""
    if (
        response.status_code >= 400
        and response.get("Content-Type", "").startswith("text/html")
        and error_body_for(request.path_info) is not None
    ):
        return error_page(request, response.status_code)
    return response


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: an oversize body is a 413 on API routes; Django's page elsewhere."""
    if error_body_for(request.path_info) is None:
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return error_page(request, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, too_large_message())
    return error_page(request, status.HTTP_400_BAD_REQUEST)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: no such route (or a non-integer id in one), in the route's format."""
    if error_body_for(request.path_info) is None:
        return defaults.page_not_found(request, exception)
    return error_page(request, status.HTTP_404_NOT_FOUND)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the route's format, never a page that shows settings."""
    if error_body_for(request.path_info) is None:
        return defaults.server_error(request)
    return error_page(request, status.HTTP_500_INTERNAL_SERVER_ERROR)
