"""Credits under real concurrency on PostgreSQL: never below zero, and a key posts once.

A subprocess points Django at a fresh PostgreSQL database and fires the requests from threads
that start together, each on its own connection. No worker runs: the accepted jobs just wait.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import migrated_database
from tests.processes import python_json

pytestmark = pytest.mark.integration

SUBMITS = 50
BALANCE = 20
GRANTS = 10
INSUFFICIENT = {"status": "error", "message": "Insufficient credits"}
# A free plan of one concurrent job has a queue of 10.
QUEUE_SUBMITS = 30
QUEUE = 10


def together(count: int, work: Callable[[int], object]) -> list:
    """`work(i)` for i in range(count), from threads that start at once, each on its own
    connection; an exception is answered as [its name, its message]."""
    import threading

    from django.db import connections

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


def submit(key: str, index: int) -> list:
    """A ModelsLab text2img submit: [status, body]."""
    from django.test import Client

    # Distinct prompts: the same body twice within 30 s is refused as spam, not for its limits.
    response = Client().post(
        "/api/v3/text2img",
        {"key": key, "prompt": f"a race, entry {index}", "width": 64, "height": 64},
        content_type="application/json",
    )
    return [response.status_code, response.json()]


def tenant(slug: str, plan: str, balance: int) -> tuple[Any, str]:
    """A new organization on `plan` with `balance` credits, and an API key of it."""
    from accounts.models import ApiKey
    from accounts.services import get_or_create_organization
    from billing import ledger

    org = get_or_create_organization(slug, plan)
    ledger.set_balance(org, balance)
    _, key = ApiKey.objects.issue(org)
    return org, key


def register_model() -> None:
    from generation.models import AIModel

    # Only registered: nothing is generated, so the weights need not exist.
    AIModel.objects.create(
        model_id="demo-sd15", name="demo-sd15", path="demo-sd15", is_default=True
    )


def race() -> None:
    """The subprocess: 50 concurrent submits of 1-credit jobs, then 10 concurrent equal grants."""
    import django

    django.setup()
    from billing import ledger

    org, key = tenant("race", "premium", BALANCE)
    register_model()
    submits = together(SUBMITS, lambda index: submit(key, index))
    grants = together(GRANTS, lambda _: ledger.grant(org.pk, 5, "race:grant") is not None)
    print(json.dumps({"org": org.pk, "submits": submits, "grants": grants}))


def queue_race() -> None:
    """The subprocess: while another submit holds the tenant's row as its job INSERT does, a
    submit and a worker's claims go through; then 30 concurrent submits against a queue of 10."""
    import os

    import django

    django.setup()
    from django.db import connection

    from billing.models import Plan
    from generation import batching
    from generation.tasks import claim_next_job

    register_model()
    Plan.objects.filter(slug="free").update(
        concurrent_jobs=1, images_per_day=None, requests_per_minute=1000
    )
    busy, busy_key = tenant("busy", "premium", 100)
    # A wait on a lock fails instead of hanging, on every connection opened from here on.
    options = connection.settings_dict["OPTIONS"]
    options["options"] = "-c lock_timeout=5s"
    connection.close()
    # Another submit of the tenant between its job's INSERT and its commit: the job's foreign
    # key holds the organization's row FOR KEY SHARE until then.
    with psycopg.connect(os.environ["DATABASE_URL"]) as other:
        other.execute("SELECT 1 FROM accounts_organization WHERE id = %s FOR KEY SHARE", [busy.pk])
        beside = [submit(busy_key, index) for index in range(2)]
        leader = claim_next_job()
        claimed = [leader.pk, *(job.pk for job in batching.claim_companions(leader))]
        other.rollback()
    options.pop("options")
    connection.close()

    org, key = tenant("queue", "free", 1000)
    submits = together(QUEUE_SUBMITS, lambda index: submit(key, 100 + index))
    print(json.dumps({"org": org.pk, "beside": beside, "claimed": claimed, "submits": submits}))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[dict[str, str]]:
    # The ORM broker and the database cache, on the same PostgreSQL database.
    with migrated_database(
        tmp_path, PICTOR_SYNC_WAIT="0", PICTOR_Q_SYNC=None, PICTOR_MAX_BATCH_IMAGES="2"
    ) as env:
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


def test_the_queue_cap_holds_under_concurrent_submits_that_never_wait_on_each_others_insert(
    database,
):
    # The lock is taken after the job's INSERT, FOR NO KEY UPDATE (docs/architecture.md).
    code = "from tests.integration.test_credits_race import queue_race; queue_race()"
    outcome = python_json(code, database)
    assert [status for status, _ in outcome["beside"]] == [200, 200], outcome["beside"]
    assert outcome["claimed"] == [body["id"] for _, body in outcome["beside"]]

    org = outcome["org"]
    statuses = sorted(status for status, _ in outcome["submits"])
    assert statuses == [200] * QUEUE + [429] * (QUEUE_SUBMITS - QUEUE), outcome["submits"]
    refused = {body["message"] for status, body in outcome["submits"] if status == 429}
    assert refused == {"Too many queued jobs"}
    jobs = "SELECT count(*) FROM generation_job WHERE organization_id = %s"
    assert one(database, jobs, org) == QUEUE
    debits = (
        "SELECT count(*) FROM billing_creditentry WHERE organization_id = %s AND kind = 'debit'"
    )
    assert one(database, debits, org) == QUEUE
    balance = one(database, "SELECT credit_balance FROM accounts_organization WHERE id = %s", org)
    assert balance == 1000 - QUEUE


LEDGER = """
import json, django
django.setup()
from tests.test_ledger import entries_as_written
print(json.dumps(entries_as_written(), default=str))
"""


def test_each_entry_answered_is_the_row_stored_on_postgresql(tmp_path):
    # One statement there: the balance's UPDATE in a WITH clause, the INSERT from its row.
    from tests.test_ledger import check_entries

    with migrated_database(tmp_path) as env:
        check_entries(python_json(LEDGER, env))
