"""Stripe webhooks: the signature check, and one handler per event type.

An event is stored (`StripeEvent`, unique `event_id`) in the same transaction as its effects, so
of any number of deliveries of one event, concurrent or replayed, exactly one applies it: the
others wait on the unique index until the first commits, then find the row and change nothing.
If a handler fails, nothing is stored and Stripe's retry applies the event later.

Stripe does not deliver in order. Each subscription's row remembers the time of the newest event
applied to it: an older one changes nothing, and a subscription that has ended stays ended (Stripe
never restarts a canceled one), whichever of its events arrives last.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import DataError, IntegrityError, transaction

from accounts.models import Organization
from billing import ledger
from billing.models import Plan, StripeEvent, Subscription

logger = logging.getLogger(__name__)

# Stripe's libraries refuse signatures older than this by default; it bounds replay of a
# captured request.
TOLERANCE = 300
# States after which the subscription never pays again: the organization goes back to free.
ENDED_STATUSES = {"canceled", "unpaid", "incomplete_expired"}
# Of those, the ones a subscription never leaves (an unpaid one is active again once paid).
FINAL_STATUSES = {"canceled", "incomplete_expired"}
# The event id and type columns' length: Stripe's own are far shorter.
MAX_EVENT_TEXT = StripeEvent._meta.get_field("event_id").max_length or 100
# What reading an event's content can raise when Stripe sent a shape we do not know, or a value
# no column holds: such an event can never apply, so it is refused (400) and nothing is stored.
CONTENT_ERRORS = (
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    ValueError,
    OverflowError,
    DataError,
    # Credits no balance can hold (the ledger refuses them before PostgreSQL would).
    ledger.BalanceLimitExceeded,
)

Event = dict[str, Any]


class SignatureError(Exception):
    """The request is not an event Stripe signed with our endpoint secret, recently."""


class UnusableEvent(Exception):
    """A signed event whose content cannot be read or stored: it can never apply."""


def verify(payload: bytes, header: str, secret: str, now: float | None = None) -> Event:
    """The event in `payload` if `header` (Stripe-Signature) signs it; raises SignatureError."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [value.strip() for name, value in fields if name.strip() == "t"]
    signatures = [value.strip() for name, value in fields if name.strip() == "v1"]
    if (
        len(timestamps) != 1
        or not (timestamps[0].isascii() and timestamps[0].isdigit())
        or not signatures
    ):
        raise SignatureError("Stripe-Signature needs one t= and at least one v1=")
    signed = timestamps[0].encode() + b"." + payload
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    # Every v1 is compared: while an endpoint secret is being rolled Stripe sends one per secret.
    # compare_digest takes str only when both are ASCII; a header may hold anything.
    given = [signature.encode() for signature in signatures]
    if not any(hmac.compare_digest(expected.encode(), signature) for signature in given):
        raise SignatureError("No v1 signature matches")
    if abs((time.time() if now is None else now) - int(timestamps[0])) > TOLERANCE:
        raise SignatureError("The signature's timestamp is outside the tolerance")
    try:
        event = json.loads(payload, parse_constant=_refuse_constant)
    except ValueError:
        raise SignatureError("The body is not JSON") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance((event.get("data") or {}).get("object"), dict)
    ):
        raise SignatureError("The body is not a Stripe event")
    if len(event["id"]) > MAX_EVENT_TEXT or len(event["type"]) > MAX_EVENT_TEXT:
        raise SignatureError("The event's id or type is too long")
    return event


def _refuse_constant(name: str) -> Any:
    """json's hook for NaN and Infinity, which are not JSON (nor storable as jsonb)."""
    raise ValueError(f"{name} is not JSON")


