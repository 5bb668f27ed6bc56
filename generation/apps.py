"""The generation app: its periodic tasks, and the engine configured from the settings."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate

from generation.engine.config import EngineConfig, configure
from generation.engine.device import DeviceSettings
from sdplatform import metrics

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


def engine_config() -> EngineConfig:
    """The engine's knobs from the settings, with its cache events counted as metrics."""
    counters = {
        "hit": metrics.CACHE_HITS,
        "load": metrics.CACHE_LOADS,
        "eviction": metrics.CACHE_EVICTIONS,
    }

    def count(event: str, model_id: str) -> None:
        counters[event].labels(model=model_id).inc()

    return EngineConfig(
        cache_size=settings.PICTOR_PIPELINE_CACHE_SIZE,
        cache_bytes=settings.PICTOR_PIPELINE_CACHE_BYTES,
        torch_threads=settings.PICTOR_TORCH_THREADS,
        device=DeviceSettings(
            device=settings.PICTOR_DEVICE,
            dtype=settings.PICTOR_DTYPE,
            attention=settings.PICTOR_ATTENTION,
            channels_last=settings.PICTOR_CHANNELS_LAST,
            vae_tiling_side=settings.PICTOR_VAE_TILING_SIDE,
            vae_slicing=settings.PICTOR_VAE_SLICING,
            cpu_offload=settings.PICTOR_CPU_OFFLOAD,
            compile=settings.PICTOR_COMPILE,
            torch_threads=settings.PICTOR_TORCH_THREADS,
            workers=settings.PICTOR_WORKERS,
        ),
        on_cache_event=count,
    )


def configure_engine() -> None:
    """Hand the engine its configuration: it reads no environment or settings itself."""
    configure(engine_config())


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        # Registers the OpenAPI description of API key authentication.
        from generation.api import schema  # noqa: F401
        from generation.tasks import warm_worker

        # Every process (web, worker, management command) configures the engine it may run.
        configure_engine()
        post_migrate.connect(ensure_schedules, sender=self)
        post_spawn.connect(warm_worker, dispatch_uid="pictor-warm-worker")
