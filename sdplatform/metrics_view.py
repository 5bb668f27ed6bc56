"""GET /metrics: this host's process counters plus two gauges of the whole cluster.

Apart from sdplatform/metrics.py because it reads the apps' models: the counters module is
imported by billing, generation and gunicorn's master process, and must import no app itself
(the import contracts in pyproject.toml hold billing apart from generation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from billing.models import Plan
from generation import heartbeat
from generation.models import Job, WorkerHeartbeat
from sdplatform.metrics import bearer_token_ok, process_registry

# The logger the collector always used, so its log lines keep their name.
log = logging.getLogger("sdplatform.metrics")


class ClusterCollector:
    """The queue depth by priority and the live workers, read from the database per scrape."""

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "pictor_queue_depth", "Jobs waiting for a worker, by priority", labels=["priority"]
        )
        alive_after = timezone.now() - timedelta(seconds=heartbeat.ALIVE_SECONDS)
        try:
            queued = dict(
                Job.objects.filter(status=Job.Status.QUEUED)
                .values_list("priority")
                .annotate(jobs=Count("pk"))
            )
            # Every plan's priority, so an empty queue reads 0 rather than no series at all.
            priorities = set(Plan.objects.values_list("priority", flat=True)) | set(queued)
            # A worker process beats every few seconds while it lives (generation/heartbeat.py).
            alive = WorkerHeartbeat.objects.filter(last_seen__gte=alive_after).count()
        except DatabaseError:
            log.exception("metrics: the database did not answer; queue and workers left out")
            return
        for priority in sorted(priorities):
            depth.add_metric([str(priority)], queued.get(priority, 0))
        yield depth
        yield GaugeMetricFamily(
            "pictor_live_workers", "Worker processes that sent a heartbeat recently", value=alive
        )


@require_GET
def scrape(request: HttpRequest) -> HttpResponse:
    """GET /metrics for Prometheus: the bearer token, or a staff session.

    Refused callers get a bare 401 (403 for a signed-in user who is not staff), never any figure.
    It is a plain Django view, so the API plans' throttles do not apply to scrapes.
    """
    if not bearer_token_ok(request.headers.get("Authorization", "")):
        user = request.user
        if not user.is_authenticated:
            response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if not user.is_staff:
            return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    registry = process_registry()
    registry.register(ClusterCollector())
    # The format Prometheus asks for (OpenMetrics or text), as prometheus_client's own server.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(registry), content_type=content_type)
