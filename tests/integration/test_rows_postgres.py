"""The hand-written key, poll and model lookups on PostgreSQL, whose driver converts values."""

from __future__ import annotations

import pytest

from tests.integration.conftest import migrated_database
from tests.processes import python_json
from tests.test_rows import check

pytestmark = pytest.mark.integration

RUN = """
import json, django
django.setup()
from tests.test_rows import lookups_against_the_orm
print(json.dumps(lookups_against_the_orm(), default=str))
"""


def test_the_fixed_lookups_load_what_the_orm_loads_on_postgresql(tmp_path):
    with migrated_database(tmp_path) as env:
        check(python_json(RUN, env))
