"""GET /api/v1/account, and ModelsLab's /api/wallet_balance and /api/subscribed_plan."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import ledger
from generation.models import Job
from tests.api.jobs.conftest import clone
from tests.helpers import make_tenant

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_the_plan_balance_and_todays_usage(jobs_api, tenant, submit, no_wait):
    done = submit(tenant, samples=2)
    canceled = submit(tenant)
    assert jobs_api.post(f"/api/v1/jobs/{canceled}/cancel", tenant.key)[0] == 200
    # Yesterday's job counts for nothing today.
    clone(done, created_at=timezone.now() - timedelta(days=1, hours=1))
    spent = Job.objects.get(pk=done).cost

    status, account = jobs_api.get("/api/v1/account", tenant.key)

    assert status == 200, account
    assert account["organization"] == {"name": tenant.org.name, "slug": "acme"}
    assert account["plan"] == {
        "slug": "premium",
        "name": "Premium",
        "requests_per_minute": 300,
        "concurrent_jobs": 4,
        "queued_jobs": 40,
        "images_per_day": 10000,
        "max_samples": 4,
        "max_side": 1024,
        "steps_list": [21, 31, 41],
        "retention_days": 30,
        "monthly_credits": 20000,
        "model_max_bytes": 2 * 1024**3,
        "model_storage_bytes": 10 * 1024**3,
    }
    assert account["credits"] == ledger.balance(tenant.org)
    today = account["today"]
    # Two jobs today; the canceled one's images and credits do not count.
    assert (today["jobs"], today["images"], today["credits"]) == (2, 2, spent)
    assert today["since"].endswith(("T00:00:00Z", "T00:00:00+00:00"))
    assert account["remaining_today"] == {
        "images": 10000 - 2,
        "queued_jobs": 40 - 2,  # the clone is queued too
        "credits": account["credits"],
    }
    assert account["jobs"] == {"queued": 2, "processing": 0}


def test_a_plan_without_a_daily_cap_has_no_remaining_images(jobs_api):
    big = make_tenant("bigco", "enterprise")
    _, account = jobs_api.get("/api/v1/account", big.key)
    assert account["plan"]["images_per_day"] is None
    assert account["remaining_today"]["images"] is None


def test_modelslab_wallet_balance_answers_the_credits(api, tenant):
    status, body = api.post("/api/wallet_balance", {"key": tenant.key})
    assert (status, body) == (
        200,
        {
            "status": "success",
            "data": {"balance": ledger.balance(tenant.org), "currency": "credits"},
        },
    )
    status, body = api.post("/api/wallet_balance", {"key": "pct_wrong"})
    assert status == 401 and body["status"] == "error" and body["message"] == "Invalid Api Key"


def test_modelslab_subscribed_plan_answers_the_account(api, jobs_api, tenant):
    status, body = api.post("/api/subscribed_plan", {"key": tenant.key})
    assert status == 200 and body["status"] == "success"
    assert body["data"] == jobs_api.get("/api/v1/account", tenant.key)[1]
