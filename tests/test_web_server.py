"""gunicorn's configuration: threads, the address from the environment, a long enough grace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest

from sdplatform.wsgi import application

ROOT = Path(__file__).resolve().parent.parent


def gunicorn_config(**env: str) -> dict:
    """The settings module gunicorn loads, read in a fresh interpreter with `env`."""
    code = (
        "import json, sdplatform.gunicorn as g; print(json.dumps({k: getattr(g, k) for k in "
        "('bind', 'worker_class', 'workers', 'threads', 'graceful_timeout', "
        "'control_socket_disable')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_the_web_tier_serves_with_threads_on_the_configured_address():
    config = gunicorn_config(PICTOR_BIND="0.0.0.0:9000", WEB_CONCURRENCY="3")
    assert config["bind"] == ["0.0.0.0:9000"]
    assert (config["worker_class"], config["workers"]) == ("gthread", 3)
    assert config["threads"] >= 4
    assert config["control_socket_disable"] is True


def test_a_graceful_stop_outlasts_the_longest_blocking_wait():
    """A blocking request in flight at SIGTERM gets its answer (or its refund) before a kill."""
    assert gunicorn_config(PICTOR_BLOCKING_WAIT="300")["graceful_timeout"] > 300
    assert gunicorn_config(PICTOR_BLOCKING_WAIT="900")["graceful_timeout"] > 900


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "status"), [("/accounts/login/", 200), ("/sd/demo-sd15", 401)])
def test_a_head_answer_has_headers_and_no_body(path, status):
    """What gunicorn sends as it is (it drops a HEAD body with a warning); the test client
    would strip the body itself, so the WSGI application is called directly."""
    environ: dict = {"REQUEST_METHOD": "HEAD", "PATH_INFO": path}
    setup_testing_defaults(environ)
    started: list = []
    body = b"".join(application(environ, lambda s, headers: started.append((s, headers))))
    ((line, headers),) = started
    assert int(line.split()[0]) == status
    assert body == b""
    assert int(dict(headers)["Content-Length"]) > 0
