"""Request parsing shared by the wire formats: strict JSON, size limits, chunked bodies.

Every API view parses its body with StrictJSONParser (or its any-Content-Type variant). The
key may sit in the body, so authentication reads `request.data` first: a body this parser
refuses answers the format's 400 before any key is looked up, and nothing in it reaches the
database (PostgreSQL refuses NUL characters and unpaired surrogates with a 500).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from gunicorn.http.errors import ParseException
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from generation.engine.prompts import has_unstorable

# Deeper than any request of any format; json's C scanner recurses per level and a body of a
# thousand brackets would end in RecursionError (a 500 and a traceback per request).
MAX_JSON_DEPTH = 32
# A JSON string (escapes included) or a bracket; strings are skipped whole so that brackets
# inside prompts do not count. The unrolled loop keeps megabytes of base64 fast.
JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
UNSTORABLE_MESSAGE = "contains a NUL character or an unpaired surrogate"


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


LENGTH_REQUIRED = "Send the request body with a Content-Length header."
BROKEN_BODY = "The request body ended early or its chunks are malformed; send it again whole."
# What reading a broken body raises: gunicorn's NoMoreData is an OSError, its InvalidChunkSize and
# ChunkMissingTerminator are ParseExceptions.
BODY_READ_ERRORS = (OSError, ParseException)


def too_large_message() -> str:
    """The 413 sentence, naming the configured limit."""
    limit = settings.PICTOR_MAX_BODY_BYTES
    size = f"{limit / 2**20:.1f} MiB" if limit >= 2**20 else f"{limit / 2**10:.1f} KiB"
    return f"The request body may be at most {size}."


def url_is_unstorable(request: HttpRequest) -> bool:
    """Whether the path, or a name or value of the query string, holds unstorable text."""
    return has_unstorable(request.path) or any(
        has_unstorable(name) or any(has_unstorable(value) for value in values)
        for name, values in request.GET.lists()
    )


def cookie_is_unstorable(request: HttpRequest) -> bool:
    """Whether a cookie's value holds unstorable text (a quoted \\000 is read as NUL)."""
    return any(has_unstorable(value) for value in request.COOKIES.values())


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects more than `limit` levels deep."""
    # Fewer opening brackets than the limit cannot nest past it, whatever the strings hold.
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def refuse_constant(name: str) -> Any:
    """json's hook for NaN, Infinity and -Infinity: not JSON, and not a number a job can use."""
    raise ParseError(f"{name} is not a valid JSON value.")


def finite_float(text: str) -> float:
    """json's hook for a number with a fraction or an exponent: refused where it overflows.

    `1e999` is valid JSON, and Python reads it as infinity, which no field can use and no answer
    can echo (json.dumps refuses it: a 500 after the job was charged).
    """
    value = float(text)
    if not math.isfinite(value):
        raise ParseError(f"The number {text[:40]} is too large.")
    return value


def check_text(value: Any) -> None:
    """Raise ParseError naming the first string or key (at any depth) that cannot be stored."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if has_unstorable(item):
                name = f"The field {where[:100]!r}" if where else "The body"
                raise ParseError(f"{name} {UNSTORABLE_MESSAGE}.")
        elif isinstance(item, dict):
            for key, child in item.items():
                if has_unstorable(key):
                    raise ParseError(f"A field name {UNSTORABLE_MESSAGE}.")
                pending.append((child, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            pending.extend((child, f"{where}[{n}]") for n, child in enumerate(item))


def loads(raw: bytes, encoding: str = "utf-8") -> Any:
    """Parse a JSON body strictly: bounded nesting, finite numbers, only storable text."""
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ParseError(f"The body is not valid {encoding} text.") from exc
    if too_deep(text):
        raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
    try:
        data = json.loads(text, parse_constant=refuse_constant, parse_float=finite_float)
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from exc
    check_text(data)
    return data


class StrictJSONParser(JSONParser):
    """JSON bodies, refused with a ParseError (the format's 400) when unsafe to process."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        context = parser_context or {}
        limit = settings.PICTOR_MAX_BODY_BYTES
        # Django has checked Content-Length against DATA_UPLOAD_MAX_MEMORY_SIZE; this bounds
        # the read whatever the stream is.
        try:
            raw = stream.read(limit + 1)
        except BODY_READ_ERRORS as exc:
            raise ParseError(BROKEN_BODY) from exc
        if len(raw) > limit:
            raise BodyTooLarge(too_large_message())
        request = context.get("request")
        if request is not None and len(raw) < declared_length(request.META):
            # The client closed before sending all it announced: never act on part of a body.
            raise ParseError(BROKEN_BODY)
        return loads(raw, context.get("encoding") or settings.DEFAULT_CHARSET)


def declared_length(meta: dict[str, Any]) -> int:
    """The body's Content-Length as a number (0 when absent or not one)."""
    try:
        return max(0, int(meta.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


class AnyContentTypeJSONParser(StrictJSONParser):
    """Reads the body as JSON whatever Content-Type says (curl -d sends form encoding)."""

    media_type = "*/*"


def is_chunked_without_length(request: HttpRequest) -> bool:
    """A body announced by Transfer-Encoding: chunked, with no Content-Length."""
    meta = request.META
    return (
        not meta.get("CONTENT_LENGTH")
        and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    )
