"""A real stack per test module: PostgreSQL, Redis broker, gunicorn, a worker, S3 (moto).

Locally a missing service skips these tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.helpers import xdist_worker
from tests.processes import free_port, manage, spawn, spawn_web, stop, wait_for_web

PG_URL = os.environ.get("PICTOR_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("PICTOR_TEST_REDIS", "redis://127.0.0.1:6379")


def service_missing(what: str, error: Exception) -> None:
    message = f"{what} is not reachable: {error}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def s3_client(endpoint: str):
    """A boto3 client for the moto S3 server at `endpoint` (moto takes any credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def create_bucket(endpoint: str) -> str:
    name = f"pictor-{uuid.uuid4().hex[:10]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def create_database() -> str:
    import psycopg

    name = f"pictor_it_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        service_missing("PostgreSQL", exc)
    return name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def migrated_database(tmp: Path, **env: str | None) -> Iterator[dict[str, str]]:
    """A fresh, migrated PostgreSQL database, dropped afterwards: the environment that uses it.

    Without Redis (the ORM broker and the database cache); `env` adds variables, None removes one.
    """
    name = create_database()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "DATABASE_URL": f"{PG_URL}/{name}",
        "PICTOR_VAR_DIR": str(tmp / "var"),
        "PYTHONUNBUFFERED": "1",
        "REDIS_URL": None,
        **env,
    }
    environment = {key: value for key, value in environment.items() if value is not None}
    try:
        manage(environment, "migrate", "--noinput", "-v", "0")
        manage(environment, "createcachetable")
        yield environment
    finally:
        drop_database(name)


def redis_db() -> str:
    """A Redis database (1-12) of this pytest process's own, emptied: runs side by side and the
    pytest-xdist workers of one run each get another. 13-15 are the benches' (bench/), which
    empty them too; 0 is for tests that keep to a key prefix of their own."""
    import redis

    worker, workers = xdist_worker()
    if 1 < workers <= 12:
        # The workers share their run's parent process: one block of databases per run.
        index = os.getppid() % (12 // workers) * workers + worker
    else:
        index = os.getpid() % 12
    url = f"{REDIS_URL}/{index + 1}"
    try:
        redis.Redis.from_url(url, socket_timeout=5).flushdb()
    except redis.RedisError as exc:
        service_missing("Redis", exc)
    return url


@dataclass
class Stack:
    """A running Pictor: base URL, an API key, and its processes."""

    base_url: str
    key: str
    env: dict[str, str]
    bucket: str
    s3_endpoint: str
    database: str
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def post(self, path: str, body: dict, timeout: float = 60) -> requests.Response:
        return requests.post(self.base_url + path, json={"key": self.key, **body}, timeout=timeout)

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def s3(self):
        return s3_client(self.s3_endpoint)

    def sql(self, query: str, *params: object) -> tuple | None:
        """One row straight from the stack's database (much faster than `manage.py shell`)."""
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            return conn.execute(query, params).fetchone()

    def start_worker(self) -> subprocess.Popen:
        self.processes["worker"] = spawn(self.env, self.logs / "worker.log", "manage.py", "worker")
        return self.processes["worker"]

    def stop(self) -> None:
        stop(self.processes.values(), grace=3)


def start_stack(tmp: Path, models_dir: Path, s3_endpoint: str, **overrides: str) -> Stack:
    database = create_database()
    bucket = create_bucket(s3_endpoint)
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "DATABASE_URL": f"{PG_URL}/{database}",
        "REDIS_URL": redis_db(),
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": s3_endpoint,
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "S3_REGION": "us-east-1",
        "PICTOR_MODELS_DIR": str(models_dir),
        "PICTOR_VAR_DIR": str(tmp / "var"),
        "PICTOR_BASE_URL": f"http://127.0.0.1:{port}",
        "PICTOR_BIND": f"127.0.0.1:{port}",
        "PICTOR_WEB_THREADS": "4",
        "PICTOR_SWEEP_INTERVAL": "2",
        "PICTOR_SYNC_WAIT": "20",
        "PICTOR_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }
    env.pop("PICTOR_Q_SYNC", None)
    # The stack's processes add up their metrics in their own folder, under PICTOR_VAR_DIR.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "build_demo_models")
    key = manage(env, "apikey", "create", "--org", "it", "--plan", "premium").strip()
    stack = Stack(f"http://127.0.0.1:{port}", key, env, bucket, s3_endpoint, database, logs=tmp)
    stack.processes["web"] = spawn_web(env, tmp / "web.log")
    stack.start_worker()
    try:
        wait_for_web(stack.base_url + "/readyz", stack.processes["web"], tmp / "web.log")
    except pytest.fail.Exception:
        stack.stop()  # so its processes do not outlive the test
        raise
    return stack


@pytest.fixture
def make_stack(tmp_path: Path, models_dir: Path, s3_endpoint: str) -> Iterator:
    """Start a stack with extra environment; stopped and its database dropped afterwards."""
    stacks: list[Stack] = []

    def make(**overrides: str) -> Stack:
        stack = start_stack(tmp_path, models_dir, s3_endpoint, **overrides)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
        drop_database(stack.database)


def dump_logs(stack: Stack) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-5000:]}" for p in sorted(stack.logs.glob("*.log"))
    )
