"""Workers report that they are alive and which models they hold, for the ops dashboard."""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django.db.models import F
from django.utils import timezone

from generation.engine.cache import default_cache
from generation.engine.device import DeviceUnavailable
from generation.models import WorkerHeartbeat

log = logging.getLogger(__name__)

BEAT_SECONDS = 15
# A worker that has not beaten for this long is shown as gone.
ALIVE_SECONDS = 4 * BEAT_SECONDS


def engine_device() -> dict[str, Any]:
    """The worker's device settings as they act on this host (for the heartbeat and /ops/).

    Loads torch. A device the host lacks (PICTOR_DEVICE=cuda without a GPU) is a configuration
    error: the worker stops at start-up rather than run every job somewhere else.
    """
    from generation.engine.loader import resolved_device

    try:
        return resolved_device().describe()
    except DeviceUnavailable as error:
        raise ImproperlyConfigured(str(error)) from None


_started = threading.Event()


def beat(name: str, *, job_done: bool = False, current_job: int | None = None) -> None:
    """Write this worker's row: now, its cached models, and (optionally) a finished job."""
    fields = {
        "last_seen": timezone.now(),
        "models_loaded": default_cache.model_ids(),
        "cache_bytes": default_cache.bytes_used(),
        "current_job": current_job,
        "engine": engine_device(),
    }
    if job_done:
        fields["jobs_done"] = F("jobs_done") + 1
    if not WorkerHeartbeat.objects.filter(name=name).update(**fields):
        fields["jobs_done"] = int(job_done)
        WorkerHeartbeat.objects.update_or_create(name=name, defaults=fields)


def start(name: str) -> None:
    """Beat every BEAT_SECONDS from a daemon thread for as long as the process lives."""
    if _started.is_set():
        return
    _started.set()
    WorkerHeartbeat.objects.update_or_create(
        name=name,
        defaults={"started_at": timezone.now(), "jobs_done": 0, "engine": engine_device()},
    )

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(BEAT_SECONDS):
            try:
                beat(name)
            except Exception:
                log.exception("worker heartbeat failed")
            finally:
                close_old_connections()

    threading.Thread(target=loop, name="pictor-heartbeat", daemon=True).start()
