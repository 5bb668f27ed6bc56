"""One Stripe event delivered 10 times at once to gunicorn on PostgreSQL makes exactly one grant.

Each delivery is handled by its own server thread on its own database connection; the unique
StripeEvent row, inserted in the same transaction as the grant, lets exactly one of them apply it.
And a signed event holding what PostgreSQL's columns refuse is a 400 that stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.integration.conftest import migrated_database
from tests.processes import free_port, manage, spawn_web, stop, wait_for_web

pytestmark = pytest.mark.integration

DELIVERIES = 10
SECRET = "whsec_race_test_3f9a"
FIXTURE = (
    Path(__file__).parents[1] / "fixtures" / "stripe" / "checkout_session_completed_payment.json"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """gunicorn (2 processes × 8 threads) on a fresh PostgreSQL database: (base URL, its env)."""
    port = free_port()
    with migrated_database(
        tmp_path,
        STRIPE_WEBHOOK_SECRET=SECRET,
        PICTOR_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        PICTOR_WEB_THREADS="8",
        PROMETHEUS_MULTIPROC_DIR=None,  # its metric files under its own PICTOR_VAR_DIR
    ) as env:
        web = spawn_web(env, tmp_path / "web.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_web(base + "/healthz", web, tmp_path / "web.log")
            yield base, env
        finally:
            stop([web], grace=10)


def pack_event(org_id: int) -> dict:
    event = json.loads(FIXTURE.read_text())
    session = event["data"]["object"]
    session["client_reference_id"] = session["metadata"]["organization_id"] = str(org_id)
    return event


def new_organization(env: dict[str, str], slug: str) -> tuple[int, int]:
    """(id, credit balance) of a new free-plan organization made by `manage.py apikey create`."""
    manage(env, "apikey", "create", "--org", slug, "--plan", "free")
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return conn.execute(
            "SELECT id, credit_balance FROM accounts_organization WHERE slug = %s", (slug,)
        ).fetchone()


def signed(body: bytes) -> dict[str, str]:
    at = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "Stripe-Signature": f"t={at},v1={digest}"}


def test_ten_concurrent_deliveries_of_one_event_make_one_grant(server):
    base, env = server
    org_id, start = new_organization(env, "race")

    event = pack_event(org_id)
    session = event["data"]["object"]
    body = json.dumps(event).encode()
    headers = signed(body)

    barrier = threading.Barrier(DELIVERIES)
    answers: list[object] = [None] * DELIVERIES

    def deliver(index: int) -> None:
        barrier.wait()
        try:
            response = requests.post(
                base + "/billing/stripe/webhook/", data=body, headers=headers, timeout=60
            )
            answers[index] = (response.status_code, response.json())
        except Exception as exc:  # recorded, so the assertion shows it
            answers[index] = repr(exc)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(DELIVERIES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(isinstance(a, tuple) and a[0] == 200 for a in answers), answers
    applied = [a for a in answers if not a[1]["duplicate"]]
    assert len(applied) == 1, answers
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        entries = conn.execute(
            "SELECT kind, amount, key FROM billing_creditentry"
            " WHERE organization_id = %s AND key LIKE 'stripe:%%'",
            (org_id,),
        ).fetchall()
        balance = conn.execute(
            "SELECT credit_balance FROM accounts_organization WHERE id = %s", (org_id,)
        ).fetchone()[0]
        stored = conn.execute(
            "SELECT count(*) FROM billing_stripeevent WHERE event_id = %s", (event["id"],)
        ).fetchone()[0]
    assert entries == [("grant", 1000, f"stripe:{session['id']}")]
    assert balance == start + 1000
    assert stored == 1


def test_a_signed_event_postgresql_cannot_hold_is_a_400_and_changes_nothing(server):
    base, env = server
    org_id, start = new_organization(env, "odd")
    text = json.dumps(pack_event(org_id))
    credits = '"credits": "1000"'
    bodies = {
        "NUL in a value": text.replace('"small"', '"sm\\u0000all"'),
        "unpaired surrogate": text.replace('"small"', '"\\ud800"'),
        "credits past the column": text.replace(credits, '"credits": "99999999999"'),
    }
    assert all(body != text for body in bodies.values())
    for what, body in bodies.items():
        raw = body.encode()
        response = requests.post(
            base + "/billing/stripe/webhook/", data=raw, headers=signed(raw), timeout=60
        )
        assert response.status_code == 400, (what, response.text)
        assert "error" in response.json(), what
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        balance = conn.execute(
            "SELECT credit_balance FROM accounts_organization WHERE id = %s", (org_id,)
        ).fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM billing_stripeevent").fetchone()[0]
    assert (balance, stored) == (start, 0)
