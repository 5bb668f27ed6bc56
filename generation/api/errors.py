"""Errors of every wire format: one reading of an exception, rendered in each format's shape."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from generation.api.parsers import BodyTooLarge

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
        if isinstance(detail, list) and len(detail) == 1:
            detail = detail[0]
        return Problem(status.HTTP_400_BAD_REQUEST, detail, "invalid")
    if isinstance(exc, exceptions.ParseError):
        return Problem(
            status.HTTP_400_BAD_REQUEST, f"Invalid request body: {exc.detail}", "invalid"
        )
    if isinstance(exc, BodyTooLarge):
        return Problem(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc.detail), "invalid")
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Problem(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Send the request body as JSON.", "invalid"
        )
    if isinstance(exc, Http404 | exceptions.NotFound):
        message = str(getattr(exc, "detail", "")) or "Not found"
        return Problem(status.HTTP_404_NOT_FOUND, message, "not_found")
    if isinstance(exc, exceptions.Throttled):
        return Problem(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Rate limit exceeded",
            "rate_limit",
            tips=getattr(exc, "tips", None) or RATE_LIMIT_TIP,
            retry_after=int(exc.wait) + 1 if exc.wait else None,
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
