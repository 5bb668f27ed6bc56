"""Stripe: checkout redirects against a fake of Stripe's API, and the signed webhook endpoint.

Events are recorded Stripe JSON (tests/fixtures/stripe/) posted with a real `Stripe-Signature`;
only Stripe's servers are faked, by a local HTTP server that STRIPE_API_BASE points at.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from django.test import Client

from accounts.models import Membership, Organization, User
from accounts.services import get_or_create_organization
from billing.models import CreditEntry, Plan, StripeEvent, Subscription

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
WEBHOOK = "/billing/stripe/webhook/"
WEBHOOK_SECRET = "whsec_pictor_test_7d1c0a"
SECRET_KEY = "sk_test_pictor_51RbXfQ"
BASIC_PRICE = "price_1RbBasicMonthly"
PREMIUM_PRICE = "price_1RbPremiumMonthly"
SUBSCRIPTION_ID = "sub_1RdQ0XLkdIwHu7ixH4p2Qe8m"
NOT_CONFIGURED = (
    "Online payment is not configured; ask the operators to change your plan or add credits."
)


@dataclass
class StripeRequest:
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeStripe:
    """Stripe's API on 127.0.0.1: records each request, answers a session (or a scripted error)."""

    port: int = 0
    requests: list[StripeRequest] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # 200 answers, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: StripeRequest) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(request)
            number = len(self.requests)
            if self.errors:
                status = self.errors.pop(0)
                return status, {"error": {"type": "api_error", "message": f"Fake error {status}"}}
            if self.bodies:
                return 200, self.bodies.pop(0)
        if request.path == "/v1/billing_portal/sessions":
            return 200, {
                "id": f"bps_fake{number}",
                "object": "billing_portal.session",
                "customer": request.form["customer"],
                "url": f"https://billing.stripe.com/p/session/test_fake{number}",
            }
        return 200, {
            "id": f"cs_test_fake{number}",
            "object": "checkout.session",
            "mode": request.form.get("mode"),
            "status": "open",
            "url": f"https://checkout.stripe.com/c/pay/cs_test_fake{number}",
        }


@pytest.fixture
def fake_stripe(settings: Any) -> Iterator[FakeStripe]:
    state = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
            request = StripeRequest(
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                dict(parse_qsl(body, keep_blank_values=True)),
            )
            status, answer = state.answer(request)
            reply = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{state.port}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def stripe_on(settings: Any, db: None) -> None:
    """Stripe configured: keys, two packs, prices on the basic and premium plans."""
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.PICTOR_BASE_URL = "https://pictor.example.com"
    settings.PICTOR_CREDIT_PACKS = (
        ("small", 1000, "price_1RpackSmall"),
        ("large", 10000, "price_1RpackLarge"),
    )
    Plan.objects.filter(slug="basic").update(stripe_price_id=BASIC_PRICE)
    Plan.objects.filter(slug="premium").update(stripe_price_id=PREMIUM_PRICE)


@dataclass
class People:
    org: Organization
    owner: User
    admin: User
    member: User
    outsider: User
    start: int  # the balance before the test: a new organization gets its plan's credits
    first_new_entry: int

    def gained(self) -> int:
        return balance(self.org) - self.start

    def new_entries(self) -> Any:
        return CreditEntry.objects.filter(organization=self.org, pk__gte=self.first_new_entry)


@pytest.fixture
def people(db: None) -> People:
    """acme (free plan) with an owner, an admin and a member; globex's owner is an outsider."""
    org = get_or_create_organization("acme", "free")
    globex = get_or_create_organization("globex", "free")
    users = {}
    for role in ("owner", "admin", "member"):
        users[role] = User.objects.create_user(f"{role}@acme.example", "pw")
        Membership.objects.create(user=users[role], organization=org, role=role)
    outsider = User.objects.create_user("owner@globex.example", "pw")
    Membership.objects.create(user=outsider, organization=globex, role="owner")
    last = CreditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    return People(
        org, users["owner"], users["admin"], users["member"], outsider, balance(org), last + 1
    )


