from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from tests.processes import python_json

pytestmark = pytest.mark.django_db

# /readyz while Redis, the broker and the cache, is down and everything else is up.
WITHOUT_REDIS = {
    "status": "error",
    "database": "ok",
    "broker": "down",
    "cache": "down",
    "storage": "ok",
}


def test_healthz_answers_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_broker_cache_and_storage(client, media_dir):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "cache": "ok",
        "storage": "ok",
    }


def test_readyz_reports_a_broken_storage(client, settings, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocker / "media")},
        },
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["storage"] == "down"


def test_readyz_names_a_dead_redis_and_answers_fast(client, media_dir, dead_redis):
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 3, "a dead Redis must fail fast, not hang the probe"
    assert response.status_code == 503
    assert response.json() == WITHOUT_REDIS
    # Liveness only needs the database.
    assert client.get("/healthz").status_code == 200


PROBE = (
    "import django, json, time; django.setup(); "
    "from django.test import Client; "
    "started = time.monotonic(); answer = Client().get('/readyz'); "
    "print(json.dumps([answer.status_code, answer.json(), time.monotonic() - started]))"
)


def test_readyz_fails_fast_on_a_redis_that_never_answers(tmp_path):
    """REDIS_URL at a Redis that accepts connections and never answers (hung, or stopped)."""
    with socket.socket() as silent:
        # The kernel completes the handshake for a listening socket; nothing ever replies.
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "S3_"))},
            "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
            "REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PICTOR_VAR_DIR": str(tmp_path / "var"),
            "MEDIA_ROOT": str(tmp_path / "media"),
        }
        try:
            status, body, seconds = python_json(PROBE, env, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("/readyz hung on a Redis that does not answer")
    assert status == 503
    assert body == WITHOUT_REDIS
    # PICTOR_REDIS_TIMEOUT (1 s) for the cache, one more second for the broker's reads.
    assert seconds < 6, f"/readyz took {seconds:.1f} s"
