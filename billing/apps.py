from django.apps import AppConfig
from django.db.models.signals import post_migrate

MONTHLY_CREDITS_SCHEDULE = "pictor: grant monthly plan credits"


def ensure_credit_schedule(sender: AppConfig, **kwargs: object) -> None:
    """Register the monthly-credits task with django-q2's scheduler (idempotent)."""
    from django_q.models import Schedule

    # Hourly, not monthly: the task grants each month once by key, so running it often only
    # shortens the wait after the month turns (or after a missed run).
    Schedule.objects.update_or_create(
        name=MONTHLY_CREDITS_SCHEDULE,
        defaults={
            "func": "billing.ledger.grant_monthly_credits",
            "schedule_type": Schedule.HOURLY,
            "repeats": -1,
        },
    )


COUNTER_PRUNE_SCHEDULE = "pictor: prune ended rate-limit counters"


def ensure_counter_schedule(sender: AppConfig, **kwargs: object) -> None:
    """Register the task that deletes ended counters and spam-filter claims (idempotent)."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=COUNTER_PRUNE_SCHEDULE,
        defaults={
            "func": "billing.counters.prune_expired",
            "schedule_type": Schedule.HOURLY,
            "repeats": -1,
        },
    )


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        post_migrate.connect(ensure_credit_schedule, sender=self)
        post_migrate.connect(ensure_counter_schedule, sender=self)
