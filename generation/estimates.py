"""How long jobs will take: a job's ETA and the queue's load, from recent generation times.

Read by every format that reports progress or load (ModelsLab's eta and system_load, AUTOMATIC1111's
progress), so it depends on the job table only.
"""

from __future__ import annotations

import statistics

from django.db.models import Q

from generation.models import Job

# Seconds of generation per image-step at 512x512 when nothing has been measured yet.
DEFAULT_SECONDS_PER_STEP = 0.05


def _work_units(params: dict) -> float:
    """Image-steps at 512x512 that a request asks for (smaller images count as one)."""
    scale = max(1.0, params["width"] * params["height"] / (512 * 512))
    return scale * params["samples"] * params["steps"]


def seconds_per_unit() -> float:
    """Recent generation seconds per 512x512 image-step, from the last successful jobs."""
    recent = Job.objects.filter(status=Job.Status.SUCCESS, generation_time__isnull=False)
    rates = [
        generation_time / _work_units(params)
        for generation_time, params in recent.order_by("-finished_at").values_list(
            "generation_time", "params"
        )[:50]
        if generation_time is not None  # never, given the filter; says so to mypy
    ]
    # The median, so one cold start (a model load inside generation_time) does not skew it.
    return statistics.median(rates) if rates else DEFAULT_SECONDS_PER_STEP


def estimate_seconds(job: Job, per_unit: float) -> float:
    """Seconds of generation this job still needs."""
    units = _work_units(job.params)
    if job.status == Job.Status.PROCESSING and job.progress_total:
        units *= max(job.progress_total - job.progress_step, 0) / job.progress_total
    return units * per_unit


def eta(job: Job) -> float:
    """Seconds until this job should be done: the jobs ahead of it, then itself."""
    if job.is_finished:
        return 0.0
    per_unit = seconds_per_unit()
    ahead = 0.0
    if job.status == Job.Status.QUEUED:
        before = Job.objects.waiting().filter(
            Q(status=Job.Status.PROCESSING)
            | Q(priority__gt=job.priority)
            | Q(priority=job.priority, created_at__lt=job.created_at)
        )
        ahead = sum(estimate_seconds(j, per_unit) for j in before[:200])
    return round(ahead + estimate_seconds(job, per_unit), 2)


def system_load() -> dict[str, object]:
    """Queue length and the time a new job would wait, for /system_load."""
    waiting = list(Job.objects.waiting()[:500])
    per_unit = seconds_per_unit()
    return {
        "status": "ok",
        "queue_num": len(waiting),
        "queue_time": round(sum(estimate_seconds(j, per_unit) for j in waiting), 2),
    }
