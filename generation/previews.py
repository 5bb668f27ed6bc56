"""A running job's live preview, kept in the cache (shared by web and workers), not the database.

The worker writes the latest preview every few steps and deletes it when the job ends; the
progress answers read it back. A preview is a nicety: a cache that is down costs the preview,
never the job or the answer.
"""

from __future__ import annotations

import base64
import logging

from django.conf import settings
from django.core.cache import cache

from generation.engine.preview import Previewer

log = logging.getLogger(__name__)


def key(job_id: int) -> str:
    return f"pictor:preview:{job_id}"


def previewer(job_id: int) -> Previewer | None:
    """What the engine hands this job's previews to, or None when previews are off."""
    if settings.PICTOR_PREVIEW_EVERY <= 0:
        return None
    return Previewer(
        lambda png: store(job_id, png),
        settings.PICTOR_PREVIEW_EVERY,
        settings.PICTOR_PREVIEW_DECODER,
    )


def store(job_id: int, png: bytes) -> None:
    """Keep `png` as the job's latest preview, for no longer than a job may run."""
    try:
        cache.set(key(job_id), base64.b64encode(png).decode(), settings.PICTOR_JOB_TIMEOUT)
    except Exception:
        log.warning("preview of job %s could not be stored", job_id, exc_info=True)


def latest(job_id: int) -> str | None:
    """The job's latest preview as base64 PNG, or None."""
    try:
        value = cache.get(key(job_id))
    except Exception:
        log.warning("preview of job %s could not be read", job_id, exc_info=True)
        return None
    return value if isinstance(value, str) else None


def clear(job_id: int) -> None:
    """Drop the job's preview: it has ended."""
    try:
        cache.delete(key(job_id))
    except Exception:
        log.warning("preview of job %s could not be deleted", job_id, exc_info=True)
