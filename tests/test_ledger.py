"""The credit ledger (billing/ledger.py): debits at submit, 402, refunds, grants, monthly."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.db.models import Sum
from django.utils import timezone
from django_q.models import Schedule

from accounts.models import Organization
from accounts.services import get_or_create_organization
from billing import ledger
from billing.models import CreditEntry, Plan
from generation.jobs import finish, reap_expired_jobs
from generation.models import AIModel, Job
from generation.tasks import claim_next_job

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"width": 64, "height": 64}
INSUFFICIENT = {"status": "error", "message": "Insufficient credits"}


def body(tenant, **fields):
    return {"key": tenant.key, "prompt": "a red fox in the snow", **SMALL, **fields}


def this_month() -> str:
    return f"{timezone.now():%Y-%m}"


def entries(org) -> list[tuple[str, int, str]]:
    return list(
        CreditEntry.objects.filter(organization=org)
        .order_by("pk")
        .values_list("kind", "amount", "key")
    )


def assert_consistent(org) -> int:
    """The balance equals the sum of the entries, and each entry's balance_after its running sum."""
    running = 0
    for amount, balance_after in (
        CreditEntry.objects.filter(organization=org)
        .order_by("pk")
        .values_list("amount", "balance_after")
    ):
        running += amount
        assert balance_after == running
    total = CreditEntry.objects.filter(organization=org).aggregate(s=Sum("amount"))["s"] or 0
    assert ledger.balance(org) == total == running
    return running


def test_a_new_organization_starts_with_its_plans_monthly_credits(tenant, free_tenant):
    assert ledger.balance(tenant.org) == 20_000
    assert entries(tenant.org) == [
        ("grant", 20_000, f"monthly:{tenant.org.pk}:premium:{this_month()}")
    ]
    assert ledger.balance(free_tenant.org) == 100
    assert assert_consistent(free_tenant.org) == 100


def test_a_job_debits_its_cost(api, tenant, demo_model, no_wait):
    status, data = api.post("/api/v3/text2img", body(tenant, samples=2))
    assert status == 200, data
    assert data["meta"]["credits"] == 2
    job_id = data["id"]
    debit = CreditEntry.objects.get(key=f"job:{job_id}:debit")
    assert (debit.kind, debit.amount, debit.job_id, debit.balance_after) == (
        "debit",
        -2,
        job_id,
        19_998,
    )
    assert ledger.balance(tenant.org) == 19_998
    assert assert_consistent(tenant.org) == 19_998


def test_a_successful_job_keeps_its_debit(api, tenant, demo_model, sync_queue):
    status, data = api.post("/api/v3/text2img", body(tenant))
    assert (status, data["status"]) == (200, "success")
    assert [kind for kind, _, _ in entries(tenant.org)] == ["grant", "debit"]
    assert ledger.balance(tenant.org) == 19_999


def test_not_enough_credits_answers_402_and_queues_nothing(api, tenant, demo_model, no_wait):
    ledger.set_balance(tenant.org, 3)
    before = entries(tenant.org)
    # Four 64x64 images at 21 steps cost 4 credits.
    status, data = api.post("/api/v3/text2img", body(tenant, samples=4))
    assert (status, data) == (402, INSUFFICIENT)
    assert not Job.objects.exists()
    assert entries(tenant.org) == before
    assert ledger.balance(tenant.org) == 3
    # What the balance covers still goes through, down to exactly zero.
    status, data = api.post("/api/v3/text2img", body(tenant, samples=3))
    assert (status, data["meta"]["credits"]) == (200, 3)
    assert ledger.balance(tenant.org) == 0
    status, data = api.post("/api/v3/text2img", body(tenant, prompt="one more"))
    assert (status, data) == (402, INSUFFICIENT)
    assert Job.objects.count() == 1
    assert_consistent(tenant.org)


def test_a_larger_image_costs_more(api, tenant, demo_model, no_wait):
    # ceil(768*768 / 512^2) * ceil(31 / 21) = 3 * 2
    status, data = api.post(
        "/api/v3/text2img", body(tenant, width=768, height=768, num_inference_steps=31)
    )
    assert status == 200, data
    assert data["meta"]["credits"] == 6
    assert ledger.balance(tenant.org) == 20_000 - 6


