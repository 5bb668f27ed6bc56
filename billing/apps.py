from django.apps import AppConfig
from django.db.models.signals import post_migrate

from sdplatform.schedules import ensure_schedule

MONTHLY_CREDITS_SCHEDULE = "pictor: grant monthly plan credits"
COUNTER_PRUNE_SCHEDULE = "pictor: prune ended rate-limit counters"


def ensure_schedules(sender: AppConfig, **kwargs: object) -> None:
    """Register billing's periodic tasks with django-q2's scheduler (idempotent)."""
    # Here, not at the top: apps.py is imported while the app registry loads, before any
    # model (django-q2's Schedule included) may be imported.
    from django_q.models import Schedule

    # Hourly, not monthly: the task grants each month once by key, so running it often only
    # shortens the wait after the month turns (or after a missed run).
    ensure_schedule(
        MONTHLY_CREDITS_SCHEDULE, "billing.ledger.grant_monthly_credits", Schedule.HOURLY
    )
    # Deletes ended rate-limit counters and spam-filter claims.
    ensure_schedule(COUNTER_PRUNE_SCHEDULE, "billing.counters.prune_expired", Schedule.HOURLY)


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        post_migrate.connect(ensure_schedules, sender=self)
