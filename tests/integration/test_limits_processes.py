"""Limits that must hold across processes: gunicorn with 4 worker processes on PostgreSQL, the
shared counters once in the database (the default cache) and once in Redis; and 4 worker
processes claiming jobs at once under fair share."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import (
    PG_URL,
    create_database,
    drop_database,
    free_port,
    manage,
    redis_db,
    spawn,
)
from tests.processes import ROOT

pytestmark = pytest.mark.integration

RATE_LIMIT = 10
WEB_PROCESSES = 4

SETUP = """
from accounts.models import Organization
from billing.models import Plan
from generation.models import AIModel
Plan.objects.filter(slug="free").update(requests_per_minute={limit}, images_per_day=None)
AIModel.objects.create(model_id="demo-sd15", name="demo", path="demo-sd15", is_default=True)
"""


@dataclass
class Web:
    base_url: str
    env: dict[str, str]
    keys: dict[str, str]
    log: Path

    def post(self, path: str, key: str, **body: object) -> requests.Response:
        return requests.post(self.base_url + path, json={"key": key, **body}, timeout=30)


@pytest.fixture(scope="module", params=["database", "redis"])
def web(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """gunicorn with 4 processes on a fresh PostgreSQL database; no job worker runs."""
    tmp = tmp_path_factory.mktemp(f"web-{request.param}")
    database = create_database()
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "DATABASE_URL": f"{PG_URL}/{database}",
        "PICTOR_VAR_DIR": str(tmp / "var"),
        "PICTOR_MODELS_DIR": str(tmp / "models"),
        "PICTOR_SYNC_WAIT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("REDIS_URL", "PICTOR_Q_SYNC", "S3_BUCKET"):
        env.pop(name, None)
    if request.param == "redis":
        env["REDIS_URL"] = redis_db()
    web = None
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "createcachetable")
        keys = {
            slug: manage(env, "apikey", "create", "--org", slug, "--plan", plan).strip()
            for slug, plan in (("limited", "free"), ("spammer", "premium"))
        }
        manage(env, "shell", "-c", SETUP.format(limit=RATE_LIMIT))
        log = tmp / "web.log"
        process = spawn(
            env,
            log,
            "-m",
            "gunicorn",
            "sdplatform.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(WEB_PROCESSES),
            "--threads",
            "4",
        )
        web = Web(f"http://127.0.0.1:{port}", env, keys, log)
        wait_until_up(web, process)
        yield web
    finally:
        if web is not None:
            stop(process)
        drop_database(database)


def wait_until_up(web: Web, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(web.base_url + "/healthz", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            # Not listening yet, or its processes still booting (slow on a small machine).
            pass
        time.sleep(0.2)
    stop(process)
    pytest.fail("gunicorn did not start:\n" + web.log.read_text()[-5000:])


def stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def all_at_once(count: int, send) -> list[requests.Response]:
    """Send `count` requests from as many threads, released together."""
    barrier = threading.Barrier(count)

    def one(index: int) -> requests.Response:
        barrier.wait()
        return send(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def inside_one_minute() -> None:
    """Start at least 15 s before the clock's minute turns, so one window holds the burst."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.1)


def test_the_rate_limit_holds_across_four_processes(web: Web):
    inside_one_minute()
    answers = all_at_once(40, lambda _: web.post("/api/v3/system_load", web.keys["limited"]))
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: RATE_LIMIT, 429: 40 - RATE_LIMIT}, web.log.read_text()[-3000:]
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["message"] == "Rate limit exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    # Another tenant is not slowed down by this one.
    assert web.post("/api/v3/system_load", web.keys["spammer"]).status_code == 200


def test_the_spam_filter_takes_one_of_the_same_body_across_four_processes(web: Web):
    same = {"prompt": f"the same cat {time.time()}", "width": 64, "height": 64}
    answers = all_at_once(12, lambda _: web.post("/api/v3/text2img", web.keys["spammer"], **same))
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: 1, 429: 11}, [r.text for r in answers if r.status_code >= 500]
    assert {r.json()["message"] for r in answers if r.status_code == 429} == {"Rate limit exceeded"}
    # Different bodies at the same moment all pass.
    answers = all_at_once(
        8,
        lambda i: web.post("/api/v3/text2img", web.keys["spammer"], **{**same, "seed": i}),
    )
    assert [r.status_code for r in answers] == [200] * 8


CLAIMER = """
import sys, time
from generation.tasks import claim_next_job
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
claimed = []
while (job := claim_next_job()) is not None:
    claimed.append(job.pk)
print(" ".join(map(str, claimed)))
"""

QUEUE_JOBS = """
from accounts.services import get_or_create_organization
from billing.models import Plan
from generation.models import AIModel, Job
model = AIModel.objects.get(model_id="demo-sd15")
# Only this round's jobs wait; the earlier ones (and other tests' jobs) are out of the way.
Job.objects.filter(status__in=["queued", "processing"]).update(status="canceled")
for slug, limit in (("fair-a", 2), ("fair-b", 3)):
    Plan.objects.update_or_create(
        slug=slug,
        defaults=dict(name=slug, requests_per_minute=60, concurrent_jobs=limit,
                      images_per_day=None, max_samples=1, max_side=512, steps_list=[21],
                      priority=0, retention_days=1, monthly_credits=0),
    )
    org = get_or_create_organization(slug, slug)
    for _ in range(15):
        Job.objects.create(organization=org, model=model, params={"samples": 1}, priority=0)
"""


def test_four_workers_claiming_at_once_never_exceed_a_tenants_concurrent_jobs(web: Web):
    if web.env.get("REDIS_URL"):
        pytest.skip("the claim runs on the database alone; once is enough")
    for _round in range(3):
        manage(web.env, "shell", "-c", QUEUE_JOBS)
        start = time.time() + 3
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", setup_django() + CLAIMER, str(start)],
                cwd=ROOT,
                env=web.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [w.communicate(timeout=60) for w in workers]
        assert all(w.returncode == 0 for w in workers), [err for _out, err in outputs]
        claimed = [int(pk) for out, _err in outputs for pk in out.split()]
        assert len(claimed) == len(set(claimed)) == 5
        # The last line: `shell` may first say which models it imported.
        running = manage(web.env, "shell", "-c", RUNNING).strip().splitlines()[-1].split()
        assert running == ["fair-a:2", "fair-b:3"]


RUNNING = """
from django.db.models import Count
from generation.models import Job
rows = (
    Job.objects.filter(status="processing").values("organization__slug")
    .annotate(n=Count("pk")).order_by("organization__slug")
)
print(" ".join(f"{r['organization__slug']}:{r['n']}" for r in rows))
"""


def setup_django() -> str:
    return "import django\ndjango.setup()\n"
