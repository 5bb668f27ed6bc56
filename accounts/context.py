"""What every page's layout needs: the caller's organization and the pages to link to."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from accounts.models import Membership

# (URL name, label) of the organization's pages, in menu order.
APP_PAGES = (
    ("app-overview", "Overview"),
    ("app-keys", "Keys"),
    ("app-playground", "Playground"),
    ("app-history", "History"),
    ("app-models", "Models"),
    ("app-usage", "Usage"),
    ("app-billing", "Billing"),
    ("app-team", "Team"),
    ("app-settings", "Settings"),
)
STAFF_PAGES = (("ops", "Ops"), ("admin:index", "Admin"))


def _links(pages: tuple[tuple[str, str], ...]) -> list[tuple[str, str, str]]:
    links = []
    for name, label in pages:
        try:
            links.append((name, label, reverse(name)))
        except NoReverseMatch:
            continue
    return links


def navigation(request: HttpRequest) -> dict[str, Any]:
    """The menu links for the layout (templates/base.html)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    in_an_org = Membership.objects.filter(user=user).exists()
    return {
        "app_pages": _links(APP_PAGES) if in_an_org else [],
        "staff_pages": _links(STAFF_PAGES) if user.is_staff else [],
    }
