"""The ops dashboard (/ops/, staff only): queue, throughput, timings, failures, workers, usage."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from billing.limits import start_of_day
from billing.models import CreditEntry
from generation import heartbeat, quotas
from generation.models import Job, WorkerHeartbeat

WINDOW_MINUTES = 60
THROUGHPUT_MINUTES = 15
LATEST_FAILURES = 10
TOP_ORGANIZATIONS = 10
REFRESH_SECONDS = 10
CHART_WIDTH = 600
CHART_HEIGHT = 80


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A login page for strangers, 403 for members who are not staff."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("The ops dashboard is for staff.")
        return view(request, *args, **kwargs)

    return wrapper


def percentile(values: list[float], fraction: float) -> float | None:
    """The `fraction` quantile (0.5 = median) by linear interpolation; None without data."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(fraction * 100) - 1]


def queue_by_priority() -> list[Mapping[str, object]]:
    rows = (
        Job.objects.waiting()
        .values("priority")
        .annotate(
            queued=Count("pk", filter=Q(status=Job.Status.QUEUED)),
            processing=Count("pk", filter=Q(status=Job.Status.PROCESSING)),
        )
        .order_by("-priority")
    )
    return list(rows)


def throughput(now: Any) -> list[dict[str, Any]]:
    """Jobs finished in each of the last minutes, oldest first."""
    since = now - timedelta(minutes=THROUGHPUT_MINUTES)
    finished = Job.objects.filter(finished_at__gte=since).values_list("finished_at", flat=True)
    counts = [0] * THROUGHPUT_MINUTES
    for moment in finished:
        index = int((moment - since).total_seconds() // 60)
        counts[min(index, THROUGHPUT_MINUTES - 1)] += 1
    top = max(counts + [1])
    slot = CHART_WIDTH / THROUGHPUT_MINUTES
    bars = []
    for i, n in enumerate(counts):
        height = round(n / top * (CHART_HEIGHT - 14), 1)
        bars.append(
            {
                "minutes_ago": THROUGHPUT_MINUTES - i,
                "jobs": n,
                "x": round(i * slot + 1, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(slot - 2, 1),
                "height": height,
            }
        )
    return bars


def snapshot() -> dict[str, Any]:
    """Every figure of the dashboard, read now."""
    now = timezone.now()
    window = now - timedelta(minutes=WINDOW_MINUTES)
    recent = Job.objects.filter(finished_at__gte=window)
    times = [
        seconds
        for seconds in recent.filter(
            status=Job.Status.SUCCESS, generation_time__isnull=False
        ).values_list("generation_time", flat=True)
        if seconds is not None  # never, given the filter; says so to mypy
    ]
    finished = recent.count()
    failed = recent.filter(status=Job.Status.FAILED).count()
    per_minute = throughput(now)
    today = start_of_day(now)
    top = (
        quotas.counted(Job.objects.filter(created_at__gte=today))
        .values("organization__slug", "organization__plan__name")
        .annotate(
            images=quotas.images_sum(),
            credits=Sum("cost"),
            jobs=Count("pk"),
        )
        .order_by("-images")[:TOP_ORGANIZATIONS]
    )
    ledger_today = CreditEntry.objects.filter(created_at__gte=today)
    sold = ledger_today.filter(kind=CreditEntry.Kind.GRANT, key__startswith="stripe:")
    used = ledger_today.filter(kind__in=[CreditEntry.Kind.DEBIT, CreditEntry.Kind.REFUND])
    alive_after = now - timedelta(seconds=heartbeat.ALIVE_SECONDS)
    workers = [
        {"row": w, "alive": w.last_seen >= alive_after}
        for w in WorkerHeartbeat.objects.filter(last_seen__gte=now - timedelta(hours=1)).order_by(
            "name"
        )
    ]
    return {
        "now": now,
        "queue": queue_by_priority(),
        "queued_total": Job.objects.filter(status=Job.Status.QUEUED).count(),
        "processing_total": Job.objects.filter(status=Job.Status.PROCESSING).count(),
        "per_minute": per_minute,
        "jobs_per_minute": round(sum(r["jobs"] for r in per_minute) / THROUGHPUT_MINUTES, 2),
        "p50": percentile(times, 0.5),
        "p95": percentile(times, 0.95),
        "timed_jobs": len(times),
        "finished": finished,
        "failure_rate": round(failed / finished * 100, 1) if finished else None,
        "failures": Job.objects.filter(status=Job.Status.FAILED)
        .select_related("organization", "model")
        .order_by("-finished_at")[:LATEST_FAILURES],
        "workers": workers,
        "clusters": cluster_stats(),
        "top_organizations": list(top),
        "credits_sold": sold.aggregate(n=Sum("amount"))["n"] or 0,
        "credits_used": -(used.aggregate(n=Sum("amount"))["n"] or 0),
        "window_minutes": WINDOW_MINUTES,
    }


def cluster_stats() -> list[dict[str, Any]]:
    """django-q2's own view of its clusters (host, state, workers), when the broker has it."""
    try:
        from django_q.status import Stat

        stats = Stat.get_all()
    except Exception:  # the broker may not keep stats (or be unreachable): show none
        return []
    return [
        {
            "host": stat.host,
            "cluster_id": stat.cluster_id,
            "status": stat.status,
            "workers": len(stat.workers),
            "uptime": round(stat.uptime()),
        }
        for stat in stats
    ]


@staff_only
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "ops/dashboard.html", {**snapshot(), "refresh_seconds": REFRESH_SECONDS})