def load(name: str, org: Organization) -> dict[str, Any]:
    """A recorded event, its organization ids pointed at `org`."""
    event = json.loads((FIXTURES / f"{name}.json").read_text())

    def point(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("client_reference_id", "organization_id") and value:
                    node[key] = str(org.pk)
                else:
                    point(value)
        elif isinstance(node, list):
            for item in node:
                point(item)

    point(event)
    return event


def signature(body: bytes, secret: str = WEBHOOK_SECRET, at: int | str | None = None) -> str:
    """Stripe's scheme: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body" under the secret>."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def deliver(client: Client, event: dict[str, Any] | bytes, header: str | None = None) -> Any:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Stripe-Signature": signature(body) if header is None else header}
    return client.post(WEBHOOK, data=body, content_type="application/json", headers=headers)


def balance(org: Organization) -> int:
    return Organization.objects.get(pk=org.pk).credit_balance


def plan_of(org: Organization) -> str:
    return Organization.objects.select_related("plan").get(pk=org.pk).plan.slug


# The webhook: signatures


@pytest.mark.parametrize(
    "how", ["wrong secret", "tampered body", "no header", "no v1", "junk", "superscript time"]
)
def test_it_refuses_a_bad_signature_and_stores_nothing(client, stripe_on, people, how):
    body = json.dumps(load("checkout_session_completed_payment", people.org)).encode()
    header = {
        "wrong secret": signature(body, secret="whsec_someone_else"),
        "tampered body": signature(body.replace(b'"1000"', b'"9000"')),
        "no header": "",
        "no v1": f"t={int(time.time())}",
        "junk": "t=abc,v1=zz",
        # Signed with the real secret, but "²" is a digit to str.isdigit() and not to int().
        "superscript time": signature(body, at="²"),
    }[how]
    response = deliver(client, body, header)
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0
    assert people.gained() == 0


def test_it_refuses_a_signature_older_than_five_minutes(client, stripe_on, people):
    body = json.dumps(load("checkout_session_completed_payment", people.org)).encode()
    response = deliver(client, body, signature(body, at=int(time.time()) - 301))
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0
    assert deliver(client, body, signature(body, at=int(time.time()) - 240)).status_code == 200
    assert people.gained() == 1000


def test_it_accepts_any_matching_v1_while_the_endpoint_secret_rolls(client, stripe_on, people):
    body = json.dumps(load("checkout_session_completed_payment", people.org)).encode()
    old = signature(body, secret="whsec_the_old_one")
    new = signature(body)
    response = deliver(client, body, f"{old},v1={new.split('v1=')[1]}")
    assert response.status_code == 200, response.content
    assert people.gained() == 1000


def test_without_a_webhook_secret_it_answers_503(client, stripe_on, settings, people):
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = deliver(client, load("checkout_session_completed_payment", people.org))
    assert response.status_code == 503
    assert StripeEvent.objects.count() == 0


# The webhook: credit packs


def test_a_pack_purchase_grants_its_credits_once(client, stripe_on, people):
    event = load("checkout_session_completed_payment", people.org)
    session_id = event["data"]["object"]["id"]

    response = deliver(client, event)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    assert people.gained() == 1000
    entry = people.new_entries().get()
    assert (entry.kind, entry.amount, entry.key) == ("grant", 1000, f"stripe:{session_id}")
    stored = StripeEvent.objects.get()
    assert (stored.event_id, stored.type) == (event["id"], "checkout.session.completed")
    assert stored.payload == event

    # The same event again (a replay, or Stripe retrying): 200 and nothing changes.
    replay = deliver(client, event)
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    assert people.gained() == 1000
    assert people.new_entries().count() == 1
    assert StripeEvent.objects.count() == 1


def test_a_delayed_payment_grants_when_it_succeeds_and_only_once(client, stripe_on, people):
    pending = load("checkout_session_completed_payment", people.org)
    pending["data"]["object"]["payment_status"] = "unpaid"
    assert deliver(client, pending).status_code == 200
    assert people.gained() == 0

    paid = load("checkout_session_completed_payment", people.org)
    paid["id"] = "evt_1RdQ9zLkdIwHu7ixAsyncPaid"
    paid["type"] = "checkout.session.async_payment_succeeded"
    assert deliver(client, paid).status_code == 200
    assert people.gained() == 1000

    # Another event about the same session (a different id) cannot grant it twice.
    again = dict(paid, id="evt_1RdQAaLkdIwHu7ixSameSession")
    assert deliver(client, again).status_code == 200
    assert people.gained() == 1000
    assert people.new_entries().count() == 1


def test_a_signature_with_characters_beyond_ascii_is_refused(client, stripe_on, people):
    body = json.dumps(load("checkout_session_completed_payment", people.org)).encode()
    assert deliver(client, body, f"t={int(time.time())},v1=é").status_code == 400
    assert StripeEvent.objects.count() == 0


def payment(org: Organization, **changes: Any) -> dict[str, Any]:
    event = load("checkout_session_completed_payment", org)
    event["data"]["object"].update(changes)
    return event


def metadata(credits: Any) -> dict[str, Any]:
    return {"metadata": {"credits": credits, "pack": "small"}}


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "evt_nan", "type": "customer.created", "created": NaN, "data": {"object": {}}}',
        json.dumps({"id": "evt_" + "x" * 100, "type": "customer.created", "data": {"object": {}}}),
        json.dumps({"id": "evt_t", "type": "x" * 101, "data": {"object": {}}}),
    ],
)
def test_a_signed_event_that_is_no_event_of_ours_is_a_400(client, stripe_on, people, body):
    body = body if isinstance(body, bytes) else body.encode()
    response = deliver(client, body)
    assert response.status_code == 400, response.content
    assert StripeEvent.objects.count() == 0


@pytest.mark.parametrize(
    "changes",
    [
        metadata("0"),
        metadata("-5"),
        metadata([1]),
        {"metadata": "credits"},
    ],
)
def test_a_signed_event_whose_content_cannot_apply_is_a_400_and_stores_nothing(
    client, stripe_on, people, changes
):
    response = deliver(client, payment(people.org, **changes))
    assert response.status_code == 400, response.content
    assert "not usable" in response.json()["error"]
    assert StripeEvent.objects.count() == 0
    assert people.gained() == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o.pop("id"),
        lambda o: o["items"]["data"][0].update(price="price_as_text"),
        lambda o: o.update(current_period_end=1e20),
    ],
)
def test_a_subscription_event_with_an_unknown_shape_is_a_400(client, stripe_on, people, change):
    subscribe(client, people.org)
    event = load("customer_subscription_updated", people.org)
    change(event["data"]["object"])
    response = deliver(client, event)
    assert response.status_code == 400, response.content
    assert plan_of(people.org) == "basic"
    assert not StripeEvent.objects.filter(event_id=event["id"]).exists()


def test_unknown_event_types_are_stored_and_answered_200(client, stripe_on, people):
    response = deliver(client, load("customer_created", people.org))
    assert response.status_code == 200
    assert StripeEvent.objects.get().type == "customer.created"
    assert people.new_entries().count() == 0
    assert plan_of(people.org) == "free"


# The webhook: subscriptions


def subscribe(client: Client, org: Organization) -> dict[str, Any]:
    event = load("checkout_session_completed_subscription", org)
    response = deliver(client, event)
    assert response.status_code == 200, response.content
    return event


def test_a_subscription_checkout_changes_the_plan_and_grants_its_credits(client, stripe_on, people):
    event = subscribe(client, people.org)
    assert plan_of(people.org) == "basic"
    assert people.gained() == 3000
    entry = people.new_entries().get()
    assert entry.key.startswith(f"monthly:{people.org.pk}:basic:")
    subscription = Subscription.objects.get(organization=people.org)
    assert subscription.plan.slug == "basic"
    assert subscription.stripe_subscription_id == SUBSCRIPTION_ID
    assert subscription.stripe_customer_id == "cus_SYpQ8mXb2LkN4r"
    assert subscription.status == "active"

    assert deliver(client, event).json()["duplicate"] is True
    assert people.gained() == 3000


def test_a_subscription_update_moves_to_the_plan_of_its_price(client, stripe_on, people):
    subscribe(client, people.org)
    response = deliver(client, load("customer_subscription_updated", people.org))
    assert response.status_code == 200
    assert plan_of(people.org) == "premium"
    assert people.gained() == 3000 + 20000
    subscription = Subscription.objects.get(organization=people.org)
    assert subscription.plan.slug == "premium"
    assert subscription.status == "active"
    assert subscription.current_period_end == datetime.fromtimestamp(1754050727, UTC)


def test_an_older_update_arriving_late_does_not_undo_a_newer_one(client, stripe_on, people):
    subscribe(client, people.org)
    newer = load("customer_subscription_updated", people.org)
    older = load("customer_subscription_updated", people.org)
    older["id"] = "evt_1RfA1aLkdIwHu7ixOlderOne"
    older["created"] = newer["created"] - 60
    older["data"]["object"]["status"] = "past_due"
    assert deliver(client, newer).status_code == 200
    assert deliver(client, older).status_code == 200
    assert Subscription.objects.get(organization=people.org).status == "active"


def test_a_deleted_subscription_goes_back_to_the_free_plan(client, stripe_on, people):
    subscribe(client, people.org)
    response = deliver(client, load("customer_subscription_deleted", people.org))
    assert response.status_code == 200
    assert plan_of(people.org) == "free"
    assert Subscription.objects.get(organization=people.org).status == "canceled"


def test_deleting_a_subscription_that_is_not_the_current_one_changes_nothing(
    client, stripe_on, people
):
    subscribe(client, people.org)
    event = load("customer_subscription_deleted", people.org)
    event["data"]["object"]["id"] = "sub_1ROldOneLkdIwHu7ixReplaced"
    assert deliver(client, event).status_code == 200
    assert plan_of(people.org) == "basic"
    assert Subscription.objects.get(organization=people.org).status == "active"


def subscription_event(
    org: Organization, kind: str, created: int, price: str = PREMIUM_PRICE
) -> dict[str, Any]:
    """customer.subscription.<kind> for SUBSCRIPTION_ID, sent at `created`."""
    name = "deleted" if kind == "deleted" else "updated"
    event = load(f"customer_subscription_{name}", org)
    event["id"] = f"evt_{kind}_{created}"
    event["type"] = f"customer.subscription.{kind}"
    event["created"] = created
    event["data"]["object"]["items"]["data"][0]["price"]["id"] = price
    if kind != "deleted":
        event["data"]["object"]["status"] = "active"
    return event


def checkout_event(org: Organization, created: int) -> dict[str, Any]:
    event = load("checkout_session_completed_subscription", org)
    event["created"] = created
    return event


@pytest.mark.parametrize(
    "order",
    [
        # The checkout's own event arrives after the subscription ended.
        ["created", "deleted", "checkout"],
        # The deletion arrives before anything else about the subscription.
        ["deleted", "created", "checkout"],
        # An update sent in the same second as the deletion, delivered after it.
        ["created", "deleted", "updated"],
    ],
)
def test_an_ended_subscription_stays_ended_whatever_order_its_events_arrive_in(
    client, stripe_on, people, order
):
    at = {"checkout": 1_760_000_000, "created": 1_760_000_005, "deleted": 1_760_000_100}
    at["updated"] = at["deleted"]
    for name in order:
        event = checkout_event(people.org, at[name])
        if name != "checkout":
            event = subscription_event(people.org, name, at[name])
        assert deliver(client, event).status_code == 200, name
    assert plan_of(people.org) == "free"
    row = Subscription.objects.get(organization=people.org)
    assert (row.stripe_subscription_id, row.status) == (SUBSCRIPTION_ID, "canceled")


def test_a_late_checkout_event_does_not_undo_a_newer_plan_change(client, stripe_on, people):
    created = subscription_event(people.org, "created", 1_760_000_005)
    downgrade = subscription_event(people.org, "updated", 1_760_000_200, price=BASIC_PRICE)
    stale = subscription_event(people.org, "updated", 1_760_000_010)
    stale["id"] = "evt_stale_update"
    for event in (created, downgrade, checkout_event(people.org, 1_760_000_000), stale):
        assert deliver(client, event).status_code == 200
    assert plan_of(people.org) == "basic"
    row = Subscription.objects.get(organization=people.org)
    assert row.updated_at == datetime.fromtimestamp(1_760_000_200, UTC)


def invoice(org: Organization, event_id: str, period_start: int) -> dict[str, Any]:
    event = load("invoice_paid", org)
    event["id"] = event_id
    event["data"]["object"]["lines"]["data"][0]["period"]["start"] = period_start
    return event


def test_a_paid_invoice_grants_each_new_month_once(client, stripe_on, people):
    subscribe(client, people.org)
    assert people.gained() == 3000
    now = int(time.time())

    # The first invoice pays for this month, which the checkout already granted.
    assert deliver(client, invoice(people.org, "evt_first", now)).status_code == 200
    assert people.gained() == 3000

    renewal = invoice(people.org, "evt_renewal", now + 32 * 86400)
    assert deliver(client, renewal).status_code == 200
    assert people.gained() == 6000
    assert people.new_entries().count() == 2

    assert deliver(client, renewal).json()["duplicate"] is True
    # A second invoice for the same month (another event id) grants nothing either.
    assert deliver(client, invoice(people.org, "evt_again", now + 33 * 86400)).status_code == 200
    assert people.gained() == 6000


def test_an_invoice_before_its_checkout_event_does_not_grant_twice(client, stripe_on, people):
    # Stripe does not promise order: the first invoice may arrive before checkout completes.
    first = invoice(people.org, "evt_first_invoice", int(time.time()))
    first["data"]["object"]["billing_reason"] = "subscription_create"
    assert deliver(client, first).status_code == 200
    assert plan_of(people.org) == "free"
    subscribe(client, people.org)
    assert plan_of(people.org) == "basic"
    assert people.gained() == 3000


# Checkout


def login(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def test_a_plan_checkout_sends_a_subscription_session_to_stripe(
    client, stripe_on, fake_stripe, people
):
    response = login(client, people.owner).post("/billing/checkout/plan/basic/")
    assert response.status_code == 303
    assert response["Location"] == "https://checkout.stripe.com/c/pay/cs_test_fake1"
    [sent] = fake_stripe.requests
    assert sent.path == "/v1/checkout/sessions"
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.headers["idempotency-key"]
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    org_id = str(people.org.pk)
    assert sent.form == {
        "mode": "subscription",
        "line_items[0][price]": BASIC_PRICE,
        "line_items[0][quantity]": "1",
        "client_reference_id": org_id,
        "metadata[organization_id]": org_id,
        "metadata[plan]": "basic",
        "subscription_data[metadata][organization_id]": org_id,
        "subscription_data[metadata][plan]": "basic",
        "success_url": "https://pictor.example.com/app/billing/?org=acme&checkout=success",
        "cancel_url": "https://pictor.example.com/app/billing/?org=acme&checkout=canceled",
        "customer_email": "owner@acme.example",
    }


def test_a_pack_checkout_sends_a_payment_session_to_stripe(client, stripe_on, fake_stripe, people):
    response = login(client, people.admin).post("/billing/checkout/credits/large/")
    assert response.status_code == 303
    [sent] = fake_stripe.requests
    org_id = str(people.org.pk)
    assert sent.form["mode"] == "payment"
    assert sent.form["line_items[0][price]"] == "price_1RpackLarge"
    assert sent.form["client_reference_id"] == org_id
    assert sent.form["metadata[organization_id]"] == org_id
    assert sent.form["metadata[pack]"] == "large"
    assert sent.form["metadata[credits]"] == "10000"
    assert sent.form["payment_intent_data[metadata][pack]"] == "large"
    assert "subscription_data[metadata][plan]" not in sent.form


def test_a_paying_customer_is_sent_to_checkout_as_the_same_stripe_customer(
    client, stripe_on, fake_stripe, people
):
    Subscription.objects.create(
        organization=people.org,
        plan=Plan.objects.get(slug="basic"),
        stripe_customer_id="cus_SYpQ8mXb2LkN4r",
        status="canceled",
    )
    assert login(client, people.owner).post("/billing/checkout/credits/small/").status_code == 303
    assert fake_stripe.requests[0].form["customer"] == "cus_SYpQ8mXb2LkN4r"
    assert "customer_email" not in fake_stripe.requests[0].form


def test_a_member_may_not_check_out(client, stripe_on, fake_stripe, people):
    login(client, people.member)
    assert client.post("/billing/checkout/plan/basic/").status_code == 403
    assert client.post("/billing/checkout/credits/small/").status_code == 403
    assert fake_stripe.requests == []


def test_another_organization_looks_missing(client, stripe_on, fake_stripe, people):
    login(client, people.outsider)
    response = client.post("/billing/checkout/plan/basic/", {"org": "acme"})
    assert response.status_code == 404
    # A NUL never reaches the lookup (PostgreSQL would refuse it: a 500, not this 404).
    for path in ("/billing/checkout/plan/basic/", "/billing/portal/"):
        assert client.post(path, {"org": "acme\x00"}).status_code == 404
    assert fake_stripe.requests == []


def test_checkout_needs_a_login_and_a_csrf_token(stripe_on, fake_stripe, people):
    anonymous = Client()
    response = anonymous.post("/billing/checkout/plan/basic/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    strict = login(Client(enforce_csrf_checks=True), people.owner)
    assert strict.post("/billing/checkout/plan/basic/").status_code == 403
    assert fake_stripe.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/billing/checkout/plan/free/",
        "/billing/checkout/plan/gold/",
        "/billing/checkout/credits/huge/",
    ],
)
def test_a_plan_without_a_price_or_an_unknown_pack_is_404(
    client, stripe_on, fake_stripe, people, path
):
    assert login(client, people.owner).post(path).status_code == 404
    assert fake_stripe.requests == []


def test_a_live_subscription_is_not_sold_twice(client, stripe_on, fake_stripe, people):
    subscribe(client, people.org)
    response = login(client, people.owner).post("/billing/checkout/plan/premium/")
    assert response.status_code == 409
    assert fake_stripe.requests == []
    portal = client.post("/billing/portal/")
    assert portal.status_code == 303
    assert portal["Location"].startswith("https://billing.stripe.com/p/session/")
    assert fake_stripe.requests[0].form == {
        "customer": "cus_SYpQ8mXb2LkN4r",
        "return_url": "https://pictor.example.com/app/billing/?org=acme",
    }


def test_a_stripe_5xx_is_retried_with_the_same_idempotency_key(
    client, stripe_on, fake_stripe, people
):
    fake_stripe.errors = [500]
    response = login(client, people.owner).post("/billing/checkout/credits/small/")
    assert response.status_code == 303
    first, second = fake_stripe.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.form == second.form


def test_a_stripe_refusal_is_a_502_with_its_message(client, stripe_on, fake_stripe, people):
    fake_stripe.errors = [400]
    response = login(client, people.owner).post("/billing/checkout/credits/small/")
    assert response.status_code == 502
    assert "Fake error 400" in response.content.decode()
    assert len(fake_stripe.requests) == 1


@pytest.mark.parametrize(
    "path", ["/billing/checkout/credits/small/", "/billing/checkout/plan/basic/"]
)
@pytest.mark.parametrize("url", [None, 42, "javascript:alert(1)"])
def test_a_stripe_session_without_a_page_is_a_502(
    client, stripe_on, fake_stripe, people, path, url
):
    fake_stripe.bodies = [{"id": "cs_test_nourl", "object": "checkout.session", "url": url}]
    response = login(client, people.owner).post(path)
    assert response.status_code == 502
    assert "named no payment page" in response.content.decode()


def test_checkout_without_stripe_keys_is_404(client, settings, people):
    settings.STRIPE_SECRET_KEY = ""
    assert login(client, people.owner).post("/billing/checkout/credits/small/").status_code == 404


# The billing page


def test_the_billing_page_without_keys_says_payment_is_not_configured(client, settings, people):
    settings.STRIPE_SECRET_KEY = ""
    response = login(client, people.owner).get("/app/billing/")
    assert response.status_code == 200
    page = response.content.decode()
    assert NOT_CONFIGURED in page
    assert 'action="/billing/checkout' not in page
    for plan in ("Free", "Basic", "Premium", "Enterprise"):
        assert f"<td><strong>{plan}</strong></td>" in page


def test_the_billing_page_offers_upgrades_and_packs_to_an_owner(client, stripe_on, people):
    response = login(client, people.owner).get("/app/billing/")
    assert response.status_code == 200
    page = response.content.decode()
    assert NOT_CONFIGURED not in page
    assert 'action="/billing/checkout/plan/basic/"' in page
    assert 'action="/billing/checkout/plan/premium/"' in page
    assert 'action="/billing/checkout/plan/enterprise/"' not in page  # no Stripe price
    assert 'action="/billing/checkout/credits/small/"' in page
    assert "Buy 10000 credits" in page
    assert "csrfmiddlewaretoken" in page
    assert "no cap" in page  # enterprise images per day
    assert "<td>21, 31, 41</td>" in page  # premium steps


def test_a_member_sees_the_plans_without_buttons(client, stripe_on, people):
    page = login(client, people.member).get("/app/billing/").content.decode()
    assert "Only an owner or an admin" in page
    assert 'action="/billing/checkout' not in page


def test_the_billing_page_needs_a_login(client):
    response = client.get("/app/billing/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
