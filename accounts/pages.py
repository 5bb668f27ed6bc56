"""The organization's own pages under /app/: overview, API keys and settings (webhook log).

They show jobs and models, so this module (like generation/usage.py) sits above generation in
the import graph; nothing in generation or billing imports it (docs/architecture.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator
from django.db.models import Count, Sum
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts.forms import clean_organization_name
from accounts.models import KEY_NAME_LENGTH, ApiKey, Organization
from accounts.requests import MemberRequest
from accounts.tenancy import MANAGER_ROLES, member_required, require_manager
from accounts.views import check_email_page
from billing.models import CreditEntry
from generation import media, safe_http, webhooks
from generation.engine.prompts import UNSTORABLE_NAME, has_unstorable
from generation.models import PING_EVENT, AIModel, Job, WebhookDelivery
from generation.quotas import counted, images_sum, images_today

RECENT_JOBS = 10
# The keys page sums each key's jobs, images and credits over this many days.
KEY_USAGE_DAYS = 30
# The settings page lists this many of the organization's latest webhook deliveries.
WEBHOOK_LOG_ROWS = 20
# Test pings an organization may send a minute: each is a real request to a URL it chose.
PINGS_PER_MINUTE = 5
MAX_WEBHOOK_URL = 2000
# The URL of the last test ping, offered again in the form.
PING_URL_SESSION = "pictor_ping_url"
# The key shown once after creation lives in the session for exactly one page view.
NEW_KEY_SESSION = "pictor_new_key"


@member_required
@require_safe
def overview(request: MemberRequest) -> HttpResponse:
    """Plan, credit balance, images today against the daily cap, recent jobs."""
    org = request.org
    if not request.user.email_verified:
        messages.warning(
            request,
            f"Check your email: follow the link we sent to {request.user.email} to get your "
            "free credits and create API keys.",
        )
    jobs = (
        Job.objects.for_org(org)
        .select_related("model")
        .prefetch_related("outputs")
        .order_by("-created_at", "-pk")[:RECENT_JOBS]
    )
    return render(
        request,
        "app/overview.html",
        {
            "org": org,
            "plan": org.plan,
            "images_today": images_today(org),
            "jobs": [{"job": job, "thumbnails": thumbnails(job)} for job in jobs],
            "key_count": ApiKey.objects.filter(organization=org, revoked_at__isnull=True).count(),
        },
    )


def thumbnails(job: Job) -> list[str]:
    """Links to the job's images, signed for this page view (none once retention took them)."""
    if job.expired_at is not None:
        return []
    return [media.signed_url(o.path, media.job_lifetime(job)) for o in job.outputs.all()]


def key_usage(org: Organization, since: datetime) -> dict[int, dict[str, int]]:
    """Jobs, images and credits spent (debits less refunds) per API key id since `since`."""
    jobs = Job.objects.for_org(org).filter(created_at__gte=since, api_key__isnull=False)
    usage: dict[int, dict[str, int]] = {}

    def row(key_id: int) -> dict[str, int]:
        return usage.setdefault(key_id, {"jobs": 0, "images": 0, "credits": 0})

    for jobs_of in jobs.values("api_key").annotate(n=Count("pk")):
        row(jobs_of["api_key"])["jobs"] = jobs_of["n"]
    for images_of in counted(jobs).values("api_key").annotate(n=images_sum()):
        row(images_of["api_key"])["images"] = images_of["n"] or 0
    spent = (
        CreditEntry.objects.filter(
            organization=org,
            created_at__gte=since,
            kind__in=[CreditEntry.Kind.DEBIT, CreditEntry.Kind.REFUND],
            job__api_key__isnull=False,
        )
        .values("job__api_key")
        .annotate(amount=Sum("amount"))
    )
    for spent_by in spent:
        row(spent_by["job__api_key"])["credits"] = -(spent_by["amount"] or 0)
    return usage


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
        name = request.POST.get("name", "").strip()
        if not name:
            messages.error(request, "Give the key a name, so you know later where it is used.")
        elif len(name) > KEY_NAME_LENGTH:
            messages.error(request, f"A key's name has at most {KEY_NAME_LENGTH} characters.")
        elif has_unstorable(name):
            messages.error(request, UNSTORABLE_NAME)
        else:
            _key, raw = ApiKey.objects.issue(org, name=name, created_by=request.user)
            request.session[NEW_KEY_SESSION] = raw
            messages.success(request, f"Key “{name}” created.")
        # Post/redirect/get: a reload never shows or creates the key again.
        return redirect("app-keys")
    new_key = request.session.pop(NEW_KEY_SESSION, None)
    usage = key_usage(org, timezone.now() - timedelta(days=KEY_USAGE_DAYS))
    none = {"jobs": 0, "images": 0, "credits": 0}
    return render(
        request,
        "app/keys.html",
        {
            "org": org,
            "new_key": new_key,
            "usage_days": KEY_USAGE_DAYS,
            "keys": [
                {"key": key, "can_revoke": can_revoke(request, key), **usage.get(key.pk, none)}
                for key in ApiKey.objects.filter(organization=org).order_by(
                    "revoked_at", "-created_at"
                )
            ],
        },
    )


