"""The credit rules: every change to a balance is one ledger entry with a unique key.

`Organization.credit_balance` is the running sum of the organization's `CreditEntry` rows. Both
move in one transaction here and nowhere else: the entry's unique key makes a replayed grant or
refund a no-op, and a conditional UPDATE keeps the balance from going below zero (or past
MAX_BALANCE) under concurrent requests (PostgreSQL re-checks the WHERE clause after waiting for
the row lock).
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import date
from typing import Protocol

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from prometheus_client import Counter
from rest_framework import status
from rest_framework.exceptions import APIException

from accounts.models import Organization
from billing.models import CreditEntry, Plan
from sdplatform import metrics
from sdplatform.rows import fixed_cursor

log = logging.getLogger(__name__)

Kind = CreditEntry.Kind
# The most a balance holds: credit_balance and balance_after are PositiveIntegerFields, 32-bit
# integers in PostgreSQL, which fails a statement that goes past this ("integer out of range").
MAX_BALANCE = 2**31 - 1
# Entries counted in Prometheus, by kind; the amount counted is always positive.
COUNTERS: dict[str, Counter] = {
    Kind.DEBIT: metrics.CREDITS_DEBITED,
    Kind.REFUND: metrics.CREDITS_REFUNDED,
}


class ChargedJob(Protocol):
    """What the ledger reads of a job (generation.models.Job); billing never imports generation."""

    @property
    def pk(self) -> int: ...

    @property
    def organization_id(self) -> int: ...

    @property
    def cost(self) -> int: ...


def org_id_of(org: Organization | int) -> int:
    """The id of an organization given either as its row or as its id."""
    return org if isinstance(org, int) else org.pk


class InsufficientCredits(APIException):
    """The organization's balance does not cover the charge (402, nothing is queued)."""

    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_detail = "Insufficient credits"
    default_code = "insufficient_credits"


class BalanceLimitExceeded(Exception):
    """A movement would take a balance past MAX_BALANCE; nothing was written."""

    def __init__(self, amount: int) -> None:
        super().__init__(
            f"{amount:+d} credits would take the balance past {MAX_BALANCE}, the most it can hold"
        )


def post(
    org_id: int,
    kind: str,
    amount: int,
    key: str,
    *,
    job_id: int | None = None,
    note: str = "",
    new_key: bool = False,
) -> CreditEntry | None:
    """Write one entry and move the balance by `amount`; None when `key` was already posted.

    `new_key`: no entry can hold `key` yet (the debit of a job created in the caller's
    transaction), so there is nothing to look up first and no duplicate to undo with a savepoint.
    Raises BalanceLimitExceeded for a credit the balance cannot hold, InsufficientCredits for a
    debit it does not cover.
    """
    # Past these no balance can take the movement, and the amount would not fit its column.
    if amount > MAX_BALANCE:
        raise BalanceLimitExceeded(amount)
    if amount < -MAX_BALANCE:
        raise InsufficientCredits()
    if not new_key and CreditEntry.objects.filter(key=key).exists():
        return None
    try:
        with transaction.atomic(savepoint=not new_key):
            entry = CreditEntry(
                organization_id=org_id,
                kind=kind,
                amount=amount,
                key=key,
                job_id=job_id,
                note=note[:500],
            )
            plan = move_and_enter(entry)
            if plan is None:
                if not new_key and CreditEntry.objects.filter(key=key).exists():
                    return None
                if not Organization.objects.filter(pk=org_id).exists():
                    raise Organization.DoesNotExist(f"No organization {org_id}")
                if amount > 0:
                    raise BalanceLimitExceeded(amount)
                raise InsufficientCredits()
            if kind in COUNTERS:
                # On commit: a debit rolled back with its job (a refused submit) never happened.
                counted = COUNTERS[kind].labels(plan=plan)
                transaction.on_commit(lambda: counted.inc(abs(amount)))
            return entry
    except IntegrityError:
        if new_key:
            raise
        # A concurrent post of the same key committed first; the savepoint undid our UPDATE.
        if CreditEntry.objects.filter(key=key).exists():
            return None
        raise


