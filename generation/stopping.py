"""A worker host's stop request, shared by its parent process and every worker process.

`manage.py worker` calls `install()` before it forks the django-q2 cluster, so each worker
process inherits the same shared memory: when the parent gets SIGTERM it calls `request()`,
and the workers stop claiming jobs and decide what to do with the one they run (tasks.py).
Outside that command (tests, `qcluster`, sync mode) nothing is installed and no stop is seen.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time

# Seconds since the epoch when the stop was asked for, 0.0 until then. Unlocked shared memory:
# a signal handler writes it once, and a lock held by the interrupted code would deadlock it.
_requested_at: ctypes.c_double | None = None


def install() -> None:
    """Create the shared flag; call in the parent before any worker process is forked."""
    global _requested_at
    _requested_at = multiprocessing.get_context("fork").RawValue(ctypes.c_double, 0.0)


def request() -> None:
    """Ask every worker of this host to stop (first call wins; safe in a signal handler)."""
    if _requested_at is not None and not _requested_at.value:
        _requested_at.value = time.time()


def requested() -> bool:
    return bool(_requested_at is not None and _requested_at.value)


def seconds_since_request() -> float:
    """How long ago the stop was asked for; 0 when it was not."""
    # requested()'s own test, spelled out so mypy sees the flag is installed.
    if _requested_at is None or not _requested_at.value:
        return 0.0
    return max(time.time() - _requested_at.value, 0.0)