@member_required
@require_POST
def revoke_key(request: MemberRequest, key_id: int) -> HttpResponse:
    """Revoke one of the organization's keys (another organization's id is a 404)."""
    key = get_object_or_404(ApiKey, pk=key_id, organization=request.org)
    if not can_revoke(request, key):
        raise PermissionDenied("Only an owner or an admin can revoke a key someone else made.")
    key.revoke()
    messages.success(request, f"Key {key.prefix}… ({key.name or 'unnamed'}) revoked.")
    return redirect("app-keys")


def can_revoke(request: MemberRequest, key: ApiKey) -> bool:
    """Owners and admins revoke any of the organization's keys; a member only the ones they made."""
    return request.membership.role in MANAGER_ROLES or key.created_by_id == request.user.pk


@member_required
@require_http_methods(["GET", "POST"])
def settings_page(request: MemberRequest) -> HttpResponse:
    """Organization name, webhooks (secret, test ping, delivery log), private models."""
    org = request.org
    if request.method == "POST":
        require_manager(request)
        action = request.POST.get("action")
        if action == "rename":
            try:
                name = clean_organization_name(request.POST.get("name", ""))
            except ValidationError as exc:
                messages.error(request, exc.messages[0])
            else:
                org.name = name
                org.save(update_fields=["name"])
                messages.success(request, f"The organization is now called {name}.")
        elif action == "rotate":
            org.rotate_webhook_secret()
            messages.success(
                request, "A new webhook secret signs from now on; update your receivers."
            )
        elif action == "ping":
            return ping(request)
        return redirect("app-settings")
    deliveries = (
        WebhookDelivery.objects.filter(organization=org)
        .prefetch_related("attempt_log")
        .order_by("-created_at", "-pk")[:WEBHOOK_LOG_ROWS]
    )
    return render(
        request,
        "app/settings.html",
        {
            "org": org,
            "can_manage": request.membership.role in MANAGER_ROLES,
            "private_models": AIModel.objects.filter(organization=org, enabled=True).order_by(
                "model_id"
            ),
            "deliveries": [delivery_row(d) for d in deliveries],
            "ping_url": request.session.get(PING_URL_SESSION) or latest_webhook_url(org),
        },
    )


def latest_webhook_url(org: Organization) -> str:
    """The webhook URL of the organization's latest delivery, to prefill the ping form."""
    url = (
        WebhookDelivery.objects.filter(organization=org)
        .order_by("-created_at", "-pk")
        .values_list("url", flat=True)
        .first()
    )
    return url or ""


def delivery_row(delivery: WebhookDelivery) -> dict[str, Any]:
    """A delivery with its attempts, the last one apart (its answer is what the log shows)."""
    attempts = list(delivery.attempt_log.all())
    return {
        "delivery": delivery,
        "attempts": attempts,
        "last": attempts[-1] if attempts else None,
        "is_ping": delivery.event == PING_EVENT,
    }


def ping(request: MemberRequest) -> HttpResponse:
    """Send a signed test delivery to the URL in the form (the settings page's "Send")."""
    org = request.org
    url = request.POST.get("url", "").strip()
    back = redirect(reverse("app-settings") + "#webhooks")
    try:
        # Django's URLValidator lets a NUL through in the path; PostgreSQL cannot store it.
        if len(url) > MAX_WEBHOOK_URL or has_unstorable(url):
            raise ValidationError("too long or unstorable")
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        messages.error(
            request, f"Give an http:// or https:// URL of at most {MAX_WEBHOOK_URL} characters."
        )
        return back
    try:
        # The checks a job's webhook passes at submit: what delivery would refuse anyway.
        safe_http.check_url(url, safe_http.policy_from_settings())
    except safe_http.UnsafeURL as exc:
        messages.error(request, f"The webhook cannot be called: {exc}")
        return back
    recent = WebhookDelivery.objects.filter(
        organization=org,
        event=PING_EVENT,
        created_at__gte=timezone.now() - timedelta(minutes=1),
    ).count()
    if recent >= PINGS_PER_MINUTE:
        messages.error(request, f"At most {PINGS_PER_MINUTE} test pings a minute; try again soon.")
        return back
    request.session[PING_URL_SESSION] = url
    webhooks.send_ping(org, url)
    messages.success(request, "Test ping sent; its result shows in the log below.")
    return back


@member_required
@require_POST
def redeliver_webhook(request: MemberRequest, delivery_id: int) -> HttpResponse:
    """Send one of the organization's finished webhook deliveries again (owners and admins)."""
    require_manager(request)
    delivery = get_object_or_404(WebhookDelivery, pk=delivery_id, organization=request.org)
    if webhooks.redeliver(delivery.pk):
        messages.success(request, f"Delivery {delivery.webhook_id} is being sent again.")
    else:
        messages.error(request, f"Delivery {delivery.webhook_id} is still on its way.")
    return redirect(reverse("app-settings") + "#webhooks")
