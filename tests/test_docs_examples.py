"""The API docs' examples run as written against a live stack, as a reader runs them.

Each page of docs/api/ promises that its ```bash blocks work verbatim, in order, from a fresh
`make run`. So this starts what `make run` starts (gunicorn and one `manage.py worker`, on
SQLite with the database as broker and cache, the demo models registered, a key on the premium
plan), then runs each page's blocks in one `bash -euo pipefail` process with PICTOR and KEY set
and the repository root as the working directory. The blocks check their own answers (`jq -e`),
so a page whose answers drift from what it says fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port, manage, spawn, spawn_web, stop, wait_for_web

DOCS = ROOT / "docs" / "api"
PAGES = sorted(DOCS.glob("*.md"))
FORMAT_PAGES = {"README", "modelslab", "synapse", "hyperbolic", "dan", "a1111"}
# A fenced ```bash block is run. Answer samples are ```json or ```text and are not.
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# Every page starts with these, so it runs as written for a reader who has set KEY.
SETUP_LINES = (
    "export PICTOR=${PICTOR:-http://127.0.0.1:8000}",
    "export KEY=${KEY:?",
)
# Printed before each block, so a failure shows where the failing block starts.
MARKER = "=== docs block"
# Seconds one page may take. The worker runs the jobs one at a time; the ModelsLab page, the
# longest, makes ten images at the premium plan's fewest steps (21) and loads five models.
PAGE_LIMIT = 240
# Ids come from the previous answer, never written into a page: the reader's stack (and this
# test's, after the first page) has numbered other jobs before.
HARD_CODED_ID = re.compile(r"/fetch/\d|txt2img/\d|\"(request_id|taskId)\":\s*\"?\d")


@dataclass(frozen=True)
class Block:
    line: int  # where the block's fence is in its page, 1-based
    code: str


@dataclass(frozen=True)
class Stack:
    env: dict[str, str] = field(repr=False)  # what the pages run with, PICTOR and KEY too
    logs: Path


def bash_blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [
        Block(text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in BASH_BLOCK.finditer(text)
    ]


def script(page: Path, blocks: list[Block]) -> str:
    """One script of every block, each announced with where it comes from."""
    name = page.relative_to(ROOT)
    return "".join(f"echo '{MARKER} {name}:{block.line}'\n{block.code}\n" for block in blocks)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """What `make run` starts, on a free port."""
    if shutil.which("jq") is None:
        pytest.fail("jq is not installed, and the docs' examples use it: apt-get install jq")
    tmp = tmp_path_factory.mktemp("docs-stack")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "PICTOR_VAR_DIR": str(tmp / "var"),
        "PICTOR_MODELS_DIR": str(models_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "PICTOR_BIND": f"127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
    }
    # `make run`'s defaults: no database, broker, bucket or base URL configured, and the jobs
    # run in the worker, not inline.
    for name in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET", "PICTOR_Q_SYNC", "PICTOR_BASE_URL"):
        env.pop(name, None)
    (tmp / "metrics").mkdir()
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "createcachetable")
    manage(env, "build_demo_models")
    key = manage(env, "apikey", "create", "--org", "demo", "--plan", "premium").strip()
    web = spawn_web(env, tmp / "web.log")
    worker = spawn(env, tmp / "worker.log", "manage.py", "worker")
    try:
        wait_for_web(f"http://127.0.0.1:{port}/readyz", web, tmp / "web.log")
        page_env = {
            **env,
            "PICTOR": f"http://127.0.0.1:{port}",
            "KEY": key,
            # The pages' mktemp files go here, not into the machine's /tmp.
            "TMPDIR": str(tmp_path_factory.mktemp("docs-files")),
        }
        yield Stack(page_env, tmp)
    finally:
        stop([web, worker], grace=10)


def failure(page: Path, output: str, stack: Stack) -> str:
    """The failing block's code and output, then the end of the server's logs."""
    start = output.rfind(MARKER)
    shown = output[start:] if start >= 0 else output
    line = re.match(rf"{MARKER} \S+:(\d+)", shown)
    code = next((b.code for b in bash_blocks(page) if line and b.line == int(line[1])), "")
    logs = "\n".join(
        f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(stack.logs.glob("*.log"))
    )
    return f"block:\n{code}\noutput:\n{shown[-6000:]}\n{logs}"


def test_every_api_page_has_examples_that_start_from_make_run():
    assert {page.stem for page in PAGES} >= FORMAT_PAGES
    for page in PAGES:
        blocks = bash_blocks(page)
        assert blocks, f"{page.name} has no ```bash block"
        for setup in SETUP_LINES:
            assert setup in blocks[0].code, f"{page.name}'s first block lacks {setup}"
        for block in blocks:
            assert not HARD_CODED_ID.search(block.code), (page.name, block.line)


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_the_examples_of_the_page_run_as_written(page: Path, stack: Stack):
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script(page, bash_blocks(page))],
        cwd=ROOT,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a timeout ends its curl and sleep
    )
    try:
        output, _ = process.communicate(timeout=PAGE_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{page.name} ran past {PAGE_LIMIT} s; {failure(page, output, stack)}")
    assert process.returncode == 0, (
        f"{page.name} stopped with status {process.returncode}; {failure(page, output, stack)}"
    )