def test_a_failed_job_is_refunded_once(api, tenant, demo_model, sync_queue, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    AIModel.objects.filter(pk=demo_model.pk).update(path=str(empty))
    status, data = api.post("/api/v3/text2img", body(tenant, samples=2))
    assert status == 200
    assert data["status"] == "failed", data
    job_id = data["id"]
    assert Job.objects.get(pk=job_id).status == Job.Status.FAILED
    assert entries(tenant.org)[1:] == [
        ("debit", -2, f"job:{job_id}:debit"),
        ("refund", 2, f"job:{job_id}:refund"),
    ]
    assert CreditEntry.objects.get(kind="refund").job_id == job_id
    assert ledger.balance(tenant.org) == 20_000
    # Refunding again (a retried finish, a reaper race) changes nothing.
    assert ledger.refund_job(job_id) is None
    assert not finish(Job.objects.filter(pk=job_id, status=Job.Status.PROCESSING), job_id)
    assert len(entries(tenant.org)) == 3
    assert assert_consistent(tenant.org) == 20_000


def test_a_canceled_job_is_refunded(api, tenant, demo_model, no_wait):
    _, data = api.post("/api/v3/text2img", body(tenant, samples=3))
    job_id = data["id"]
    assert ledger.balance(tenant.org) == 19_997
    queued = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED)
    assert finish(queued, job_id, status=Job.Status.CANCELED)
    assert ledger.balance(tenant.org) == 20_000
    assert entries(tenant.org)[-1] == ("refund", 3, f"job:{job_id}:refund")
    assert not finish(queued, job_id, status=Job.Status.CANCELED)
    assert assert_consistent(tenant.org) == 20_000


def test_the_reaper_failing_a_job_refunds_it(api, tenant, demo_model, no_wait, settings):
    settings.PICTOR_JOB_MAX_ATTEMPTS = 1
    _, data = api.post("/api/v3/text2img", body(tenant))
    job_id = data["id"]
    assert claim_next_job().pk == job_id
    Job.objects.filter(pk=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert reap_expired_jobs() == 1
    status, fetched = api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})
    assert (status, fetched["status"]) == (200, "failed")
    assert entries(tenant.org)[-1] == ("refund", 1, f"job:{job_id}:refund")
    assert assert_consistent(tenant.org) == 20_000


def test_a_job_that_was_never_charged_is_not_refunded(tenant, demo_model):
    job = Job.objects.create(organization=tenant.org, model=demo_model, params={}, cost=0)
    assert finish(Job.objects.filter(pk=job.pk), job.pk, status=Job.Status.FAILED)
    assert len(entries(tenant.org)) == 1
    assert ledger.balance(tenant.org) == 20_000


def test_a_replayed_grant_key_changes_nothing(tenant):
    first = ledger.grant(tenant.org, 50, "pack:abc", note="credit pack")
    assert (first.kind, first.amount, first.balance_after) == ("grant", 50, 20_050)
    assert ledger.grant(tenant.org, 50, "pack:abc") is None
    assert ledger.grant(tenant.org, 70, "pack:abc") is None
    assert ledger.balance(tenant.org) == 20_050
    assert CreditEntry.objects.filter(key="pack:abc").count() == 1
    with pytest.raises(ValueError):
        ledger.grant(tenant.org, 0, "pack:zero")
    assert assert_consistent(tenant.org) == 20_050


def test_a_debit_below_zero_leaves_nothing_behind(tenant):
    with pytest.raises(ledger.InsufficientCredits):
        ledger.post(tenant.org.pk, CreditEntry.Kind.DEBIT, -20_001, "too-much")
    assert not CreditEntry.objects.filter(key="too-much").exists()
    assert ledger.balance(tenant.org) == 20_000


def test_set_balance_writes_one_adjustment(tenant):
    entry = ledger.set_balance(tenant.org, 5, "support:1")
    assert (entry.kind, entry.amount, entry.balance_after) == ("adjustment", -19_995, 5)
    assert ledger.set_balance(tenant.org, 5) is None
    assert ledger.set_balance(tenant.org, 9, "support:1") is None
    assert ledger.set_balance(tenant.org, 40).amount == 35
    assert [kind for kind, _, _ in entries(tenant.org)] == ["grant", "adjustment", "adjustment"]
    assert assert_consistent(tenant.org) == 40


def test_a_plan_change_grants_the_new_plans_credits_once_a_month(free_tenant):
    org = free_tenant.org
    basic = Plan.objects.get(slug="basic")
    assert ledger.change_plan(org, basic).amount == 3_000
    org.refresh_from_db()
    assert (org.plan.slug, org.credit_balance) == ("basic", 3_100)
    # Back and forth in the same month: each plan's credits came once already.
    assert ledger.change_plan(org, Plan.objects.get(slug="free")) is None
    assert ledger.change_plan(org, basic) is None
    assert get_or_create_organization(org.slug, "basic").credit_balance == 3_100
    # An upgrade through the organization helper grants, too.
    assert get_or_create_organization(org.slug, "premium").credit_balance == 23_100
    assert assert_consistent(org) == 23_100


