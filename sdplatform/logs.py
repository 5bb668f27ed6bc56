"""Log lines that say which request and which job they belong to, with API keys redacted.

The request id comes from the client's `X-Request-ID` when it is sane, else a new one, and is
echoed in the response. It is kept on the job the request submits, so the worker's lines for
that job carry it too (`job_context`). Request bodies are never logged: they hold keys and
prompts.

Imported by the settings (for LOGGING), so nothing here may need configured settings at import.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

    from generation.models import Job

request_id: ContextVar[str | None] = ContextVar("pictor_request_id", default=None)
job_id: ContextVar[int | None] = ContextVar("pictor_job_id", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_MAX_LENGTH = 64
# What a proxy or a client may send (UUIDs, hex, dotted trace ids); anything else is replaced,
# so a log line never carries a client's newlines, quotes or megabytes.
SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{REQUEST_ID_MAX_LENGTH - 1}}}")

REDACTED = "…[redacted]"
# API keys ("pct_" and 40 letters and digits, accounts.models.KEY_PREFIX) keep the eight
# characters the keys page shows: enough to tell which key it was, far too little to use it.
# Webhook signing secrets and Stripe keys keep only their kind.
SECRETS = re.compile(
    r"(?P<keep>pct_[A-Za-z0-9]{8})[A-Za-z0-9]+"
    r"|(?P<kind>whsec_|[sr]k_live_|[sr]k_test_)[A-Za-z0-9+/=_]+"
)


def redact(text: str) -> str:
    """The text with every API key and secret in it cut down to a harmless prefix."""
    return SECRETS.sub(lambda m: (m["keep"] or m["kind"]) + REDACTED, text)


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """The client's request id if it is short and plain enough to log, else None."""
    if value and SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


class RequestIdMiddleware:
    """Gives each request an id (the client's, if sane), for its log lines and its response.

    The id stays set until the response is closed, not just until the middleware returns:
    Django logs 4xx and 5xx responses ("Bad Request: …") after the middleware chain.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from django.core.signals import request_finished

        self.get_response = get_response
        request_finished.connect(forget_request_id, dispatch_uid="pictor-forget-request-id")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        request_id.set(rid)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = rid
        return response


def forget_request_id(**kwargs: object) -> None:
    """The request is over (request_finished): lines this thread logs next are not its."""
    request_id.set(None)


@contextmanager
def job_context(job: Job) -> Iterator[None]:
    """Log lines inside carry the job's id and the id of the request that submitted it."""
    job_token = job_id.set(job.pk)
    request_token = request_id.set(job.http_request_id) if job.http_request_id else None
    try:
        yield
    finally:
        if request_token is not None:
            request_id.reset(request_token)
        job_id.reset(job_token)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `job_id` to every record and redacts secrets from its message.

    Django logs each suspicious request (a forged Host, a thousand form fields) as an ERROR
    with its traceback under django.security.*, though it is the client's mistake, answered 400:
    one WARNING line instead, so scanners cannot fill the log with tracebacks or page anyone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security.") and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "job_id"):
            record.job_id = job_id.get()
        try:
            message = record.getMessage()
        except Exception:
            # A broken format string: logging reports it when the handler formats the record.
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class TextFormatter(logging.Formatter):
    """One line per record for people: time, level, logger, the ids when set, the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(ids)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{name}={value}"
            for name in ("request_id", "job_id")
            if (value := getattr(record, name, None)) is not None
        ]
        record.ids = f"[{' '.join(ids)}] " if ids else ""
        return super().format(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return redact(super().formatStack(stack_info))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log collector; extra record fields are left out."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
            "job_id": getattr(record, "job_id", None),
        }
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc_info"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack_info"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """LOGGING for `log_format` "text" or "json": one console handler that every logger uses."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"pictor": {"()": formatter}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "pictor",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # Django's defaults give these loggers handlers of their own: "django" printed each
            # line twice in DEBUG (its console handler, then the root's), and runserver's
            # request lines ignored the format. Both use the root's handler instead.
            "django": {"handlers": [], "propagate": True},
            "django.server": {"handlers": ["console"], "propagate": False},
        },
    }
