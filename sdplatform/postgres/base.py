"""Django's PostgreSQL backend, with a kept connection checked without a round trip.

Under gunicorn and in the worker each thread keeps its connection (CONN_MAX_AGE), and Django's
health check sends `SELECT 1` before the first query of every request to make sure a restarted
database did not leave it dead. That was a third of a poll's round trips. A server that ends a
session (a restart, `pg_terminate_backend`, `idle_session_timeout`) says so on the socket, with an
error message and then end of file; between requests nothing else should be waiting there. So a
connection whose socket has nothing to read is used as it is, and only one with something
waiting gets Django's `SELECT 1`, which reads it: a notice or a changed setting leaves the
connection in use, a closed session has it replaced before the request's first query.
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base


def has_input(fileno: int) -> bool:
    """Whether the socket has bytes (or the end of the stream) waiting to be read, right now."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        """Django's check (a `SELECT 1`), only where the socket says the server may have gone."""
        if self.quiet():
            self.health_check_done = True
        super().close_if_health_check_failed()

    def quiet(self) -> bool:
        """Whether the kept connection is open with nothing waiting to be read on its socket."""
        if self.connection is None or self.connection.closed:
            return False
        try:
            return not has_input(self.connection.fileno())
        except psycopg.OperationalError:  # libpq has no socket for it any more
            return False
