"""Prometheus metrics: what every web and worker process counts (/metrics: metrics_view.py).

Web processes (gunicorn) and job workers (django-q2) are separate processes, so prometheus_client
runs in multiprocess mode: each process writes its counts to files in PROMETHEUS_MULTIPROC_DIR
(the settings export it before any metric exists), and a scrape adds up the files of every
process of the host. Two gauges are read from the database at scrape time instead, since they
describe the whole cluster: the queue depth by priority and the live workers.

Every metric has labels, so none writes a file before it is first counted: the test suite
moves the folder after the settings are loaded (tests/conftest.py).

Each event is counted at the one place it happens, once its transaction has committed.
"""

from __future__ import annotations

import glob
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

JOBS_SUBMITTED = Counter("pictor_jobs_submitted", "Jobs queued (and charged)", ["kind", "model"])
JOBS_FINISHED = Counter(
    "pictor_jobs_finished",
    "Jobs that reached a final state: success, failed or canceled",
    ["status", "kind", "model"],
)
QUEUE_WAIT = Histogram(
    "pictor_queue_wait_seconds",
    "From submission until a worker first started the job",
    ["priority"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
GENERATION = Histogram(
    "pictor_generation_seconds",
    "Running a successful job: loading, generating, storing its images",
    ["kind", "model"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
CACHE_HITS = Counter(
    "pictor_pipeline_cache_hits", "Models a worker found already loaded", ["model"]
)
CACHE_LOADS = Counter("pictor_pipeline_cache_loads", "Models a worker loaded", ["model"])
CACHE_EVICTIONS = Counter(
    "pictor_pipeline_cache_evictions", "Models a worker dropped to make room", ["model"]
)
WEBHOOK_ATTEMPTS = Counter(
    "pictor_webhook_attempts",
    "Webhook attempts by outcome: delivered, retry (another attempt follows) or failed",
    ["outcome"],
)
CREDITS_DEBITED = Counter("pictor_credits_debited", "Credits charged for jobs", ["plan"])
CREDITS_REFUNDED = Counter(
    "pictor_credits_refunded", "Credits given back for failed or canceled jobs", ["plan"]
)
HTTP_REQUESTS = Counter(
    "pictor_http_requests", "HTTP responses by URL pattern and status", ["route", "status"]
)


def route_of(request: HttpRequest) -> str:
    """The URL pattern that answered the request, never its path (which has ids in it)."""
    match = request.resolver_match
    if match is not None:
        return "/" + match.route
    if request.path.startswith(settings.STATIC_URL):
        return "(static)"
    return "(unmatched)"


class RequestMetricsMiddleware:
    """Counts every response by route and status."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        HTTP_REQUESTS.labels(route=route_of(request), status=str(response.status_code)).inc()
        return response


def process_registry() -> CollectorRegistry:
    """What the processes of this host counted, added up from their files."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def bearer_token_ok(authorization: str) -> bool:
    """Whether an Authorization header carries PICTOR_METRICS_TOKEN (never when it is unset)."""
    token = settings.PICTOR_METRICS_TOKEN
    scheme, _, offered = authorization.partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered.strip().encode(), token.encode())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve this host's process metrics on `port` from a daemon thread, for worker-only hosts.

    Only with the bearer token. The cluster gauges are left to the web's /metrics.
    """
    metrics_app = make_wsgi_app(process_registry())

    def app(request: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # `request` is the WSGI environ: the request's headers, not the process's environment.
        if not bearer_token_ok(request.get("HTTP_AUTHORIZATION", "")):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [b"Unauthorized\n"]
        body: Iterable[bytes] = metrics_app(request, start_response)
        return body

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="pictor-metrics", daemon=True).start()
    log.info("serving metrics on %s:%s", addr, port)


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a process that exited (gunicorn's child_exit)."""
    multiprocess.mark_process_dead(pid, os.environ[DIR_ENV])


def remove_files_of_dead_processes() -> int:
    """Delete the metric files of processes that no longer run; returns how many.

    Run when a service starts (`manage.py worker`, gunicorn's on_starting), so the folder does
    not grow with every restart. Files of running processes stay, whichever service they
    belong to: the web and the workers of one host share the folder. Prometheus reads the
    dropped counts as a counter reset.
    """
    removed = 0
    for path in glob.glob(os.path.join(os.environ[DIR_ENV], "*.db")):
        pid = os.path.basename(path).removesuffix(".db").rpartition("_")[2]
        if not (pid.isascii() and pid.isdigit()) or _running(int(pid)):
            continue
        try:
            os.remove(path)
            removed += 1
        except FileNotFoundError:
            pass  # another service starting at the same time removed it
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
