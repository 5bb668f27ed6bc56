"""Errors in the ModelsLab shape: {"status": "error", "message": ...} with the right status."""

from __future__ import annotations

import math
from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from generation.api.parsers import BodyTooLarge

RATE_LIMIT_TIP = "Slow down and retry after the number of seconds in Retry-After."
INVALID_KEY_TIP = "Send your API key as `key` in the JSON body (or a Bearer token)."


def error(message: Any, http_status: int, **extra: Any) -> Response:
    """A ModelsLab error body."""
    return Response({"status": "error", "message": message, **extra}, status=http_status)


def modelslab_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map DRF and Django exceptions onto ModelsLab's error bodies."""
    if isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated):
        return error("Invalid Api Key", status.HTTP_401_UNAUTHORIZED, tip=INVALID_KEY_TIP)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, list) and len(detail) == 1:
            detail = detail[0]
        return error(detail, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.ParseError):
        return error(f"Invalid request body: {exc.detail}", status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, BodyTooLarge):
        return error(str(exc.detail), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return error("Send the request body as JSON.", status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
    if isinstance(exc, Http404 | exceptions.NotFound):
        return error(str(getattr(exc, "detail", "")) or "Not found", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, exceptions.Throttled):
        response = error(
            "Rate limit exceeded",
            status.HTTP_429_TOO_MANY_REQUESTS,
            tips=getattr(exc, "tips", None) or RATE_LIMIT_TIP,
        )
        if exc.wait:
            response["Retry-After"] = str(int(exc.wait) + 1)
        return response
    response = exception_handler(exc, context)
    if response is not None:
        detail = getattr(exc, "detail", None) or response.data
        response.data = {"status": "error", "message": str(detail)}
        # Plan limits (billing/limits.py) say which limit and what to do, like a rate limit.
        if getattr(exc, "tips", None):
            response.data["tips"] = exc.tips
        if getattr(exc, "wait", None):
            response["Retry-After"] = str(math.ceil(exc.wait))
    return response