def test_the_monthly_task_grants_each_plan_once_a_month(tenant, free_tenant):
    assert ledger.grant_monthly_credits() == 0
    next_month = timezone.now().date().replace(day=1) + timedelta(days=32)
    assert ledger.grant_monthly_credits(next_month) == 2
    assert ledger.grant_monthly_credits(next_month) == 0
    assert ledger.balance(tenant.org) == 40_000
    assert entries(free_tenant.org)[-1] == (
        "grant",
        100,
        f"monthly:{free_tenant.org.pk}:free:{next_month:%Y-%m}",
    )
    assert assert_consistent(free_tenant.org) == 200


def test_the_monthly_task_skips_a_balance_at_its_limit_and_grants_the_others(
    tenant, free_tenant, caplog
):
    ledger.set_balance(tenant.org, ledger.MAX_BALANCE - 1)
    next_month = timezone.now().date().replace(day=1) + timedelta(days=32)

    assert ledger.grant_monthly_credits(next_month) == 1

    assert ledger.balance(free_tenant.org) == 200
    assert assert_consistent(tenant.org) == ledger.MAX_BALANCE - 1
    assert "No monthly credits for acme: +20000 credits would take the balance past" in caplog.text
    with pytest.raises(ledger.BalanceLimitExceeded):
        ledger.grant(tenant.org, 2, "ledger:one-too-many")
    assert ledger.grant(tenant.org, 1, "ledger:to-the-limit").balance_after == ledger.MAX_BALANCE
    assert assert_consistent(tenant.org) == ledger.MAX_BALANCE


def test_migrate_registers_the_monthly_credits_schedule():
    schedule = Schedule.objects.get(func="billing.ledger.grant_monthly_credits")
    assert schedule.schedule_type == Schedule.HOURLY
    assert schedule.repeats == -1


def test_the_data_migration_grants_organizations_from_before_the_ledger(tenant):
    migration = importlib.import_module("billing.migrations.0004_grant_existing_organizations")
    old = Organization.objects.create(name="old", slug="old", plan=Plan.objects.get(slug="basic"))
    migration.grant_current_month(apps, None)
    migration.grant_current_month(apps, None)
    assert entries(old) == [("grant", 3_000, f"monthly:{old.pk}:basic:{this_month()}")]
    assert assert_consistent(old) == 3_000
    assert ledger.balance(tenant.org) == 20_000
    # The monthly task sees the same key and grants nothing more this month.
    assert ledger.grant_monthly_credits() == 0


def entries_as_written() -> dict[str, object]:
    """Each way the ledger writes an entry, the entry it answers against the row it stored.

    Runs here on SQLite (two statements) and, in tests/integration/test_credits_race.py, on
    PostgreSQL (one statement: the balance's UPDATE in a WITH clause, the INSERT from its row).
    """

    def differences(entry: CreditEntry) -> list[str]:
        stored = CreditEntry.objects.get(pk=entry.pk)
        return [
            f"{field.attname}: {getattr(entry, field.attname)!r}"
            f" != {getattr(stored, field.attname)!r}"
            for field in CreditEntry._meta.concrete_fields
            if getattr(entry, field.attname) != getattr(stored, field.attname)
        ]

    org = get_or_create_organization("ledger-both", "basic")
    ledger.set_balance(org, 10, "start")
    model = AIModel.objects.create(model_id="ledger-demo", name="Demo", path="ledger-demo")
    job = Job.objects.create(organization=org, model=model, params={}, cost=3)
    written = {
        "grant": ledger.grant(org, 5, "ledger:grant", note="a pack"),
        "debit": ledger.debit_for_job(job),
        "refund": ledger.refund_job(job.pk),
    }
    found: dict[str, object] = {
        kind: differences(entry) for kind, entry in written.items() if entry is not None
    }
    found["balances after"] = [entry.balance_after for entry in written.values() if entry]
    found["job ids"] = [entry.job_id for entry in written.values() if entry]
    found["replayed"] = ledger.grant(org, 5, "ledger:grant")
    try:
        ledger.post(org.pk, CreditEntry.Kind.DEBIT, -16, "ledger:too-much")
        found["too much"] = "charged"
    except ledger.InsufficientCredits:
        found["too much"] = "refused"
    found["too much written"] = CreditEntry.objects.filter(key="ledger:too-much").exists()
    found["balance"] = ledger.balance(org)
    found["entries"] = CreditEntry.objects.filter(organization=org).count()
    return found


def check_entries(found: dict[str, object]) -> None:
    """What both databases must show."""
    assert found["grant"] == found["debit"] == found["refund"] == [], found
    assert found["balances after"] == [15, 12, 15], found
    assert found["job ids"][0] is None and found["job ids"][1] == found["job ids"][2], found
    assert found["job ids"][1] is not None, found
    assert (found["replayed"], found["too much"], found["too much written"]) == (
        None,
        "refused",
        False,
    ), found
    # The plan's monthly grant, the start adjustment, and the three entries above.
    assert (found["balance"], found["entries"]) == (15, 5), found


def test_each_entry_answered_is_the_row_stored():
    check_entries(entries_as_written())
