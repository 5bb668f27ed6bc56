"""Run this host's job workers: a django-q2 cluster, the queue sweep, and a clean stop.

The parent process starts django-q2's sentinel (which forks the worker processes) in a process
group of its own, so a SIGTERM or Ctrl-C sent to the parent's whole group reaches the parent
alone, and the parent coordinates the stop:

1. it asks every worker process to stop claiming (`generation.stopping`), and the sentinel to
   stop pulling tasks; tasks taken in advance go back to the broker (tasks.run_next_job);
2. a running job finishes, or after PICTOR_WORKER_STOP_GRACE is handed back to the queue;
3. the cluster exits, and so does this command. Past the grace and a margin it kills what is
   left, so a stop never hangs: the job's lease then expires and another worker runs it.

Between signals it runs the sweep every PICTOR_SWEEP_INTERVAL (tasks.sweep), at most once per
interval across all worker hosts. With PICTOR_METRICS_PORT set it also serves the metrics its
worker processes count, for a host that runs no web server.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from typing import Any

from django import db
from django.conf import settings
from django.core.cache import cache
from django.core.management.base import BaseCommand

from generation import stopping
from sdplatform import metrics

log = logging.getLogger("generation.worker")

# How long past the grace a stopping cluster may take to exit before it is killed.
STOP_MARGIN = 30.0
# Seconds a worker process keeps its database connection between jobs, as gunicorn's threads do
# between requests (sdplatform/gunicorn.py).
KEPT_CONNECTION_SECONDS = 300
SWEEP_LOCK = "pictor:sweep"


def set_in_background(event: Any) -> None:
    """Set a multiprocessing Event without ever blocking the caller.

    Event.set() waits until every process sleeping in its wait() has woken. django-q2's sentinel
    sleeps there, and dies at once on a SIGTERM of its own (as every process gets from `pkill` or
    systemd's KillMode=control-group): it never wakes, and set() would block this loop for good.
    A daemon thread takes that wait instead; the loop sees the sentinel gone and exits.
    """
    threading.Thread(target=event.set, name="pictor-stop-cluster", daemon=True).start()


def keep_connections() -> None:
    """Let every worker process keep its database connection from one job to the next.

    A worker process runs task after task, and django-q2 closes its connections around each one
    unless CONN_MAX_AGE keeps them; the default, 0, suits runserver's thread per request and
    here made every job open a new PostgreSQL connection before it could be claimed (about half
    of a job's pickup). A kept connection is checked before reuse (conn_health_checks), so a
    restarted database costs one failed check, not a job. DB_CONN_MAX_AGE in the environment
    still decides, 0 included.
    """
    if "DB_CONN_MAX_AGE" in os.environ:
        return
    for alias in db.connections:
        db.connections[alias].settings_dict["CONN_MAX_AGE"] = KEPT_CONNECTION_SECONDS


def run_sentinel(stop_event: Any, start_event: Any, cluster_id: uuid.UUID) -> None:
    """The sentinel process: django-q2's, in its own process group."""
    os.setpgid(0, 0)
    from django_q.cluster import Sentinel

    Sentinel(stop_event, start_event, cluster_id)


class Command(BaseCommand):
    help = "Run the job workers of this host (django-q2) with the queue sweep and a clean stop."

    def handle(self, *args: object, **options: object) -> None:
        from django_q.cluster import get_mp_context

        stopping.install()
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)

        metrics.remove_files_of_dead_processes()
        context = get_mp_context()
        stop_event, start_event = context.Event(), context.Event()
        sentinel = context.Process(
            target=run_sentinel,
            args=(stop_event, start_event, uuid.uuid4()),
            name="pictor-sentinel",
        )
        keep_connections()
        # Forked children must not share this process's database connections.
        db.connections.close_all()
        sentinel.start()
        log.info("worker host started: %s worker process(es)", settings.Q_CLUSTER["workers"])
        if settings.PICTOR_METRICS_PORT:
            # After the fork, so the children hold neither the thread nor the socket. A port in
            # use must not stop the workers, which are running by now.
            try:
                metrics.serve(settings.PICTOR_METRICS_PORT)
            except OSError:
                log.exception("cannot serve metrics on port %s", settings.PICTOR_METRICS_PORT)

        next_sweep = 0.0
        deadline = None
        while sentinel.is_alive():
            if stopping.requested():
                if deadline is None:
                    log.info("stopping: no new jobs; the running job finishes or is handed back")
                    set_in_background(stop_event)
                    deadline = time.monotonic() + settings.PICTOR_WORKER_STOP_GRACE + STOP_MARGIN
                elif time.monotonic() > deadline:
                    log.error("the cluster did not stop in time; killing it")
                    os.killpg(sentinel.pid, signal.SIGKILL)
            elif start_event.is_set() and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + settings.PICTOR_SWEEP_INTERVAL
                self.sweep()
            sentinel.join(timeout=0.2)
        log.info("worker host stopped")

    def on_signal(self, signum: int, frame: object) -> None:
        stopping.request()

    def sweep(self) -> None:
        """Run tasks.sweep unless another host did within this interval; never fails the loop."""
        from generation.tasks import sweep

        db.close_old_connections()
        try:
            lock_seconds = max(int(settings.PICTOR_SWEEP_INTERVAL * 0.8), 1)
            if cache.add(SWEEP_LOCK, os.getpid(), timeout=lock_seconds):
                sweep()
        except Exception:
            log.exception("the queue sweep failed; retrying next interval")
        finally:
            db.close_old_connections()
