"""Django's admin site with the login page under the failed-login limits of the app's login."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from accounts import login_limits


class PictorAdminSite(admin.AdminSite):
    login_form = login_limits.LimitedAdminLoginForm

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The admin's login page; a refused attempt answers 429 with Retry-After."""
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        return login_limits.answer_refused(form, response)
