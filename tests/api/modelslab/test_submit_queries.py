"""The database work of one ModelsLab submit stays bounded (docs/operations.md, "Submit path")."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import CreditEntry
from generation.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

# Key lookup, the rate counter, model, the spam filter's claim, BEGIN, job INSERT, balance UPDATE
# .. RETURNING (it locks the organization row), ledger INSERT, queue count, COMMIT, the ORM
# broker's enqueue INSERT and the ETA's read of the queue ahead. (With Redis the two counters and
# the enqueue leave the database: 9.) It was 22 before the submit path was trimmed.
SUBMIT_QUERIES = 13


def body(tenant, seed):
    return {
        "key": tenant.key,
        "prompt": "a red fox in the snow",
        "width": 64,
        "height": 64,
        "seed": seed,
        "instant_response": True,
    }


def test_it_queues_and_charges_a_submit_in_a_bounded_number_of_queries(api, tenant, demo_model):
    api.post("/api/v3/text2img", body(tenant, 1))  # warms what a process reads once
    with CaptureQueriesContext(connection) as queries:
        status, data = api.post("/api/v3/text2img", body(tenant, 2))
    assert status == 200, data
    assert data["status"] == "processing"
    job = Job.objects.get(pk=data["id"])
    assert job.status == Job.Status.QUEUED
    assert CreditEntry.objects.filter(job=job, kind=CreditEntry.Kind.DEBIT, amount=-1).exists()
    sql = "\n".join(q["sql"] for q in queries.captured_queries)
    assert len(queries.captured_queries) <= SUBMIT_QUERIES, sql


def test_a_refused_debit_leaves_no_job(api, tenant, demo_model):
    from billing import ledger

    ledger.set_balance(tenant.org, 0)
    status, data = api.post("/api/v3/text2img", body(tenant, 3))
    assert status == 402, data
    assert not Job.objects.filter(organization=tenant.org).exists()
    assert ledger.balance(tenant.org) == 0
