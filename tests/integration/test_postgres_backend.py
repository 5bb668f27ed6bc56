"""A kept PostgreSQL connection is checked on its socket, not with a query (sdplatform/postgres).

Each case runs in a subprocess with DB_CONN_MAX_AGE set, as gunicorn and the worker run, and
calls what Django does around a request: `close_old_connections()` when it starts (and ends), then
the check before its first query. A second connection watches the first one's backend in
`pg_stat_activity`, whose `query` is the last statement the server received from it.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import PG_URL, create_database, drop_database
from tests.processes import python_json

pytestmark = pytest.mark.integration

RUN = """
import json, time, django
django.setup()
import psycopg
from django.db import close_old_connections, connection
from sdplatform.postgres.base import has_input

def pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]

def new_request():
    close_old_connections()
    connection.close_if_health_check_failed()

def seen(backend):
    return watcher.execute(
        "SELECT query FROM pg_stat_activity WHERE pid = %s", [backend]
    ).fetchone()

def wait_for_input():
    deadline = time.monotonic() + 10
    while not has_input(connection.connection.fileno()) and time.monotonic() < deadline:
        time.sleep(0.01)

watcher = psycopg.connect("{url}", autocommit=True)
first = pid()
new_request()
quiet = {{"last_query": seen(first)[0], "pid": pid()}}

if "{case}" == "notified":
    with connection.cursor() as cursor:
        cursor.execute("LISTEN pictor_check")
    watcher.execute("NOTIFY pictor_check")
    wait_for_input()
    new_request()
    after = {{"last_query": seen(first)[0], "pid": pid()}}
else:
    watcher.execute("SELECT pg_terminate_backend(%s)", [first])
    wait_for_input()
    new_request()
    after = {{"pid": pid(), "old_backend": seen(first)}}
print(json.dumps({{"first": first, "quiet": quiet, "after": after}}))
"""


def run(case: str) -> dict:
    name = create_database()
    url = f"{PG_URL}/{name}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "DATABASE_URL": url,
        "DB_CONN_MAX_AGE": "300",
    }
    env.pop("REDIS_URL", None)
    try:
        return python_json(RUN.format(url=url, case=case), env)
    finally:
        drop_database(name)


def test_a_quiet_kept_connection_is_reused_without_a_query():
    result = run("terminated")
    # The check before the request's first query sent nothing: the server's last statement from
    # that backend is still the one before it (Django's own check would have sent SELECT 1).
    assert result["quiet"] == {"last_query": "SELECT pg_backend_pid()", "pid": result["first"]}


def test_a_connection_the_server_ended_is_replaced_before_the_request_uses_it():
    result = run("terminated")
    after = result["after"]
    # A new session answered the request's query, and the ended one is gone from the server.
    assert after["pid"] != result["first"]
    assert after["old_backend"] is None


def test_something_waiting_on_a_live_connection_gets_the_query_check_and_keeps_it():
    result = run("notified")
    # A notification was waiting: the check asked the server, which answered, so the
    # connection stayed (the same backend), not replaced.
    assert result["after"] == {"last_query": "SELECT 1", "pid": result["first"]}
