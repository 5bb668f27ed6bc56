"""A kept PostgreSQL connection is checked on its socket, not with a query (sdplatform/postgres).

Each case runs in a subprocess with DB_CONN_MAX_AGE set, as gunicorn and the worker run, and
calls what Django does around a request: `close_old_connections()` when it starts (and ends), then
the check before its first query. A second connection watches the first one's backend in
`pg_stat_activity`, whose `query` is the last statement the server received from it.
"""

from __future__ import annotations

import functools
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


def in_fresh_database(code: str, **env: str) -> dict:
    """Run `code` (a template given the database's `url`) on a new database, dropped after."""
    name = create_database()
    url = f"{PG_URL}/{name}"
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "DATABASE_URL": url,
        **env,
    }
    environment.pop("REDIS_URL", None)
    try:
        return python_json(code.format(url=url), environment)
    finally:
        drop_database(name)


@functools.cache  # two tests read the one run of a case
def run(case: str) -> dict:
    return in_fresh_database(RUN.replace("{case}", case), DB_CONN_MAX_AGE="300")


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


ALTERED = """
import json, django
django.setup()
import psycopg
from django.db import connection, transaction

def names():
    with connection.prepared_cursor() as cursor:
        cursor.execute("SELECT name FROM pictor_named WHERE id = %s", [1])
        return cursor.fetchone()[0]

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE pictor_named (id int PRIMARY KEY, name varchar(10))")
    cursor.execute("INSERT INTO pictor_named VALUES (1, 'first')")
before = [names(), names()]  # the second runs the prepared statement
with psycopg.connect("{url}", autocommit=True) as other:
    other.execute("ALTER TABLE pictor_named ALTER COLUMN name TYPE varchar(20)")
after = names()
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM pg_prepared_statements")
    prepared = cursor.fetchone()[0]
with psycopg.connect("{url}", autocommit=True) as other:
    other.execute("ALTER TABLE pictor_named ALTER COLUMN name TYPE varchar(30)")
try:
    with transaction.atomic():
        names()
    in_transaction = "answered"
except Exception as exc:
    in_transaction = type(exc).__name__
print(json.dumps({{
    "before": before, "after": after, "prepared": prepared,
    "in_transaction": in_transaction, "after_rollback": names(),
}}))
"""


def test_a_column_type_changed_under_a_prepared_statement_costs_no_failed_request():
    result = in_fresh_database(ALTERED)
    # A migration's ALTER ... TYPE makes PostgreSQL refuse the statement prepared before it, on
    # that connection for good; outside a transaction it is prepared again and answers.
    assert result["before"] == ["first", "first"]
    assert result["after"] == "first"
    assert result["prepared"] == 1
    # Inside a transaction the refusal aborts it (nothing to retry in), and the rollback clears
    # the prepared statements, so the next request's lookup answers.
    assert result["in_transaction"] == "NotSupportedError"
    assert result["after_rollback"] == "first"
