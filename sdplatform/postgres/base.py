"""Django's PostgreSQL backend, with a kept connection checked without a round trip.

Under gunicorn and in the worker each thread keeps its connection (CONN_MAX_AGE), and Django's
health check sends `SELECT 1` before the first query of every request to make sure a restarted
database did not leave it dead. That was a third of a poll's round trips. A server that ends a
session (a restart, `pg_terminate_backend`, `idle_session_timeout`) says so on the socket, with an
error message and then end of file; between requests nothing else should be waiting there. So a
connection whose socket has nothing to read is used as it is, and only one with something
waiting gets Django's `SELECT 1`, which reads it: a notice or a changed setting leaves the
connection in use, a closed session has it replaced before the request's first query.

`prepared_cursor()` runs the fixed statements of the request path (sdplatform/rows.py) as
prepared statements: PostgreSQL parses and plans each once per connection instead of per request.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.backends.postgresql import base, operations
from django.db.backends.utils import CursorWrapper
from django.utils.asyncio import async_unsafe
from psycopg import errors, pq


def has_input(fileno: int) -> bool:
    """Whether the socket has bytes (or the end of the stream) waiting to be read, right now."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class PreparedCursor(psycopg.Cursor[Any]):
    """Parameters bound by the server, and each statement prepared on its first run."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> PreparedCursor:
        try:
            return super().execute(query, params, **{**kwargs, "prepare": True})
        except errors.FeatureNotSupported:
            # "cached plan must not change result type": a migration changed the type of a
            # column the statement reads, and PostgreSQL refuses the statement prepared before,
            # on this connection for good. Outside a transaction: forget them all (psycopg
            # clears its own list on DEALLOCATE ALL) and run it again, prepared anew. Inside
            # one, the transaction is lost anyway, and its rollback forgets them.
            if self.connection.info.transaction_status != pq.TransactionStatus.IDLE:
                raise
            super().execute("DEALLOCATE ALL")
            return super().execute(query, params, **{**kwargs, "prepare": True})


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str:
        """The statement with its values in, for the debug log and captured queries."""
        if isinstance(cursor, PreparedCursor):
            # Sent apart from its values, so psycopg keeps no such text: composed here for show.
            try:
                return str(self.compose_sql(sql, params))
            except errors.DataError:
                return sql
        return super().last_executed_query(cursor, sql, params)


# psycopg prepares nothing, not even on request, when its threshold is None (Django's default).
# Only a PreparedCursor asks: the ORM's cursors bind on the client and never prepare, so this
# count, which would prepare any other statement run that often, is never reached in practice.
PREPARE_THRESHOLD = 1_000_000


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if params.get("prepare_threshold") is None:
            params["prepare_threshold"] = PREPARE_THRESHOLD
        return params

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

    @async_unsafe
    def prepared_cursor(self) -> CursorWrapper:
        """A cursor, as `cursor()` gives, whose statements are prepared once per connection."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            # Any: django-stubs types these wrappers' argument as a wrapper, not a driver cursor.
            cursor: Any = PreparedCursor(self.connection)
        # What `cursor()` wraps its own in: the query log where queries are logged.
        return self.make_debug_cursor(cursor) if self.queries_logged else self.make_cursor(cursor)
