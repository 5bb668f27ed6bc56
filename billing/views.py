"""The billing page, Stripe checkout redirects and Stripe's webhook endpoint."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Membership
from accounts.requests import MemberRequest, UserRequest
from accounts.tenancy import member_required
from billing import stripe_api, stripe_events
from billing.models import CreditEntry, Plan, Subscription
from sdplatform import hosts

logger = logging.getLogger(__name__)

BILLING_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)
NOT_CONFIGURED = (
    "Online payment is not configured; ask the operators to change your plan or add credits."
)
# Grants, purchases and adjustments shown on the billing page (job debits are on /app/usage/).
LEDGER_ROWS = 50
# Subscription states in which a second checkout would bill the customer twice.
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete")


def membership_for(request: UserRequest, slug: str = "") -> Membership:
    """The caller's membership in the organization `slug` (default: their first); 404 if none."""
    memberships = (
        Membership.objects.filter(user=request.user)
        .select_related("organization__plan")
        .order_by("created_at", "pk")
    )
    if "\x00" in slug:
        # From a form field; PostgreSQL refuses NUL in a lookup, and no slug holds one.
        raise Http404("No such organization")
    if slug:
        memberships = memberships.filter(organization__slug=slug)
    membership = memberships.first()
    if membership is None:
        raise Http404("No such organization")
    return membership


def billing_membership(request: UserRequest) -> Membership:
    """As membership_for, for changing what the organization pays: owners and admins only."""
    membership = membership_for(request, request.POST.get("org", ""))
    if membership.role not in BILLING_ROLES:
        raise PermissionDenied("Only an owner or an admin can change billing")
    if not stripe_api.configured():
        raise Http404(NOT_CONFIGURED)
    return membership


def live_subscription(org_id: int) -> Subscription | None:
    return Subscription.objects.filter(
        organization_id=org_id, status__in=LIVE_STATUSES, stripe_subscription_id__gt=""
    ).first()


def see_other(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def stripe_failed(error: stripe_api.StripeError) -> HttpResponse:
    return HttpResponse(
        f"Stripe could not start the payment: {error}. Please try again later.",
        status=502,
        content_type="text/plain; charset=utf-8",
    )


@member_required
@require_GET
def index(request: MemberRequest) -> HttpResponse:
    """The plans with their limits and the credit packs, with buttons when Stripe is on."""
    membership, org = request.membership, request.org
    return render(
        request,
        "billing/index.html",
        {
            "org": org,
            "organizations": [
                m.organization
                for m in Membership.objects.filter(user=request.user).select_related("organization")
            ],
            "plans": Plan.objects.order_by("priority", "pk"),
            "packs": stripe_api.credit_packs(),
            "configured": stripe_api.configured(),
            "not_configured": NOT_CONFIGURED,
            "can_pay": membership.role in BILLING_ROLES,
            "subscription": live_subscription(org.pk),
            "checkout": request.GET.get("checkout", ""),
            "ledger": CreditEntry.objects.filter(organization=org)
            .exclude(kind__in=[CreditEntry.Kind.DEBIT, CreditEntry.Kind.REFUND])
            .order_by("-created_at", "-pk")[:LEDGER_ROWS],
        },
    )


@require_GET
def old_index(request: HttpRequest) -> HttpResponse:
    query = request.GET.urlencode()
    return HttpResponseRedirect("/app/billing/" + (f"?{query}" if query else ""))


@login_required
@require_POST
def checkout_plan(request: UserRequest, slug: str) -> HttpResponse:
    """Send an owner or admin to Stripe Checkout to subscribe to a plan."""
    membership = billing_membership(request)
    plan = get_object_or_404(Plan.objects.exclude(stripe_price_id=""), slug=slug)
    if live_subscription(membership.organization_id):
        return HttpResponse(
            "This organization already has a subscription; change it with Manage subscription.",
            status=409,
            content_type="text/plain; charset=utf-8",
        )
    try:
        page = stripe_api.start_plan_checkout(
            membership.organization, plan, request.user, hosts.base_url(request)
        )
    except stripe_api.StripeError as error:
        return stripe_failed(error)
    return see_other(page)


@login_required
@require_POST
def checkout_credits(request: UserRequest, pack: str) -> HttpResponse:
    """Send an owner or admin to Stripe Checkout to buy a credit pack."""
    membership = billing_membership(request)
    credit_pack = stripe_api.credit_pack(pack)
    if credit_pack is None:
        raise Http404("No such credit pack")
    try:
        page = stripe_api.start_pack_checkout(
            membership.organization, credit_pack, request.user, hosts.base_url(request)
        )
    except stripe_api.StripeError as error:
        return stripe_failed(error)
    return see_other(page)


@login_required
@require_POST
def portal(request: UserRequest) -> HttpResponse:
    """Send an owner or admin to Stripe's billing portal to change or cancel the subscription."""
    membership = billing_membership(request)
    subscription = live_subscription(membership.organization_id)
    if subscription is None or not subscription.stripe_customer_id:
        raise Http404("No subscription")
    try:
        page = stripe_api.start_portal(
            membership.organization, subscription.stripe_customer_id, hosts.base_url(request)
        )
    except stripe_api.StripeError as error:
        return stripe_failed(error)
    return see_other(page)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's events: verified, stored once, applied once; 200 for a repeat."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        logger.error("A Stripe webhook arrived but STRIPE_WEBHOOK_SECRET is not set")
        return JsonResponse({"error": "Stripe webhooks are not configured"}, status=503)
    try:
        event = stripe_events.verify(
            request.body, request.headers.get("Stripe-Signature", ""), secret
        )
    except stripe_events.SignatureError as error:
        return JsonResponse({"error": str(error)}, status=400)
    try:
        applied = stripe_events.receive(event)
    except stripe_events.UnusableEvent as error:
        return JsonResponse({"error": str(error)}, status=400)
    return JsonResponse({"received": True, "duplicate": not applied})
