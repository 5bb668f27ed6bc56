"""manage.py credits grant|set|balance and plan set (docs/architecture.md)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing import ledger
from billing.models import CreditEntry

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def kinds(org) -> list[str]:
    return list(
        CreditEntry.objects.filter(organization=org).order_by("pk").values_list("kind", flat=True)
    )


def test_balance_prints_the_balance_alone_on_the_last_line(free_tenant):
    assert run("credits", "balance", "--org", "freeloader")[-1] == "100"


def test_grant_adds_one_grant_entry(free_tenant):
    lines = run("credits", "grant", "--org", "freeloader", "--amount", "250", "--note", "goodwill")
    assert lines[-1] == "350"
    entry = CreditEntry.objects.filter(organization=free_tenant.org).latest("pk")
    assert (entry.kind, entry.amount, entry.balance_after, entry.note) == (
        "grant",
        250,
        350,
        "goodwill",
    )
    # Each run is a new grant, not a replay of the last one.
    assert run("credits", "grant", "--org", "freeloader", "--amount", "1")[-1] == "351"
    assert kinds(free_tenant.org) == ["grant", "grant", "grant"]


@pytest.mark.parametrize("amount", ["0", "-5", "many"])
def test_grant_refuses_an_amount_that_is_not_positive(free_tenant, amount):
    with pytest.raises(CommandError):
        call_command("credits", "grant", "--org", "freeloader", "--amount", amount)
    assert ledger.balance(free_tenant.org) == 100
    assert kinds(free_tenant.org) == ["grant"]


def test_set_writes_one_adjustment_entry(free_tenant):
    assert run("credits", "set", "--org", "freeloader", "--balance", "7")[-1] == "7"
    entry = CreditEntry.objects.filter(organization=free_tenant.org).latest("pk")
    assert (entry.kind, entry.amount, entry.balance_after) == ("adjustment", -93, 7)
    assert run("credits", "set", "--org", "freeloader", "--balance", "7")[-1] == "7"
    assert kinds(free_tenant.org) == ["grant", "adjustment"]
    with pytest.raises(CommandError):
        call_command("credits", "set", "--org", "freeloader", "--balance", "-1")
    assert ledger.balance(free_tenant.org) == 7


@pytest.mark.parametrize(
    "args",
    [
        ("credits", "balance", "--org", "nobody"),
        ("credits", "grant", "--org", "nobody", "--amount", "5"),
        ("credits", "set", "--org", "nobody", "--balance", "5"),
        ("plan", "set", "--org", "nobody", "--plan", "basic"),
    ],
)
def test_an_unknown_organization_is_a_clear_error(db, args):
    with pytest.raises(CommandError, match="No organization 'nobody'"):
        call_command(*args)


def test_plan_set_grants_the_plans_credits_at_once_and_once_a_month(free_tenant):
    org = free_tenant.org
    assert run("plan", "set", "--org", "freeloader", "--plan", "basic") == [
        "freeloader is on the basic plan, granted 3000 credits"
    ]
    org.refresh_from_db()
    assert (org.plan.slug, org.credit_balance) == ("basic", 3_100)
    month = f"{timezone.now():%Y-%m}"
    assert CreditEntry.objects.filter(key=f"monthly:{org.pk}:basic:{month}").count() == 1
    run("plan", "set", "--org", "freeloader", "--plan", "free")
    assert run("plan", "set", "--org", "freeloader", "--plan", "basic") == [
        "freeloader is on the basic plan"
    ]
    assert run("credits", "balance", "--org", "freeloader")[-1] == "3100"
    assert kinds(org) == ["grant", "grant"]


def test_plan_set_refuses_an_unknown_plan(free_tenant):
    with pytest.raises(CommandError, match="No plan 'gold'; plans are: free, basic"):
        call_command("plan", "set", "--org", "freeloader", "--plan", "gold")
    free_tenant.org.refresh_from_db()
    assert free_tenant.org.plan.slug == "free"


def assert_consistent(org) -> int:
    """The balance is the sum of the organization's entries, each written with its move."""
    amounts = CreditEntry.objects.filter(organization=org).values_list("amount", flat=True)
    assert ledger.balance(org) == sum(amounts)
    return sum(amounts)


@pytest.mark.parametrize(
    "args",
    [
        ("credits", "grant", "--org", "freeloader", "--amount", "99999999999"),
        ("credits", "grant", "--org", "freeloader", "--amount", "2147483648"),
        ("credits", "set", "--org", "freeloader", "--balance", "99999999999"),
        ("credits", "set", "--org", "freeloader", "--balance", "2147483648"),
    ],
)
def test_amounts_past_what_a_balance_holds_are_refused(free_tenant, args):
    with pytest.raises(CommandError, match="2147483647 credits, not"):
        call_command(*args)
    assert ledger.balance(free_tenant.org) == 100
    assert kinds(free_tenant.org) == ["grant"]


def test_a_balance_at_its_limit_takes_no_more_credits(free_tenant):
    org = free_tenant.org
    assert run("credits", "set", "--org", "freeloader", "--balance", "2147483647")[-1] == (
        "2147483647"
    )
    with pytest.raises(CommandError, match=r"Nothing granted to freeloader: \+1 credits would"):
        call_command("credits", "grant", "--org", "freeloader", "--amount", "1")
    with pytest.raises(CommandError, match=r"freeloader stays on the free plan: \+3000 credits"):
        call_command("plan", "set", "--org", "freeloader", "--plan", "basic")
    org.refresh_from_db()
    assert (org.plan.slug, org.credit_balance) == ("free", 2_147_483_647)
    assert kinds(org) == ["grant", "adjustment"]
    assert assert_consistent(org) == 2_147_483_647
    # Below the limit the same commands work again.
    run("credits", "set", "--org", "freeloader", "--balance", "2147480000")
    assert run("credits", "grant", "--org", "freeloader", "--amount", "647")[-1] == "2147480647"
    assert run("plan", "set", "--org", "freeloader", "--plan", "basic") == [
        "freeloader is on the basic plan, granted 3000 credits"
    ]
    assert assert_consistent(org) == 2_147_483_647
