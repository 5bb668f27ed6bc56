"""Admin actions that need a value first (credits to grant, the plan): an intermediate form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse


def ask(
    request: HttpRequest,
    queryset: QuerySet[Any],
    form_class: type[forms.Form],
    action: str,
    title: str,
) -> tuple[forms.Form | None, TemplateResponse | None]:
    """The filled form once the staff member applied it, else the page that asks for it."""
    if "apply" in request.POST:
        form = form_class(request.POST)
        if form.is_valid():
            return form, None
    else:
        form = form_class()
    page = TemplateResponse(
        request,
        "admin/pictor/action_form.html",
        {"title": title, "queryset": queryset, "form": form, "action": action},
    )
    return None, page
