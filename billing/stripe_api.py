"""The few calls Pictor makes to Stripe's HTTP API: Checkout Sessions and billing-portal sessions.

Plain HTTPS with `requests` (form-encoded, Bearer secret key), so tests fake Stripe at the
network boundary by pointing `STRIPE_API_BASE` at a local server.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from accounts.models import Organization, User
from billing.models import Plan, Subscription

logger = logging.getLogger(__name__)

# (connect, read) seconds: a user is waiting on the other end of the redirect.
TIMEOUT = (5, 20)
# Stripe's own libraries retry network errors and 5xx answers with the same Idempotency-Key, so
# a retried create returns the first attempt's session instead of making a second one.
ATTEMPTS = 2
RETRY_DELAY = 0.5


class StripeError(Exception):
    """Stripe refused the request or could not be reached."""


@dataclass(frozen=True)
class CreditPack:
    """Credits sold for a one-off payment of a Stripe price (PICTOR_CREDIT_PACKS)."""

    slug: str
    credits: int
    price_id: str


def configured() -> bool:
    """Whether online payment is on (the Stripe secret key is set)."""
    return bool(settings.STRIPE_SECRET_KEY)


def credit_packs() -> list[CreditPack]:
    """The packs on sale, in the order PICTOR_CREDIT_PACKS lists them."""
    return [
        CreditPack(slug, credits, price) for slug, credits, price in settings.PICTOR_CREDIT_PACKS
    ]


def credit_pack(slug: str) -> CreditPack | None:
    """The pack with this slug, or None."""
    return next((pack for pack in credit_packs() if pack.slug == slug), None)


def form_fields(params: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Stripe's form encoding of nested parameters: `metadata[plan]=…`, `line_items[0][price]=…`."""
    for name, value in params.items():
        key = f"{prefix}[{name}]" if prefix else str(name)
        if value is None:
            continue
        if isinstance(value, dict):
            yield from form_fields(value, key)
        elif isinstance(value, list | tuple):
            yield from form_fields({str(i): item for i, item in enumerate(value)}, key)
        elif isinstance(value, bool):
            yield key, "true" if value else "false"
        else:
            yield key, str(value)


def post(path: str, params: dict[str, Any]) -> dict[str, Any]:
    """POST to Stripe's API and return the object it answers; raises StripeError."""
    response = _send(settings.STRIPE_API_BASE + path, list(form_fields(params)))
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        logger.warning("Stripe answered %s to %s: %s", response.status_code, path, message)
        raise StripeError(message or f"Stripe answered {response.status_code}")
    return body


def _send(url: str, data: list[tuple[str, str]]) -> requests.Response:
    headers = {
        "Authorization": f"Bearer {settings.STRIPE_SECRET_KEY}",
        "Idempotency-Key": str(uuid.uuid4()),
    }
    for attempt in range(1, ATTEMPTS + 1):
        last = attempt == ATTEMPTS
        try:
            response = requests.post(url, data=data, headers=headers, timeout=TIMEOUT)
        except requests.RequestException as exc:
            if last:
                raise StripeError(f"Stripe could not be reached: {exc}") from exc
        else:
            if response.status_code < 500 or last:
                return response
        time.sleep(RETRY_DELAY)
    raise StripeError("Stripe could not be reached")


def _customer(org: Organization, user: User) -> dict[str, str]:
    """Reuse the organization's Stripe customer, else prefill the buyer's email."""
    subscription = Subscription.objects.filter(organization=org).first()
    if subscription and subscription.stripe_customer_id:
        return {"customer": subscription.stripe_customer_id}
    return {"customer_email": user.email}


def _start_checkout(
    org: Organization,
    user: User,
    base_url: str,
    *,
    mode: str,
    price: str,
    metadata: dict[str, str],
    carrier: str,
) -> str:
    """A Checkout Session's page for one price; `carrier` also gets the metadata (subscription or
    payment), so that object's own events name the organization too."""
    session = post(
        "/v1/checkout/sessions",
        {
            "mode": mode,
            "line_items": [{"price": price, "quantity": 1}],
            "client_reference_id": str(org.pk),
            "metadata": metadata,
            carrier: {"metadata": metadata},
            "success_url": f"{base_url}/app/billing/?org={org.slug}&checkout=success",
            "cancel_url": f"{base_url}/app/billing/?org={org.slug}&checkout=canceled",
            **_customer(org, user),
        },
    )
    return _page(session)


def start_plan_checkout(org: Organization, plan: Plan, user: User, base_url: str) -> str:
    """The page of a subscription-mode Checkout Session that puts `org` on `plan` once paid."""
    return _start_checkout(
        org,
        user,
        base_url,
        mode="subscription",
        price=plan.stripe_price_id,
        metadata={"organization_id": str(org.pk), "plan": plan.slug},
        carrier="subscription_data",
    )


def start_pack_checkout(org: Organization, pack: CreditPack, user: User, base_url: str) -> str:
    """The page of a payment-mode Checkout Session that grants the pack's credits once paid."""
    # The credits are recorded as sold: changing PICTOR_CREDIT_PACKS later does not change a
    # purchase already under way.
    return _start_checkout(
        org,
        user,
        base_url,
        mode="payment",
        price=pack.price_id,
        metadata={"organization_id": str(org.pk), "pack": pack.slug, "credits": str(pack.credits)},
        carrier="payment_intent_data",
    )


def start_portal(org: Organization, customer_id: str, base_url: str) -> str:
    """The billing-portal page where the customer changes or cancels the subscription."""
    session = post(
        "/v1/billing_portal/sessions",
        {"customer": customer_id, "return_url": f"{base_url}/app/billing/?org={org.slug}"},
    )
    return _page(session)


def _page(session: dict[str, Any]) -> str:
    """The session's page, where the customer is sent; raises StripeError if it names none."""
    url = session.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        logger.warning("Stripe's session %.100s named no page for the customer", session.get("id"))
        raise StripeError("Stripe's answer named no payment page")
    return url
