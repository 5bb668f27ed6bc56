"""The API's own middleware: request input checked before any view, errors in the route's format.

Apart from parsers.py because it answers with errors.py's pages, and errors.py reads parsers.py's
size limits: this module imports both, and neither imports it.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from rest_framework import status

from generation.api import errors
from generation.api.parsers import (
    BODY_READ_ERRORS,
    BROKEN_BODY,
    LENGTH_REQUIRED,
    UNSTORABLE_MESSAGE,
    cookie_is_unstorable,
    is_chunked_without_length,
    too_large_message,
    url_is_unstorable,
)
from generation.service import PREFERENCE_APPLIED


class RequestInputMiddleware:
    """Reads chunked bodies whole and refuses unstorable URLs, before any view runs.

    Django sizes a request body by Content-Length alone, so a chunked body would read as empty
    (and its key as missing). gunicorn de-chunks the body and says so with
    `wsgi.input_terminated`: read it here, up to one byte past the limit, and give Django its
    length. A server that does not de-chunk gets 411. A NUL character in the path or the query
    string (%00) would reach database lookups (model names, page filters): 400, and so would one
    in a cookie (the session's key).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if url_is_unstorable(request):
            message = f"The URL {UNSTORABLE_MESSAGE}."
            return errors.error_page(request, status.HTTP_400_BAD_REQUEST, message)
        if cookie_is_unstorable(request):
            # The session's lookup would send it to the database before any view runs.
            message = f"A cookie {UNSTORABLE_MESSAGE}."
            return errors.error_page(request, status.HTTP_400_BAD_REQUEST, message)
        if is_chunked_without_length(request):
            if not request.META.get("wsgi.input_terminated"):
                return errors.error_page(request, status.HTTP_411_LENGTH_REQUIRED, LENGTH_REQUIRED)
            try:
                body = request.META["wsgi.input"].read(settings.PICTOR_MAX_BODY_BYTES + 1)
            except BODY_READ_ERRORS:
                return errors.error_page(request, status.HTTP_400_BAD_REQUEST, BROKEN_BODY)
            multipart = (request.content_type or "").startswith("multipart/")
            if len(body) > settings.PICTOR_MAX_BODY_BYTES and multipart:
                # Django's multipart parser would drop the cut file part without a word.
                message = f"{too_large_message()} Send a larger upload with a Content-Length."
                return errors.error_page(request, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, message)
            # One byte past the limit makes Django (and so the format's handler) answer 413.
            request.META["CONTENT_LENGTH"] = str(len(body))
            # Django's own WSGIRequest keeps a LimitedStream in _stream; the stubs say BinaryIO.
            request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[assignment]  # as in WSGIRequest
        response = errors.api_html_errors_as_json(request, self.get_response(request))
        # A view that honoured `Prefer: wait=N` (generation/service.py wait_seconds) says so.
        applied = request.META.get(PREFERENCE_APPLIED)
        if applied:
            response["Preference-Applied"] = applied
        return response
