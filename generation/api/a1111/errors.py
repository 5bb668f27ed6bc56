"""The AUTOMATIC1111 format's errors, in webui's (FastAPI's) shapes.

A value that is not valid A1111 input is FastAPI's 422 `{"detail": [{"loc", "msg", "type"}]}`;
a bad key is 401 `{"detail": "Incorrect username or password"}`; 404 and 405 are `{"detail"}`;
every other error is webui's `{"error": <exception class>, "detail", "body", "errors"}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response

from generation.api import base
from generation.api.base import FormatView
from generation.api.errors import Problem, describe, respond

INCORRECT_KEY = "Incorrect username or password"


class Unprocessable(exceptions.APIException):
    """A value that is not valid A1111 input: FastAPI's 422 with one entry per bad field."""

    status_code = 422
    default_code = "unprocessable"

    def __init__(self, errors: Any) -> None:
        super().__init__("Unprocessable")
        # {field: [messages]} (nested for dicts), as DRF's serializer.errors holds them.
        self.errors = errors


class Refused(exceptions.APIException):
    """A valid value this server (or the plan) cannot honour, raised from a validate().

    DRF's is_valid() makes a field error (here a 422) of every ValidationError raised in a
    serializer's validate(); this carries the 400 past it, answered as that ValidationError.
    """

    status_code = 400
    default_code = "invalid"

    def __init__(self, error: exceptions.ValidationError) -> None:
        super().__init__(error.detail)
        self.error = error


def validation_entries(errors: Any, loc: list[str]) -> list[dict[str, Any]]:
    """FastAPI's `detail` list for DRF-style errors ({field: [messages]}, nested for dicts)."""
    if isinstance(errors, dict):
        return [
            entry
            for name, value in errors.items()
            for entry in validation_entries(value, [*loc, *filter(None, str(name).split("."))])
        ]
    if isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
        return [{"loc": loc, "msg": " ".join(str(e) for e in errors), "type": "value_error"}]
    if isinstance(errors, list):
        return [entry for e in errors for entry in validation_entries(e, loc)]
    return [{"loc": loc, "msg": str(errors), "type": "value_error"}]


def error_body(problem: Problem, name: str = "HTTPException") -> dict[str, Any]:
    """webui's error body: FastAPI's {"detail"} for 401/404/405, else its handler's four keys."""
    if problem.status in (401, 404, 405):
        return {"detail": problem.text}
    return {"error": name, "detail": problem.text, "body": "", "errors": problem.text}


def handle_exception(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every A1111 view's errors, in webui's shapes."""
    if isinstance(exc, Refused):
        exc = exc.error
    if isinstance(exc, Unprocessable):
        return Response({"detail": validation_entries(exc.errors, ["body"])}, status=422)
    if isinstance(exc, exceptions.ParseError):
        detail = [{"loc": ["body"], "msg": str(exc.detail), "type": "value_error.jsondecode"}]
        return Response({"detail": detail}, status=422)
    problem = describe(exc, context)
    if problem is None:
        return None
    if problem.status == 401:
        problem.message = INCORRECT_KEY
        # webui's --api-auth answer: clients (and browsers) then send Basic credentials.
        problem.headers["WWW-Authenticate"] = "Basic"
    return respond(error_body(problem, type(exc).__name__), problem)


def refuse_unstorable_names(settings: dict[str, Any], where: str) -> None:
    """A 422 for a setting name that cannot be stored or even shown (NUL, lone surrogate)."""
    for key in settings:
        if not base.is_storable(str(key)):
            message = f"A setting name in {where} {base.UNSTORABLE_TEXT}."
            raise Unprocessable({where if where != "body" else "": [message]})


class A1111View(FormatView):
    """A view of the AUTOMATIC1111 format: webui's error shapes, Basic or Bearer auth."""

    error_body = staticmethod(error_body)

    def get_exception_handler(self) -> Callable[..., Any]:
        return handle_exception
