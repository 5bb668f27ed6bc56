"""Django's admin site with the login page under the failed-login limits of the app's login, and
every model's actions refusing a selection that no row can match (400, not a 500)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import BadRequest, ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse

from accounts import login_limits
from sdplatform.admin_actions import ModelAdmin


def could_be_pk(model: type[Model], value: str) -> bool:
    """Whether `value` from a form could be a primary key of `model` on every database."""
    if "\x00" in value:
        return False  # PostgreSQL refuses a NUL byte in text outright
    try:
        model._meta.pk.to_python(value)
    except ValidationError:
        return False
    return True


class SelectionChecked(ModelAdmin):
    """Actions that check the posted selection before Django filters the list by it.

    Django puts the posted ids into the query as they come, so an id the primary key cannot hold
    ("abc" for a number, a NUL byte in text on PostgreSQL) fails in the database: a 500.
    """

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """Refuse (400) a selection naming an id no row can have, else run the action."""
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(could_be_pk(self.model, value) for value in selected):
            raise BadRequest("The selection names an item that cannot exist.")
        return super().response_action(request, queryset, *args, **kwargs)


class PictorAdminSite(admin.AdminSite):
    login_form = login_limits.LimitedAdminLoginForm

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The admin's login page; a refused attempt answers 429 with Retry-After."""
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        return login_limits.answer_refused(form, response)

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        """Register as Django does, with the selection check of SelectionChecked added.

        Here rather than in a base class of Pictor's own admins, so that the admins other apps
        register on this site (django-q2's tasks, auth's groups) get it too.
        """
        base = admin_class or admin.ModelAdmin
        checked = type(base.__name__, (SelectionChecked, base), {"__module__": base.__module__})
        super().register(model_or_iterable, checked, **options)
