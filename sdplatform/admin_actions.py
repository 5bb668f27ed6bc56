"""Admin helpers: read-only model admins, and actions that need a value first (credits to
grant, the plan) through an intermediate form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

# ModelAdmin is generic to the type stubs only (nothing patches it at run time).
if TYPE_CHECKING:
    ModelAdmin = admin.ModelAdmin[Any]
else:
    ModelAdmin = admin.ModelAdmin


class ReadOnlyAdmin(ModelAdmin):
    """A list staff read but never edit: what code keeps (a ledger, a count, a log)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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
