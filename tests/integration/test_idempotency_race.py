"""Concurrent submits with one Idempotency-Key on PostgreSQL: one job, one charge, one answer.

A subprocess points Django at a fresh PostgreSQL database and fires the same request from
threads that start together, each on its own connection. No worker runs: the job just waits.
The unique constraint decides: every insert but one fails, and those requests answer the job
that won.
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

SUBMITS = 8


def race() -> None:
    """The subprocess: SUBMITS concurrent submits of one body with one Idempotency-Key."""
    import threading

    import django

    django.setup()
    from django.db import connections
    from django.test import Client

    from accounts.models import ApiKey
    from accounts.services import get_or_create_organization
    from generation.models import AIModel

    org = get_or_create_organization("idempotent", "premium")
    _, key = ApiKey.objects.issue(org)
    # Only registered: nothing is generated, so the weights need not exist.
    AIModel.objects.create(
        model_id="demo-sd15", name="demo-sd15", path="demo-sd15", is_default=True
    )
    barrier = threading.Barrier(SUBMITS)
    results: list = [None] * SUBMITS

    def submit(index: int) -> None:
        try:
            barrier.wait()
            response = Client().post(
                "/api/v3/text2img",
                {"key": key, "prompt": "one lighthouse", "width": 64, "height": 64},
                content_type="application/json",
                headers={"Idempotency-Key": "order-7"},
            )
            results[index] = [response.status_code, response.json()]
        except Exception as exc:
            results[index] = [type(exc).__name__, str(exc)]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(SUBMITS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"org": org.pk, "submits": results}))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[dict[str, str]]:
    with migrated_database(tmp_path, PICTOR_SYNC_WAIT="0", PICTOR_Q_SYNC=None) as env:
        yield env


def one(env: dict[str, str], query: str, *params: object):
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_concurrent_submits_with_one_key_make_one_job_charged_once(database):
    outcome = python_json(
        "from tests.integration.test_idempotency_race import race; race()", database
    )
    org = outcome["org"]

    statuses = [status for status, _body in outcome["submits"]]
    assert statuses == [200] * SUBMITS, outcome["submits"]
    ids = {body["id"] for _status, body in outcome["submits"]}
    assert len(ids) == 1
    assert {body["status"] for _status, body in outcome["submits"]} == {"processing"}
    jobs = "SELECT count(*) FROM generation_job WHERE organization_id = %s"
    assert one(database, jobs, org) == 1
    debits = (
        "SELECT count(*) FROM billing_creditentry WHERE organization_id = %s AND kind = 'debit'"
    )
    assert one(database, debits, org) == 1
