"""Plans and their limits."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

# A plan's step counts: a short list a client picks from; its largest bounds every format's steps.
MAX_PLAN_STEPS = 150
MAX_STEP_CHOICES = 20


def default_steps_list() -> list[int]:
    return [21]


def validate_steps_list(value: object) -> None:
    """A plan's steps_list: 1 to MAX_STEP_CHOICES whole step counts, each 1 to MAX_PLAN_STEPS."""
    # Every request of the plan's tenants reads it (max(), `in`): a wrong shape would fail them all.
    if not (
        isinstance(value, list)
        and 0 < len(value) <= MAX_STEP_CHOICES
        and all(type(steps) is int and 1 <= steps <= MAX_PLAN_STEPS for steps in value)
    ):
        raise ValidationError(
            f"Give a list of 1 to {MAX_STEP_CHOICES} step counts, each a whole number from 1 to "
            f"{MAX_PLAN_STEPS}, such as [21, 31]."
        )


class Plan(models.Model):
    """A price tier and every limit that comes with it; edited in the admin."""

    DEFAULT_SLUG = "free"

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    requests_per_minute = models.PositiveIntegerField()
    concurrent_jobs = models.PositiveIntegerField()
    images_per_day = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no cap")
    max_samples = models.PositiveSmallIntegerField()
    max_side = models.PositiveIntegerField()
    steps_list = models.JSONField(default=default_steps_list, validators=[validate_steps_list])
    priority = models.SmallIntegerField(default=0)
    retention_days = models.PositiveIntegerField()
    monthly_credits = models.PositiveIntegerField()
    stripe_price_id = models.CharField(
        max_length=100,
        blank=True,
        help_text="The Stripe recurring price that upgrades to this plan",
    )
    model_max_bytes = models.BigIntegerField(
        default=0, help_text="The largest model file a tenant may add; 0: no own models"
    )
    model_storage_bytes = models.BigIntegerField(
        default=0, help_text="Bytes of own models a tenant may keep, all of them together"
    )

    class Meta:
        ordering = ["priority"]

    def __str__(self) -> str:
        return self.name

    @property
    def max_steps(self) -> int:
        """The largest step count this plan allows (binds formats without a steps list)."""
        return max(self.steps_list)


class CreditEntry(models.Model):
    """One append-only line of an organization's credit ledger (billing/ledger.py writes it)."""

    class Kind(models.TextChoices):
        GRANT = "grant"
        DEBIT = "debit"
        REFUND = "refund"
        ADJUSTMENT = "adjustment"

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="credit_entries"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices)
    amount = models.IntegerField(help_text="Signed: positive adds credits, negative takes them")
    balance_after = models.PositiveIntegerField()
    key = models.CharField(
        max_length=200, help_text="Unique per entry: what makes a grant or refund happen once"
    )
    job = models.ForeignKey(
        "generation.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="credit_entries",
    )
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key"], name="billing_ledger_unique_key"),
        ]
        indexes = [
            # usage and ledger pages: WHERE organization_id=%s ORDER BY created_at DESC
            models.Index(fields=["organization", "-created_at"], name="billing_ledger_org_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} ({self.organization})"


class Subscription(models.Model):
    """An organization's Stripe subscription, as Stripe's webhooks last described it."""

    organization = models.OneToOneField(
        "accounts.Organization", on_delete=models.CASCADE, related_name="subscription"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=30, blank=True, help_text="Stripe's subscription status")
    current_period_end = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_subscription_id"],
                condition=~models.Q(stripe_subscription_id=""),
                name="billing_subscription_unique_stripe_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization} on {self.plan} ({self.status or 'manual'})"


class StripeEvent(models.Model):
    """A Stripe webhook event, stored once: replays and duplicates find it and change nothing."""

    event_id = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event_id"], name="billing_stripeevent_unique_event_id")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class RateCounter(models.Model):
    """A request counter or a claim shared by every process, when the cache is the database.

    billing/counters.py moves it with one atomic upsert per request (INSERT ... ON CONFLICT ...
    RETURNING), because Django's database cache has no atomic increment. With Redis configured
    the counters live in Redis instead and this table stays empty.
    """

    key = models.CharField(max_length=200, primary_key=True)
    hits = models.PositiveIntegerField(default=0)
    # Unix seconds, so the upsert compares plain numbers on every database.
    expires = models.FloatField(help_text="Unix time when the window or claim ends")

    class Meta:
        indexes = [
            # counters.prune_expired(): DELETE WHERE expires < now
            models.Index(fields=["expires"], name="billing_ratecounter_expiry_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.key}: {self.hits}"
