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

import pytest

from tests.integration.conftest import migrated_database
from tests.integration.test_credits_race import one, register_model, tenant, together
from tests.processes import python_json

pytestmark = pytest.mark.integration

SUBMITS = 8


def race() -> None:
    """The subprocess: SUBMITS concurrent submits of one body with one Idempotency-Key."""
    import django

    django.setup()
    from django.test import Client

    org, key = tenant("idempotent", "premium", 100)
    register_model()

    def submit(_index: int) -> list:
        response = Client().post(
            "/api/v3/text2img",
            {"key": key, "prompt": "one lighthouse", "width": 64, "height": 64},
            content_type="application/json",
            headers={"Idempotency-Key": "order-7"},
        )
        return [response.status_code, response.json()]

    print(json.dumps({"org": org.pk, "submits": together(SUBMITS, submit)}))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[dict[str, str]]:
    with migrated_database(tmp_path, PICTOR_SYNC_WAIT="0", PICTOR_Q_SYNC=None) as env:
        yield env


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
