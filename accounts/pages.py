"""The organization's own pages under /app/: overview and API keys.

They show jobs and models, so this module (like generation/usage.py) sits above generation in
the import graph; nothing in generation or billing imports it (docs/architecture.md).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import ApiKey
from accounts.requests import MemberRequest
from accounts.tenancy import MANAGER_ROLES, member_required, require_manager
from accounts.views import check_email_page
from generation.models import AIModel, Job
from generation.quotas import images_today

RECENT_JOBS = 10
# The key shown once after creation lives in the session for exactly one page view.
NEW_KEY_SESSION = "pictor_new_key"


@member_required
def overview(request: MemberRequest) -> HttpResponse:
    """Plan, credit balance, images today against the daily cap, recent jobs."""
    org = request.org
    if not request.user.email_verified:
        messages.warning(
            request,
            f"Check your email: follow the link we sent to {request.user.email} to get your "
            "free credits and create API keys.",
        )
    jobs = Job.objects.for_org(org).select_related("model").order_by("-created_at")[:RECENT_JOBS]
    return render(
        request,
        "app/overview.html",
        {
            "org": org,
            "plan": org.plan,
            "images_today": images_today(org),
            "jobs": jobs,
            "key_count": ApiKey.objects.filter(organization=org, revoked_at__isnull=True).count(),
        },
    )


@member_required
@require_http_methods(["GET", "POST"])
def keys(request: MemberRequest) -> HttpResponse:
    """Create a key (shown once), list the organization's keys; verified emails only."""
    org = request.org
    if not request.user.email_verified:
        if request.method == "POST":
            messages.error(request, "Verify your email before you create an API key.")
            return check_email_page(request, status=403)
        return check_email_page(request)
    if request.method == "POST":
        name = request.POST.get("name", "").strip()[:100]
        if not name:
            messages.error(request, "Give the key a name, so you know later where it is used.")
        else:
            _key, raw = ApiKey.objects.issue(org, name=name)
            request.session[NEW_KEY_SESSION] = raw
            messages.success(request, f"Key “{name}” created.")
        # Post/redirect/get: a reload never shows or creates the key again.
        return redirect("app-keys")
    new_key = request.session.pop(NEW_KEY_SESSION, None)
    return render(
        request,
        "app/keys.html",
        {
            "org": org,
            "new_key": new_key,
            "keys": ApiKey.objects.filter(organization=org).order_by("revoked_at", "-created_at"),
        },
    )


@member_required
@require_POST
def revoke_key(request: MemberRequest, key_id: int) -> HttpResponse:
    """Revoke one of the organization's keys (another organization's id is a 404)."""
    key = get_object_or_404(ApiKey, pk=key_id, organization=request.org)
    key.revoke()
    messages.success(request, f"Key {key.prefix}… ({key.name or 'unnamed'}) revoked.")
    return redirect("app-keys")


@member_required
@require_http_methods(["GET", "POST"])
def settings_page(request: MemberRequest) -> HttpResponse:
    """Organization name, webhook signing secret (rotate), the organization's private models."""
    org = request.org
    if request.method == "POST":
        require_manager(request)
        action = request.POST.get("action")
        if action == "rename":
            name = request.POST.get("name", "").strip()
            if not name or len(name) > 200:
                messages.error(request, "The name must be 1 to 200 characters.")
            else:
                org.name = name
                org.save(update_fields=["name"])
                messages.success(request, f"The organization is now called {name}.")
        elif action == "rotate":
            org.rotate_webhook_secret()
            messages.success(
                request, "A new webhook secret signs from now on; update your receivers."
            )
        return redirect("app-settings")
    return render(
        request,
        "app/settings.html",
        {
            "org": org,
            "can_manage": request.membership.role in MANAGER_ROLES,
            "private_models": AIModel.objects.filter(organization=org).order_by("model_id"),
        },
    )