def receive(event: Event) -> bool:
    """Store the event and apply it in one transaction; False when it was already received.

    Raises UnusableEvent, with nothing stored, for content that can never apply.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
        except IntegrityError:
            return False
        except DataError as error:  # a NUL or an unpaired surrogate, which jsonb refuses
            raise UnusableEvent("The event holds text that cannot be stored") from error
        handler = HANDLERS.get(event["type"])
        if handler is None:
            logger.info("Stripe event %s of type %s ignored", event["id"], event["type"])
            return True
        try:
            with transaction.atomic():
                handler(event["data"]["object"], event)
        except CONTENT_ERRORS as error:
            logger.warning("Stripe event %s cannot apply: %r", event["id"], error)
            raise UnusableEvent(f"The {event['type']} event's content is not usable") from error
    return True


def checkout_completed(session: dict[str, Any], event: Event) -> None:
    """A paid Checkout Session: grant the pack's credits, or start the subscription's plan."""
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        # Delayed payment methods: checkout.session.async_payment_succeeded follows once paid.
        return
    metadata = session.get("metadata") or {}
    org = _locked_org(session.get("client_reference_id") or metadata.get("organization_id"))
    if org is None:
        logger.warning("Stripe session %s names no organization of ours", session.get("id"))
        return
    if session.get("mode") == "payment":
        _grant_pack(org, session, metadata)
    elif session.get("mode") == "subscription":
        _start_subscription(org, session, metadata, event)


def _grant_pack(org: Organization, session: dict[str, Any], metadata: dict[str, str]) -> None:
    try:
        credits = int(metadata["credits"])
    except (KeyError, ValueError):
        logger.warning("Stripe session %s has no credits in its metadata", session["id"])
        return
    # Keyed by the session, not the event: completed and async_payment_succeeded grant once.
    ledger.grant(
        org,
        credits,
        f"stripe:{session['id']}",
        note=f"Credit pack {metadata.get('pack', '')} (Stripe {session['id']})",
    )


def _start_subscription(
    org: Organization, session: dict[str, Any], metadata: dict[str, str], event: Event
) -> None:
    plan = Plan.objects.filter(slug=metadata.get("plan", "")).first()
    if plan is None:
        # Raising leaves the event unstored, so Stripe retries after staff restore the plan.
        raise Plan.DoesNotExist(f"Stripe session {session['id']} names plan {metadata.get('plan')}")
    row, created = Subscription.objects.get_or_create(organization=org, defaults={"plan": plan})
    new_subscription = _id(session.get("subscription"))
    if not created and _outdated(row, new_subscription, event):
        return
    row.plan = plan
    row.stripe_customer_id = _id(session.get("customer")) or row.stripe_customer_id
    if created or row.stripe_subscription_id != new_subscription or not row.status:
        row.status = "active"
    row.stripe_subscription_id = new_subscription
    row.updated_at = _created(event)
    row.save()
    ledger.change_plan(org, plan)


def subscription_changed(subscription: dict[str, Any], event: Event) -> None:
    """customer.subscription.created/updated: status, period and plan (from the price)."""
    row = _subscription_row(subscription)
    if row is None:
        return
    if row.pk is not None and _outdated(row, subscription["id"], event):
        return
    price = _subscription_price(subscription)
    plan = Plan.objects.filter(stripe_price_id=price).first() if price else None
    if plan is None and row.pk is None:
        logger.warning("Stripe price %s is no plan of ours (%s)", price, subscription["id"])
        return
    row.plan = plan or row.plan
    row.stripe_subscription_id = subscription["id"]
    row.stripe_customer_id = _id(subscription.get("customer")) or row.stripe_customer_id
    row.status = subscription.get("status", "")
    row.current_period_end = _timestamp(_subscription_period_end(subscription))
    row.updated_at = _created(event)
    row.save()
    org = row.organization
    if row.status in ENDED_STATUSES:
        _back_to_free(org)
    elif row.status in ("active", "trialing") and org.plan_id != row.plan_id:
        ledger.change_plan(org, row.plan)


def subscription_deleted(subscription: dict[str, Any], event: Event) -> None:
    """customer.subscription.deleted: the organization goes back to the free plan."""
    row = (
        Subscription.objects.select_related("organization")
        .filter(stripe_subscription_id=subscription["id"])
        .first()
    )
    if row is None:
        _record_early_deletion(subscription, event)
        return
    org = _locked_org(row.organization_id)
    assert org is not None
    row.status = subscription.get("status") or "canceled"
    row.updated_at = _created(event)
    row.save(update_fields=["status", "updated_at"])
    _back_to_free(org)


def _record_early_deletion(subscription: dict[str, Any], event: Event) -> None:
    """A deletion that arrives before anything else about its subscription: kept, so that the
    subscription's late creation (or checkout) finds it ended and changes nothing."""
    org = _locked_org((subscription.get("metadata") or {}).get("organization_id"))
    row = Subscription.objects.filter(organization=org).first() if org else None
    if org is None or (row is not None and row.stripe_subscription_id):
        # Not the organization's current subscription (or never ours): nothing to undo.
        logger.info("Stripe subscription %s is not current; deletion ignored", subscription["id"])
        return
    row = row or Subscription(organization=org, plan=org.plan)
    row.stripe_subscription_id = subscription["id"]
    row.stripe_customer_id = _id(subscription.get("customer")) or row.stripe_customer_id
    row.status = subscription.get("status") or "canceled"
    row.updated_at = _created(event)
    row.save()


def _outdated(row: Subscription, subscription_id: str, event: Event) -> bool:
    """Whether `event` about the subscription in `row` comes too late to change it."""
    if row.stripe_subscription_id != subscription_id:
        return False
    if row.status in FINAL_STATUSES:
        logger.info("Stripe event %s is about an ended subscription; skipped", event["id"])
        return True
    if _created(event) < row.updated_at:
        logger.info("Stripe event %s is older than what we hold; skipped", event["id"])
        return True
    return False


