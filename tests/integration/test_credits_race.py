"""Credits under real concurrency on PostgreSQL: never below zero, and a key posts once.

A subprocess points Django at a fresh PostgreSQL database and fires the requests from threads
that start together, each on its own connection. No worker runs: the accepted jobs just wait.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import migrated_database
from tests.processes import python_json

pytestmark = pytest.mark.integration

SUBMITS = 50
BALANCE = 20
GRANTS = 10
INSUFFICIENT = {"status": "error", "message": "Insufficient credits"}


def race() -> None:
    """The subprocess: 50 concurrent submits of 1-credit jobs, then 10 concurrent equal grants."""
    import threading

    import django

    django.setup()
    from django.db import connections
    from django.test import Client

    from accounts.models import ApiKey
    from accounts.services import get_or_create_organization
    from billing import ledger
    from generation.models import AIModel

    org = get_or_create_organization("race", "premium")
    ledger.set_balance(org, BALANCE)
    _, key = ApiKey.objects.issue(org)
    # Only registered: nothing is generated, so the weights need not exist.
    AIModel.objects.create(
        model_id="demo-sd15", name="demo-sd15", path="demo-sd15", is_default=True
    )

    def together(count: int, work):
        barrier = threading.Barrier(count)
        results: list = [None] * count

        def run(index: int) -> None:
            try:
                barrier.wait()
                results[index] = work(index)
            except Exception as exc:
                results[index] = [type(exc).__name__, str(exc)]
            finally:
                connections.close_all()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def submit(index: int) -> list:
        # Distinct prompts: the same body twice within 30 s is refused as spam, not for credits.
        response = Client().post(
            "/api/v3/text2img",
            {"key": key, "prompt": f"a race, entry {index}", "width": 64, "height": 64},
            content_type="application/json",
        )
        return [response.status_code, response.json()]

    submits = together(SUBMITS, submit)
    grants = together(GRANTS, lambda _: ledger.grant(org.pk, 5, "race:grant") is not None)
    print(json.dumps({"org": org.pk, "submits": submits, "grants": grants}))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[dict[str, str]]:
    # The ORM broker and the database cache, on the same PostgreSQL database.
    with migrated_database(tmp_path, PICTOR_SYNC_WAIT="0", PICTOR_Q_SYNC=None) as env:
        yield env


def one(env: dict[str, str], query: str, *params: object):
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_concurrent_submits_never_overdraw_and_a_grant_key_posts_once(database):
    outcome = python_json("from tests.integration.test_credits_race import race; race()", database)
    org = outcome["org"]

    accepted = [body for status, body in outcome["submits"] if status == 200]
    refused = [(status, body) for status, body in outcome["submits"] if status != 200]
    assert len(accepted) == BALANCE, outcome["submits"]
    assert {body["status"] for body in accepted} == {"processing"}
    assert refused == [(402, INSUFFICIENT)] * (SUBMITS - BALANCE)

    debits = (
        "SELECT count(*) FROM billing_creditentry WHERE organization_id = %s AND kind = 'debit'"
    )
    assert one(database, debits, org) == BALANCE
    assert one(database, "SELECT count(*) FROM generation_job WHERE organization_id = %s", org) == (
        BALANCE
    )
    assert (
        one(
            database,
            "SELECT min(balance_after) FROM billing_creditentry WHERE kind = 'debit' AND "
            "organization_id = %s",
            org,
        )
        == 0
    )

    assert outcome["grants"].count(True) == 1
    assert one(database, "SELECT count(*) FROM billing_creditentry WHERE key = 'race:grant'") == 1
    balance = one(database, "SELECT credit_balance FROM accounts_organization WHERE id = %s", org)
    total = one(
        database, "SELECT sum(amount) FROM billing_creditentry WHERE organization_id = %s", org
    )
    assert balance == total == 5
