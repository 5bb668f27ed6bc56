"""Registering Pictor's periodic tasks with django-q2's scheduler, one way for every app."""

from __future__ import annotations

from typing import Any


def ensure_schedule(name: str, func: str, schedule_type: str, **options: Any) -> None:
    """Create or update the named repeating schedule (idempotent; apps call it on post_migrate)."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=name,
        defaults={"func": func, "schedule_type": schedule_type, "repeats": -1, **options},
    )
