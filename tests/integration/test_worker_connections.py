"""A worker process keeps its PostgreSQL connection from one job to the next.

django-q2 closes a worker's connections around each task unless CONN_MAX_AGE keeps them, and a
new connection before every claim was about half of a job's pickup. PostgreSQL counts the
sessions opened on a database (`pg_stat_database.sessions`): a warm worker running several jobs
should open none, while one told to connect per job (DB_CONN_MAX_AGE=0) opens at least one per
job in its worker process, and another in django-q2's monitor, which records each task.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import migrated_database, redis_db
from tests.processes import python_json, spawn, stop

pytestmark = pytest.mark.integration

JOBS = 4


RUN = "from tests.integration.test_worker_connections import run_jobs; run_jobs({})"


def run_jobs(count: int) -> None:
    """The subprocess: `count` jobs of one tenant, one after another, each waited for."""
    import json

    import django

    django.setup()
    from accounts.services import get_or_create_organization
    from generation import service
    from generation.engine.request import GenerationRequest
    from generation.models import AIModel

    org = get_or_create_organization("kept", "premium")
    model, _ = AIModel.objects.get_or_create(
        model_id="demo-sd15", defaults={"name": "demo-sd15", "path": "demo-sd15"}
    )
    statuses = []
    for index in range(count):
        req = GenerationRequest(
            prompt=f"job {index}", model_id="demo-sd15", width=64, height=64, steps=1
        )
        job = service.wait_for(service.submit(req, org, model), 120)
        statuses.append(job.status)
    print(json.dumps(statuses))


@pytest.fixture
def database(tmp_path: Path, models_dir: Path) -> Iterator[dict[str, str]]:
    with migrated_database(
        tmp_path,
        REDIS_URL=redis_db(),
        PICTOR_MODELS_DIR=str(models_dir),
        PICTOR_WORKERS="1",
        PICTOR_TORCH_THREADS="1",
        PICTOR_SYNC_WAIT="0",
        PICTOR_Q_SYNC=None,
    ) as env:
        yield env


@contextmanager
def warm_worker(env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    """A worker that has run one job (which loads the model), stopped on exit."""
    worker = spawn(env, tmp_path / "worker.log", "manage.py", "worker")
    try:
        assert python_json(RUN.format(1), env) == ["success"]
        yield
    finally:
        stop([worker])


def database_name(env: dict[str, str]) -> str:
    return env["DATABASE_URL"].rsplit("/", 1)[1]


def sessions_opened(env: dict[str, str], tmp_path: Path) -> int:
    """Sessions the worker opened on the database while it ran JOBS jobs, once warm."""
    name = database_name(env)
    count = "SELECT sessions FROM pg_stat_database WHERE datname = %s"
    with warm_worker(env, tmp_path), psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        before = conn.execute(count, [name]).fetchone()[0]
        assert python_json(RUN.format(JOBS), env) == ["success"] * JOBS
        # A closed session is counted as its backend exits, a moment after the client.
        time.sleep(1)
        after = conn.execute(count, [name]).fetchone()[0]
    # The subprocess that submitted the jobs opened one.
    return after - before - 1


def test_a_warm_worker_runs_jobs_on_the_connections_it_has(database, tmp_path):
    assert sessions_opened(database, tmp_path) <= 1


def test_db_conn_max_age_0_still_makes_it_connect_for_every_job(database, tmp_path):
    assert sessions_opened({**database, "DB_CONN_MAX_AGE": "0"}, tmp_path) >= JOBS


def test_a_kept_connection_the_database_dropped_costs_no_job(database, tmp_path):
    """A restart or failover ends every session: the next job finds its kept one dead.

    Every kept connection is checked before a task, the monitor or the sweep reuses it, so the
    worker opens a new one instead of failing on the dead one.
    """
    name = database_name(database)
    with warm_worker(database, tmp_path):
        with psycopg.connect(database["DATABASE_URL"], autocommit=True) as conn:
            dropped = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            ).fetchone()[0]
        assert dropped >= 1
        assert python_json(RUN.format(2), database) == ["success"] * 2
    # Without the check the jobs would still succeed, a sweep later: the first task, the
    # monitor's record of it and the sweep each fail on a dead connection first.
    errors = [
        line for line in (tmp_path / "worker.log").read_text().splitlines() if "ERROR" in line
    ]
    assert errors == []
