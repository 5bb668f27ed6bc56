"""Requests per minute, per organization, from its plan (DRF's throttle hook)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from billing import counters

if TYPE_CHECKING:
    # DRF imports this module while it builds APIView: no runtime import of views here.
    from rest_framework.request import Request
    from rest_framework.views import APIView

WINDOW_SECONDS = 60


def is_poll(request: Request, view: APIView) -> bool:
    """Whether the request only reads a job's state: its view lists the method in poll_methods."""
    return request.method in getattr(view, "poll_methods", ())


class PlanRateThrottle(BaseThrottle):
    """At most `plan.requests_per_minute` API requests per organization per clock minute.

    Counted in billing/counters.py, so the limit holds across every web process and host, and
    through a Redis outage too (the count moves to the database meanwhile; no 5xx from here).
    Requests without a valid key are not counted: they are refused (401) before this runs.
    Polls (is_poll) have a count and a limit of their own, PICTOR_POLL_RATE_PER_MINUTE, so a
    client waiting for its job never uses up the minute's generations.
    """

    def __init__(self) -> None:
        self.resets_in = 0.0

    def allow_request(self, request: Request, view: APIView) -> bool:
        organization = getattr(request.user, "organization", None)
        if organization is None:
            return True
        if is_poll(request, view):
            name, limit = "poll", settings.PICTOR_POLL_RATE_PER_MINUTE
        else:
            name, limit = "rpm", organization.plan.requests_per_minute
        hit = counters.hit(f"{name}:{organization.pk}", WINDOW_SECONDS)
        self.resets_in = hit.resets_in
        return hit.count <= limit

    def wait(self) -> float:
        """Seconds until the window ends (the answer's Retry-After)."""
        return self.resets_in
