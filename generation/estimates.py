"""How long jobs will take: a job's ETA and the queue's load, from recent generation times.

Read by every format that reports progress or load (ModelsLab's eta and system_load, AUTOMATIC1111's
progress), so it depends on the job table only.
"""

from __future__ import annotations

import functools
import statistics
import time
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Case, F, FloatField, Value, When
from django.db.models.expressions import CombinedExpression
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Greatest
from django.utils import timezone

from generation.models import Job
from sdplatform.rows import compiled, db_value, fixed_cursor

# Seconds of generation per image-step at 512x512 when nothing has been measured yet.
DEFAULT_SECONDS_PER_STEP = 0.05
# How long a process reuses the measured rate: every submit and poll of a waiting job asks for
# it, and it moves slowly (a median of the last 50 jobs).
RATE_CACHE_SECONDS = 5.0
_rate: tuple[float, float] = (0.0, DEFAULT_SECONDS_PER_STEP)  # (read at, seconds per unit)
# At most this many jobs ahead of a queued one are added up for its ETA.
AHEAD_BOUND = 200
# A job this young is "just submitted": its ETA may use the queue's sum read for another such
# job of its priority this recently (units_ahead). {priority: (read at, work units ahead)}
FRESH_SECONDS = 1.0
_fresh_ahead: dict[int, tuple[float, float]] = {}
# Where a Job instance keeps its last estimate: (status and progress, read at, seconds).
ETA_ATTRIBUTE = "_pictor_eta"
ETA_REUSE_SECONDS = 1.0


def _work_units(params: dict) -> float:
    """Image-steps at 512x512 that a request asks for (smaller images count as one)."""
    scale = max(1.0, params["width"] * params["height"] / (512 * 512))
    return scale * params["samples"] * params["steps"]


def seconds_per_unit() -> float:
    """Recent generation seconds per 512x512 image-step (read at most every few seconds)."""
    global _rate
    read_at, rate = _rate
    now = time.monotonic()
    if now - read_at > RATE_CACHE_SECONDS or not read_at:
        rate = measured_seconds_per_unit()
        _rate = (now, rate)
    return rate


def measured_seconds_per_unit() -> float:
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
    return _remaining(units, job.status, job.progress_step, job.progress_total) * per_unit


def _remaining(units: float, status: str, step: int, total: int) -> float:
    """The work units a job has left: all of them, or what its progress has not done yet."""
    if status == Job.Status.PROCESSING and total:
        units *= max(total - step, 0) / total
    return units


def _param(name: str) -> Cast:
    return Cast(KT(f"params__{name}"), FloatField())


def _units_left() -> CombinedExpression:
    """_work_units times what _remaining leaves, as SQL over a job's row."""
    pixels = _param("width") * _param("height") / Value(512.0 * 512.0)
    units = Greatest(Value(1.0), pixels) * _param("samples") * _param("steps")
    share_left = Case(
        When(
            status=Job.Status.PROCESSING,
            progress_total__gt=0,
            then=Greatest(F("progress_total") - F("progress_step"), Value(0))
            * Value(1.0)
            / F("progress_total"),
        ),
        default=Value(1.0),
        output_field=FloatField(),
    )
    return units * share_left


def eta(job: Job) -> float:
    """Seconds until this job should be done: the jobs ahead of it, then itself.

    An answer to a poll asks twice (its body's eta and its Retry-After): the instance keeps its
    estimate for ETA_REUSE_SECONDS while its state is the same, so the queue ahead of a waiting
    job is summed once per request, not twice.
    """
    if job.is_finished:
        return 0.0
    state = (job.status, job.progress_step, job.progress_total)
    now = time.monotonic()
    kept = job.__dict__.get(ETA_ATTRIBUTE)
    if kept is not None and kept[0] == state and now - kept[1] <= ETA_REUSE_SECONDS:
        return kept[2]
    per_unit = seconds_per_unit()
    ahead = per_unit * units_ahead(job) if job.status == Job.Status.QUEUED else 0.0
    found = round(ahead + estimate_seconds(job, per_unit), 2)
    job.__dict__[ETA_ATTRIBUTE] = (state, now, found)
    return found


def units_ahead(job: Job) -> float:
    """The work units of the waiting jobs a queued job comes after.

    For a job submitted just now that is the whole queue at its priority and above, the same
    sum for every submit of that moment: a process reuses it for FRESH_SECONDS (the answer to a
    submit is the hot path). An older job's position is summed for it alone.
    """
    now = time.monotonic()
    fresh = job.created_at >= timezone.now() - timedelta(seconds=FRESH_SECONDS)
    if fresh:
        read_at, units = _fresh_ahead.get(job.priority, (0.0, 0.0))
        if read_at and now - read_at <= FRESH_SECONDS:
            return units
    created_at = db_value(Job, "created_at", job.created_at)
    sql, units_params = units_ahead_query()
    ahead = [Job.Status.PROCESSING, job.priority, job.priority, created_at, AHEAD_BOUND]
    with fixed_cursor() as cursor:
        cursor.execute(sql, [*units_params, *Job.WAITING, *ahead])
        units = float(cursor.fetchone()[0] or 0.0)
    if fresh:
        _fresh_ahead[job.priority] = (now, units)
    return units


@functools.cache
def units_ahead_query() -> tuple[str, tuple[Any, ...]]:
    """What `units_ahead` runs, and the parameters of its work-units expression.

    A fixed statement, as the request path's lookups are (sdplatform/rows.py): the ORM built
    this sum anew on every poll of a waiting job, at several times the server's cost. The
    expression is still `_units_left()`, compiled once for this database (its JSON reads differ
    between PostgreSQL and SQLite); the jobs it adds up are those of

        Job.objects.waiting().filter(
            Q(status=PROCESSING) | Q(priority__gt=p) | Q(priority=p, created_at__lt=t)
        )[:AHEAD_BOUND]

    which tests/test_rows.py holds equal to this statement.
    """
    units_sql, units_params = compiled(Job, _units_left())
    table = connection.ops.quote_name(Job._meta.db_table)
    sql = (
        f"SELECT SUM(units) FROM (SELECT {units_sql} AS units FROM {table}"
        " WHERE status IN (%s, %s)"
        " AND (status = %s OR priority > %s OR (priority = %s AND created_at < %s))"
        " LIMIT %s) ahead"
    )
    return sql, units_params


def system_load() -> dict[str, object]:
    """Queue length and the time a new job would wait, for /system_load."""
    waiting = list(Job.objects.waiting()[:500])
    per_unit = seconds_per_unit()
    return {
        "status": "ok",
        "queue_num": len(waiting),
        "queue_time": round(sum(estimate_seconds(j, per_unit) for j in waiting), 2),
    }
