"""Pictor's own processes for tests: manage.py commands, gunicorn, waiting for them, stopping them.

Shared by the unit tests that start a real server and by the integration stacks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> str:
    """Run `manage.py args` with `env` and return its output; the test fails if it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def python_json(code: str, env: dict[str, str], timeout: float = 240) -> Any:
    """Run `python -c code` with `env` and return the JSON on the last line it printed."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    """Start `python args` in its own process group, its output appended to `log`."""
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it open for its lifetime
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
    )


def spawn_web(env: dict[str, str], log: Path) -> subprocess.Popen:
    """gunicorn with Pictor's configuration: its address, processes and threads come from `env`."""
    return spawn(env, log, "-m", "gunicorn", "-c", "python:sdplatform.gunicorn", "sdplatform.wsgi")


def wait_until(
    check: Callable[[], object],
    bound: float,
    what: str,
    process: subprocess.Popen | None = None,
    logs: Callable[[], str] | None = None,
) -> None:
    """Poll `check` until it is true; fail the test after `bound` s or once `process` exits."""
    deadline = time.monotonic() + bound
    error: Exception | None = None
    tail = (lambda: ":\n" + logs()) if logs is not None else (lambda: "")
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what} exited{tail()}")
        try:
            if check():
                return
        except Exception as exc:
            # Not listening yet, or a first answer slow on a busy machine: ask again.
            error = exc
        time.sleep(0.2)
    pytest.fail(f"{what} not ready after {bound}s ({error}){tail()}")


def wait_for_web(url: str, process: subprocess.Popen, log: Path, bound: float = 60) -> None:
    """Wait until a GET of `url` answers 200; fail with `log` if the server exits or never does."""
    wait_until(
        lambda: requests.get(url, timeout=2).status_code == 200,
        bound=bound,
        what=f"the web server ({url})",
        process=process,
        logs=log.read_text,
    )


def stop(processes: Iterable[subprocess.Popen], grace: float = 5) -> None:
    """SIGTERM each process group (a server and its workers), SIGKILL what outlives `grace`."""
    processes = list(processes)
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