def move_and_enter(entry: CreditEntry) -> str | None:
    """Move the balance by `entry.amount` and save `entry` with the balance it made: the plan's
    slug, or None (nothing written) when the balance would go below zero or past MAX_BALANCE.

    On PostgreSQL one prepared statement: the conditional UPDATE in a WITH clause, and the INSERT
    of the entry from the row it returns. A submit holds its tenant's row lock from this
    statement to its commit (docs/architecture.md#the-request-path), so the entry no longer
    costs a round trip and the ORM's insert inside the lock. The UPDATE's WHERE is re-checked
    after waiting for the lock, as when it ran alone. SQLite has no UPDATE in a WITH clause: the
    same two statements, one after the other.
    """
    if connection.vendor != "postgresql":
        moved = move_balance(entry.organization_id, entry.amount)
        if moved is None:
            return None
        # We hold the row lock since the UPDATE, so this is the balance our entry made.
        entry.balance_after, plan = moved
        entry.save(force_insert=True)
        return plan
    with fixed_cursor() as cursor:
        cursor.execute(
            move_and_enter_query(),
            [
                entry.amount,
                entry.organization_id,
                *balance_bounds(entry.amount),
                entry.kind,
                entry.amount,
                entry.key,
                entry.job_id,
                entry.note,
                entry.created_at,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    entry.pk, entry.balance_after, plan = row
    entry._state.adding = False
    entry._state.db = connection.alias
    return str(plan)


@functools.cache
def move_and_enter_query() -> str:
    """What move_and_enter runs on PostgreSQL: moved balance, then the entry, in one statement."""
    org, entry = Organization._meta, CreditEntry._meta
    balance = quoted(org.get_field("credit_balance").column)
    org_id, plan_id = quoted(org.pk.column), quoted(org.get_field("plan").column)
    names = ("organization", "kind", "amount", "balance_after", "key", "job", "note", "created_at")
    column_of = {field.name: field.column for field in entry.concrete_fields}
    columns = ", ".join(quoted(column_of[name]) for name in names)
    # A job id sent as NULL has no type of its own for the SELECT list: it gets the column's.
    job = entry.get_field("job").db_type(connection)
    return (
        f"WITH moved AS ({balance_update(f'{org_id}, {balance}, {plan_id}')})"
        f" INSERT INTO {quoted(entry.db_table)} ({columns})"
        f" SELECT moved.{org_id}, %s, %s, moved.{balance}, %s, %s::{job}, %s, %s FROM moved"
        f" RETURNING {quoted(entry.pk.column)}, {quoted(column_of['balance_after'])},"
        f" {plan_slug(f'(SELECT {plan_id} FROM moved)')}"
    )


def move_balance(org_id: int, amount: int) -> tuple[int, str] | None:
    """Add `amount` unless the balance would go below zero or past MAX_BALANCE: (new balance,
    plan slug), or None.

    One statement: a conditional UPDATE that answers the balance it made (RETURNING, in
    PostgreSQL and SQLite alike), instead of an UPDATE and a SELECT while the row is locked.
    """
    org = Organization._meta
    balance = quoted(org.get_field("credit_balance").column)
    plan_id = f"{quoted(org.db_table)}.{quoted(org.get_field('plan').column)}"
    with connection.cursor() as cursor:
        cursor.execute(
            balance_update(f"{balance}, {plan_slug(plan_id)}"),
            [amount, org_id, *balance_bounds(amount)],
        )
        row = cursor.fetchone()
    return (int(row[0]), str(row[1])) if row else None


def balance_update(returning: str) -> str:
    """The conditional UPDATE that moves a balance unless it would go below zero or past
    MAX_BALANCE, answering `returning`. Its parameters: the signed amount, the organization's
    id, then balance_bounds(amount)."""
    org = Organization._meta
    balance = quoted(org.get_field("credit_balance").column)
    return (
        f"UPDATE {quoted(org.db_table)} SET {balance} = {balance} + %s"
        f" WHERE {quoted(org.pk.column)} = %s AND {balance} BETWEEN %s AND %s"
        f" RETURNING {returning}"
    )


def balance_bounds(amount: int) -> tuple[int, int]:
    """The lowest and highest balance that can take `amount` (-MAX_BALANCE to MAX_BALANCE).

    Both within 0..MAX_BALANCE, so each fits the balance column's type: PostgreSQL types a
    prepared statement's parameters after the column, and `balance + amount` in the WHERE
    clause would itself overflow at the limit.
    """
    return max(-amount, 0), min(MAX_BALANCE - amount, MAX_BALANCE)


def plan_slug(plan_id: str) -> str:
    """SQL for the slug of the plan whose id is the SQL `plan_id`."""
    plan = Plan._meta
    return (
        f"(SELECT {quoted(plan.get_field('slug').column)} FROM {quoted(plan.db_table)}"
        f" WHERE {quoted(plan.pk.column)} = {plan_id})"
    )


def quoted(name: str | None) -> str:
    """A table or column name as the database's SQL spells it."""
    return connection.ops.quote_name(str(name))


def balance(org: Organization | int) -> int:
    """The organization's current balance, read from the database."""
    org_id = org_id_of(org)
    return Organization.objects.values_list("credit_balance", flat=True).get(pk=org_id)


def grant(org: Organization | int, amount: int, key: str, *, note: str = "") -> CreditEntry | None:
    """Add `amount` (> 0) credits once per `key`."""
    if amount <= 0:
        raise ValueError("A grant must be a positive number of credits")
    return post(org_id_of(org), Kind.GRANT, amount, key, note=note)


def debit_key(job_id: int) -> str:
    return f"job:{job_id}:debit"


def refund_key(job_id: int) -> str:
    return f"job:{job_id}:refund"


def debit_for_job(job: ChargedJob) -> CreditEntry | None:
    """Charge a new job its cost; raises InsufficientCredits when the balance is short."""
    if job.cost <= 0:
        return None
    return post(
        job.organization_id, Kind.DEBIT, -job.cost, debit_key(job.pk), job_id=job.pk, new_key=True
    )


def refund_job(job_id: int, note: str = "Job failed or was canceled") -> CreditEntry | None:
    """Give back what a job was charged, once; None if nothing was.

    Failed and canceled jobs are refunded, and a finished job of a request that failed as a
    whole (generation/jobs.py, `withdraw`).
    """
    debit = CreditEntry.objects.filter(key=debit_key(job_id)).first()
    if debit is None:
        return None
    return post(
        debit.organization_id,
        Kind.REFUND,
        -debit.amount,
        refund_key(job_id),
        job_id=job_id,
        note=note,
    )


def set_balance(
    org: Organization | int, new_balance: int, key: str = "", *, note: str = ""
) -> CreditEntry | None:
    """Make the balance exactly `new_balance` with one adjustment entry (none if it already is)."""
    if new_balance < 0:
        raise ValueError("A balance cannot be negative")
    org_id = org_id_of(org)
    key = key or f"adjustment:{org_id}:{uuid.uuid4().hex}"
    with transaction.atomic():
        # The lock keeps a concurrent debit from slipping between reading and adjusting.
        current = (
            Organization.objects.select_for_update(no_key=True)
            .values_list("credit_balance", flat=True)
            .get(pk=org_id)
        )
        if current == new_balance:
            return None
        return post(org_id, Kind.ADJUSTMENT, new_balance - current, key, note=note)


def monthly_key(org_id: int, plan: Plan, month: date) -> str:
    """One grant per organization, plan and month: a mid-month upgrade still grants the new plan."""
    return f"monthly:{org_id}:{plan.slug}:{month:%Y-%m}"


def grant_monthly(
    org: Organization, plan: Plan | None = None, month: date | None = None
) -> CreditEntry | None:
    """Grant the plan's (default: the org's current plan's) credits for `month`, once."""
    plan = plan or org.plan
    month = month or timezone.now().date()
    if plan.monthly_credits <= 0:
        return None
    return grant(
        org,
        plan.monthly_credits,
        monthly_key(org.pk, plan, month),
        note=f"{plan.name} plan credits for {month:%Y-%m}",
    )


def change_plan(org: Organization, plan: Plan) -> CreditEntry | None:
    """Put the organization on `plan` and grant its monthly credits at once."""
    with transaction.atomic():
        if org.plan_id != plan.pk:
            org.plan = plan
            org.save(update_fields=["plan"])
        return grant_monthly(org, plan)


def grant_monthly_credits(month: date | None = None) -> int:
    """The scheduled task: every organization gets its plan's credits for the month, once.

    Returns how many organizations were granted (0 when this month's grants were all done).
    """
    month = month or timezone.now().date()
    granted = 0
    # A sign-up whose owner has not verified the email gets nothing yet, and one whose address
    # had free credits before gets the default (free) plan's never (accounts/verification.py).
    orgs = (
        Organization.objects.filter(free_credits_pending=False)
        .exclude(free_credits_refused=True, plan__slug=Plan.DEFAULT_SLUG)
        .select_related("plan")
    )
    for org in orgs.order_by("pk").iterator():
        try:
            entry = grant_monthly(org, month=month)
        except BalanceLimitExceeded as exc:
            # One organization at the limit keeps its balance; the others still get theirs.
            log.warning("No monthly credits for %s: %s", org.slug, exc)
            continue
        if entry is not None:
            granted += 1
    return granted
