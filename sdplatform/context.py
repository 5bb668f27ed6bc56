"""Template context every page gets from the project itself."""

from __future__ import annotations

from django.http import HttpRequest

from sdplatform import hosts


def base_url(request: HttpRequest) -> dict[str, str]:
    """`base_url`: where API examples on the pages point, PICTOR_BASE_URL when it is set."""
    return {"base_url": hosts.base_url(request)}
