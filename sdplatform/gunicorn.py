"""gunicorn settings for Pictor's web tier, from the environment like every other setting.

    gunicorn -c python:sdplatform.gunicorn sdplatform.wsgi

Threads, because a request of a blocking format (Synapse, Hyperbolic, AUTOMATIC1111) waits for
its image while holding a thread, not a CPU. On SIGTERM gunicorn stops accepting and lets the
requests in flight finish for `graceful_timeout`, which outlasts the longest blocking wait: such
a request either gets its image, or times out and has its job canceled and refunded
(generation/submission.py), before the process may be killed. So a stop never leaves a job
charged with nobody to answer.
"""

from __future__ import annotations

import os
from typing import Any

# A gthread thread serves request after request for its process's lifetime, so each keeps its
# database connection (checked before reuse) instead of opening one per request, the default
# that suits runserver's thread per request. Set before the settings read it; DB_CONN_MAX_AGE=0
# in the environment still turns it off.
os.environ.setdefault("DB_CONN_MAX_AGE", "300")

# Imported first: it puts PROMETHEUS_MULTIPROC_DIR in the environment every process inherits.
from sdplatform import settings as pictor  # noqa: E402 - after the default above
from sdplatform.env import envint, envstr

bind = [envstr("PICTOR_BIND", "127.0.0.1:8000")]
worker_class = "gthread"
workers = envint("WEB_CONCURRENCY", 2)
threads = envint("PICTOR_WEB_THREADS", 8)
# Seconds past the longest blocking wait: time to encode and send the images it waited for.
GRACE_MARGIN = 30
graceful_timeout = int(pictor.PICTOR_BLOCKING_WAIT) + GRACE_MARGIN
# A worker whose main loop stops answering for this long is restarted (requests run in threads,
# so a long blocking request does not count).
timeout = 60
keepalive = 5
# No control socket: its default path is per user, shared by every gunicorn on the machine.
control_socket_disable = True
# Logs go through Django's LOGGING (plain or JSON); gunicorn's own lines go to stderr.
errorlog = "-"


def on_starting(server: Any) -> None:
    """Clear out the metric files of processes gone since an earlier run."""
    from sdplatform.metrics import remove_files_of_dead_processes

    remove_files_of_dead_processes()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared metrics folder."""
    from sdplatform.metrics import mark_process_dead

    mark_process_dead(worker.pid)
