"""Redis configured but not answering: limits count in the database, submits answer 503.

Redis is pointed at a free port of 127.0.0.1 where nothing listens, so every call meets a real
refused connection; the integration test (tests/integration/test_redis_outage.py) stops a real
redis-server under a running stack.
"""

from __future__ import annotations

import base64
import time

import pytest

from accounts.models import Membership, User
from billing import counters
from billing.models import CreditEntry, Plan, RateCounter
from generation.models import Job
from generation.queue import BROKER_RETRY_AFTER, QueueUnavailable

pytestmark = pytest.mark.django_db

LOAD = "/api/v3/system_load"
APP_PAGES = (
    "/app/",
    "/app/keys/",
    "/app/settings/",
    "/app/team/",
    "/app/playground/",
    "/app/history/",
    "/app/usage/",
    "/app/billing/",
)
DOWN = QueueUnavailable.default_detail
TIP = QueueUnavailable.tips


def test_it_counts_and_claims_in_the_database_while_redis_is_down(dead_redis):
    started = time.monotonic()
    assert not counters.in_database()
    assert [counters.hit("rpm:down", 60).count for _ in range(3)] == [1, 2, 3]
    assert counters.peek("rpm:down", 60).count == 3
    counters.forget("rpm:down", 60)
    assert counters.peek("rpm:down", 60).count == 0
    assert counters.claim("dup:down", 30) == 0.0
    assert 0 < counters.claim("dup:down", 30) <= 30
    counters.release("dup:down")
    assert counters.claim("dup:down", 30) == 0.0
    assert set(RateCounter.objects.values_list("key", flat=True)) == {"dup:down"}
    assert time.monotonic() - started < 3, "a dead Redis must fail fast"


def test_the_plans_rate_limit_still_holds_while_redis_is_down(dead_redis, api, free_tenant):
    Plan.objects.filter(slug="free").update(requests_per_minute=2)
    # Three requests in one clock minute: start them early in one.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    answers = [api.post(LOAD, {"key": free_tenant.key}) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 429]
    assert answers[0][1]["status"] == "ok"
    assert answers[2][1]["message"] == "Rate limit exceeded"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"user:{key}".encode()).decode()}


# Each format's submit, and the 503 body in that format's own error shape.
SUBMITS = {
    "modelslab": (
        "/api/v3/text2img",
        lambda key: ({"key": key, "prompt": "a harbour"}, {}),
        {"status": "error", "message": DOWN, "tips": TIP},
    ),
    "synapse": (
        "/sd/demo-sd15",
        lambda key: ({"prompt": "a harbour"}, bearer(key)),
        {"error": DOWN, "details": TIP},
    ),
    "a1111": (
        "/sdapi/v1/txt2img",
        lambda key: ({"prompt": "a harbour", "width": 64, "height": 64}, basic(key)),
        {"error": "QueueUnavailable", "detail": DOWN, "body": "", "errors": DOWN},
    ),
    "dan": (
        "/api/sd/txt2img",
        lambda key: ({"prompt": "a harbour"}, bearer(key)),
        {"code": 503, "data": None, "message": f"{DOWN}. {TIP}"},
    ),
    "hyperbolic": (
        "/v1/image/generation",
        lambda key: ({"model_name": "demo-sd15", "prompt": "a harbour"}, bearer(key)),
        {"object": "error", "message": DOWN, "type": "server_error", "param": None, "code": 503},
    ),
}


@pytest.mark.parametrize("wire", SUBMITS)
def test_a_submit_answers_503_in_its_format_and_charges_nothing(
    dead_redis, client, tenant, demo_model, wire
):
    path, request, expected = SUBMITS[wire]
    body, headers = request(tenant.key)
    balance = tenant.org.credit_balance
    entries = CreditEntry.objects.count()

    response = client.post(path, body, content_type="application/json", headers=headers)

    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == expected
    assert response["Retry-After"] == str(BROKER_RETRY_AFTER)
    assert not Job.objects.exists()
    assert CreditEntry.objects.count() == entries
    tenant.org.refresh_from_db()
    assert tenant.org.credit_balance == balance
    # The spam filter gave its claim back: the same body is not a duplicate once Redis is back.
    assert not RateCounter.objects.filter(key__startswith="dup:").exists()


def test_the_login_page_and_the_app_pages_work_while_redis_is_down(
    dead_redis, client, tenant, demo_model
):
    user = User.objects.create_user("ada@example.com", "pw-123456789", is_staff=True)
    Membership.objects.create(user=user, organization=tenant.org, role=Membership.Role.OWNER)

    assert client.get("/accounts/login/").status_code == 200
    wrong = client.post("/accounts/login/", {"username": "ada@example.com", "password": "nope"})
    assert wrong.status_code == 200
    assert "_auth_user_id" not in client.session
    right = client.post(
        "/accounts/login/", {"username": "ada@example.com", "password": "pw-123456789"}
    )
    assert right.status_code == 302, right.content
    for page in (*APP_PAGES, "/ops/"):
        assert client.get(page).status_code == 200, page
