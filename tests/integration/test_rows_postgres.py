"""The hand-written key, poll, model, queue-count, daily-images and queue-ahead statements on
PostgreSQL, whose driver converts values."""

from __future__ import annotations

import pytest

from tests.integration.conftest import migrated_database
from tests.processes import python_json
from tests.test_rows import check

pytestmark = pytest.mark.integration

RUN = """
import json, django
django.setup()
from django.db import connection
from generation.estimates import units_ahead_query
from generation.quotas import count_submit_query
from tests.test_rows import lookups_against_the_orm
found = lookups_against_the_orm()
with connection.cursor() as cursor:
    cursor.execute("SELECT statement FROM pg_prepared_statements")
    prepared = sorted(row[0] for row in cursor.fetchall())
# Compiled for PostgreSQL: the ETA's JSON reads are not SQLite's, which this test's process may use.
compiled = [units_ahead_query()[0], count_submit_query()]
print(json.dumps({"found": found, "prepared": prepared, "compiled": compiled}, default=str))
"""


def test_the_fixed_lookups_load_what_the_orm_loads_on_postgresql(tmp_path):
    with migrated_database(tmp_path) as env:
        result = python_json(RUN, env)
    check(result["found"])
    # Each fixed statement was prepared on the connection (the model's in its two forms: by id
    # and the default), so PostgreSQL planned it once, not on every request.
    from accounts.models import live_key_query
    from billing.ledger import move_and_enter_query
    from generation.jobs import polled_job_query
    from generation.models import visible_model_query
    from generation.quotas import queued_jobs_query

    statements = [live_key_query()[3], polled_job_query()[3], queued_jobs_query()]
    # The ledger's entries: each organization made starts with its plan's grant.
    statements.append(move_and_enter_query())
    statements += result["compiled"]
    statements += [visible_model_query(column)[1] for column in ("model_id", "is_default")]
    numbered = [numbered_parameters(sql) for sql in statements]
    assert result["prepared"] == sorted(numbered)


def numbered_parameters(sql: str) -> str:
    """`sql` as psycopg sends it to be prepared: its `%s` numbered `$1`, `$2`..."""
    parts = sql.split("%s")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))
