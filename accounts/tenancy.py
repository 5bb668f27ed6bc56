"""Which organization a logged-in page acts for, and who may change it."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, cast

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts.models import Membership

if TYPE_CHECKING:
    from accounts.requests import MemberRequest

SESSION_KEY = "pictor_org"
MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


def memberships_of(user: Any) -> list[Membership]:
    return list(
        Membership.objects.filter(user=user)
        .select_related("organization__plan")
        .order_by("created_at", "pk")
    )


def current_membership(request: HttpRequest) -> Membership | None:
    """The membership the session picked (`?org=<slug>` switches), else the user's first."""
    memberships = memberships_of(request.user)
    wanted = request.GET.get("org") or request.session.get(SESSION_KEY)
    chosen = next((m for m in memberships if m.organization.slug == wanted), None)
    chosen = chosen or (memberships[0] if memberships else None)
    if chosen is not None and request.session.get(SESSION_KEY) != chosen.organization.slug:
        request.session[SESSION_KEY] = chosen.organization.slug
    return chosen


def member_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A page of the caller's organization: sets request.membership and request.org."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        membership = current_membership(request)
        if membership is None:
            if request.user.is_staff:
                # Operators without an organization of their own land on their dashboard.
                return redirect("ops")
            return render(request, "accounts/no_organization.html", status=403)
        # Only the annotation changes: the view gets the very request Django built.
        member = cast("MemberRequest", request)
        member.membership = membership
        member.org = membership.organization
        return view(member, *args, **kwargs)

    return wrapper


def require_manager(request: MemberRequest) -> None:
    """Only owners and admins change keys of others, the team, settings and billing."""
    if request.membership.role not in MANAGER_ROLES:
        raise PermissionDenied("Only an owner or an admin of this organization can do that.")