def invoice_paid(invoice: dict[str, Any], event: Event) -> None:
    """A paid subscription invoice (the first or a renewal): that period's monthly credits."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    subscription_id = _id(details.get("subscription") or invoice.get("subscription"))
    if not subscription_id:
        return  # a one-off invoice: credit packs are granted at checkout
    row = Subscription.objects.filter(stripe_subscription_id=subscription_id).first()
    line = _subscription_line(invoice, subscription_id)
    price = _line_price(line)
    plan = (Plan.objects.filter(stripe_price_id=price).first() if price else None) or (
        row.plan if row else None
    )
    # The subscription's metadata; API versions before basil carry it at the top level.
    older = invoice.get("subscription_details") or {}
    metadata = details.get("metadata") or older.get("metadata") or {}
    org = _locked_org(row.organization_id if row else metadata.get("organization_id"))
    if org is None or plan is None:
        logger.warning("Stripe invoice %s names no organization or plan of ours", invoice["id"])
        return
    if org.plan_id != plan.pk:
        # The plan change itself (checkout or subscription update) grants the first month.
        logger.info("Stripe invoice %s is for %s, %s is on %s", invoice["id"], plan, org, org.plan)
        return
    # The line's period is the one paid for (the invoice's own period is the previous one).
    start = _timestamp(((line or {}).get("period") or {}).get("start")) or _created(event)
    # The same key as the monthly schedule and change_plan: one grant per plan and month.
    ledger.grant_monthly(org, plan, month=start.date())


HANDLERS: dict[str, Callable[[dict[str, Any], Event], None]] = {
    "checkout.session.completed": checkout_completed,
    "checkout.session.async_payment_succeeded": checkout_completed,
    "customer.subscription.created": subscription_changed,
    "customer.subscription.updated": subscription_changed,
    "customer.subscription.deleted": subscription_deleted,
    "invoice.paid": invoice_paid,
}


def _back_to_free(org: Organization) -> None:
    if org.plan.slug != Plan.DEFAULT_SLUG:
        ledger.change_plan(org, Plan.objects.get(slug=Plan.DEFAULT_SLUG))


def _locked_org(org_id: object) -> Organization | None:
    """The organization, its row locked so that events about it apply one at a time."""
    try:
        pk = int(str(org_id))
    except ValueError:
        return None
    locked = Organization.objects.select_for_update(no_key=True)
    return locked.select_related("plan").filter(pk=pk).first()


def _subscription_row(subscription: dict[str, Any]) -> Subscription | None:
    """Our row for this Stripe subscription with its organization locked; None if not ours."""
    org_id = (
        Subscription.objects.filter(stripe_subscription_id=subscription["id"])
        .values_list("organization_id", flat=True)
        .first()
    )
    org = _locked_org(org_id or (subscription.get("metadata") or {}).get("organization_id"))
    if org is None:
        logger.warning("Stripe subscription %s names no organization of ours", subscription["id"])
        return None
    # Read again under the lock: a concurrent event about this organization may have changed it.
    row = Subscription.objects.filter(organization=org).first() or Subscription(organization=org)
    if row.stripe_subscription_id not in ("", subscription["id"]) and subscription.get(
        "status"
    ) not in ("active", "trialing"):
        # Another subscription is the current one; an unpaid newcomer does not replace it.
        return None
    return row


def _subscription_price(subscription: dict[str, Any]) -> str:
    items = (subscription.get("items") or {}).get("data") or []
    return _id((items[0].get("price") or {}).get("id")) if items else ""


def _subscription_period_end(subscription: dict[str, Any]) -> int | None:
    # API 2025-03-31.basil moved the billing period from the subscription to its items.
    items = (subscription.get("items") or {}).get("data") or []
    end = subscription.get("current_period_end")
    return end or (items[0].get("current_period_end") if items else None)


def _subscription_line(invoice: dict[str, Any], subscription_id: str) -> dict[str, Any] | None:
    for line in (invoice.get("lines") or {}).get("data") or []:
        details = (line.get("parent") or {}).get("subscription_item_details") or {}
        if subscription_id in (details.get("subscription"), line.get("subscription")):
            return line
    return None


def _line_price(line: dict[str, Any] | None) -> str:
    if not line:
        return ""
    # basil: pricing.price_details.price; older versions: price.id.
    details = (line.get("pricing") or {}).get("price_details") or {}
    return _id(details.get("price") or line.get("price"))


def _id(value: object) -> str:
    """An object's id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _timestamp(value: object) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int | float) else None


def _created(event: Event) -> datetime:
    return _timestamp(event.get("created")) or datetime.now(UTC)
