from django.apps import AppConfig
from django.db.models.signals import post_migrate

SWEEP_SCHEDULE = "pictor: sweep the job queue"
# The sweep's name before it also re-enqueued queued jobs; removed on migrate.
OLD_REAPER_SCHEDULE = "pictor: reap expired job leases"
RETENTION_SCHEDULE = "pictor: delete outputs past the plan's retention"


def ensure_schedules(sender: AppConfig, **kwargs: object) -> None:
    """Register the periodic tasks with django-q2's scheduler (idempotent)."""
    from django_q.models import Schedule

    from sdplatform.schedules import ensure_schedule

    # `manage.py worker` sweeps every PICTOR_SWEEP_INTERVAL; this covers plain `qcluster` hosts.
    ensure_schedule(SWEEP_SCHEDULE, "generation.tasks.sweep", Schedule.MINUTES, minutes=1)
    Schedule.objects.filter(name=OLD_REAPER_SCHEDULE).delete()
    ensure_schedule(RETENTION_SCHEDULE, "generation.retention.expire_outputs", Schedule.HOURLY)


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        # Registers the OpenAPI description of API key authentication.
        from generation.api import schema  # noqa: F401
        from generation.tasks import warm_worker

        post_migrate.connect(ensure_schedules, sender=self)
        post_spawn.connect(warm_worker, dispatch_uid="pictor-warm-worker")
