"""Redis dies under a running stack, then comes back.

A private redis-server (no persistence) on a free port is the cache, the rate counters and the
django-q2 broker of one gunicorn and one worker on a private PostgreSQL database. While it is
stopped, every format's submit answers a JSON 503 with Retry-After in its own error shape and
charges nothing, reads and pages keep working (the counters fall back to the database), and
/readyz names the parts that are down. Once it is started again, empty, everything works, and a
job whose broker task was refused after its commit still runs (the worker's sweep enqueues it).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import PG_URL, create_database, drop_database, service_missing
from tests.processes import free_port, manage, spawn, spawn_web, stop, wait_for_web, wait_until
from tests.test_health import WITHOUT_REDIS

pytestmark = pytest.mark.integration

BROKER_KEY = "django_q:pictor:q"  # django-q2's task list for the cluster named "pictor"
EMAIL, PASSWORD = "ops@example.com", "a-long-pass-phrase-42"
SMALL = {"width": 128, "height": 128}
# A dead Redis must not slow an answer down by more than its timeouts.
FAST = 5.0


@dataclass
class Outage:
    """The stack under test and the redis-server it depends on."""

    base_url: str
    key: str
    env: dict[str, str]
    redis_port: int
    workdir: Path
    processes: dict[str, subprocess.Popen]
    database: str

    def start_redis(self) -> None:
        """A redis-server of this test's own, empty (no persistence), at the same port."""
        with open(self.workdir / "redis.log", "ab") as log:
            self.processes["redis"] = subprocess.Popen(
                [
                    *("redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port)),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_until(lambda: self.redis().ping(), bound=20, what="redis-server")

    def stop_redis(self) -> None:
        stop([self.processes.pop("redis")], grace=10)

    def redis(self):
        import redis

        return redis.Redis(port=self.redis_port, socket_timeout=2, socket_connect_timeout=2)

    def sql(self, query: str, *params: object) -> tuple:
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            return conn.execute(query, params).fetchone()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )


@pytest.fixture
def outage(tmp_path: Path, models_dir: Path) -> Iterator[Outage]:
    if shutil.which("redis-server") is None:
        service_missing("Redis", FileNotFoundError("no redis-server"))
    database = create_database()
    port, redis_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "DATABASE_URL": f"{PG_URL}/{database}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "PICTOR_MODELS_DIR": str(models_dir),
        "PICTOR_VAR_DIR": str(tmp_path / "var"),
        "PICTOR_BASE_URL": f"http://127.0.0.1:{port}",
        "PICTOR_BIND": f"127.0.0.1:{port}",
        "PICTOR_WEB_THREADS": "4",
        "PICTOR_SWEEP_INTERVAL": "2",
        "PICTOR_SYNC_WAIT": "3",
        "PICTOR_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("PICTOR_Q_SYNC", "PROMETHEUS_MULTIPROC_DIR", "S3_BUCKET"):
        env.pop(name, None)
    stack = Outage(f"http://127.0.0.1:{port}", "", env, redis_port, tmp_path, {}, database=database)
    try:
        stack.start_redis()
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "build_demo_models")
        stack.key = manage(env, "apikey", "create", "--org", "it", "--plan", "premium").strip()
        manage(env, "shell", "-c", MAKE_USER)
        stack.processes["web"] = spawn_web(env, tmp_path / "web.log")
        stack.processes["worker"] = spawn(env, tmp_path / "worker.log", "manage.py", "worker")
        wait_for_web(stack.base_url + "/readyz", stack.processes["web"], tmp_path / "web.log")
        yield stack
    finally:
        stop(stack.processes.values())
        drop_database(database)


MAKE_USER = f"""
from accounts.models import Membership, Organization, User
user = User.objects.create_user({EMAIL!r}, {PASSWORD!r})
Membership.objects.create(
    user=user, organization=Organization.objects.get(slug="it"), role=Membership.Role.OWNER
)
"""


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"user:{key}".encode()).decode()}


def submits(key: str, prompt: str) -> dict[str, tuple[str, dict, dict[str, str]]]:
    """Each format's generation request: path, JSON body, headers."""
    bearer = {"Authorization": f"Bearer {key}"}
    return {
        "modelslab": ("/api/v3/text2img", {"key": key, "prompt": prompt, **SMALL}, {}),
        "synapse": ("/sd/demo-sd15", {"prompt": prompt, **SMALL}, bearer),
        "a1111": ("/sdapi/v1/txt2img", {"prompt": prompt, "steps": 21, **SMALL}, basic(key)),
        "dan": ("/api/sd/txt2img", {"prompt": prompt, **SMALL}, bearer),
        "hyperbolic": (
            "/v1/image/generation",
            {"model_name": "demo-sd15", "prompt": prompt, "steps": 21, **SMALL},
            bearer,
        ),
    }


def in_own_shape(wire: str, body: dict) -> bool:
    """The body is `wire`'s own error shape, saying the queue is down."""
    text = {
        "modelslab": lambda: body["status"] == "error" and body["message"],
        "synapse": lambda: body["error"],
        "a1111": lambda: body["error"] == "QueueUnavailable" and body["detail"],
        "dan": lambda: body["code"] == 503 and body["data"] is None and body["message"],
        "hyperbolic": lambda: body["object"] == "error" and body["code"] == 503 and body["message"],
    }[wire]()
    return isinstance(text, str) and "queue is unavailable" in text


def logged_in(base_url: str) -> requests.Session:
    """A browser session through the login page (its CSRF token, then the form)."""
    session = requests.Session()
    page = session.get(base_url + "/accounts/login/", timeout=FAST)
    assert page.status_code == 200, page.text[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = session.post(
        base_url + "/accounts/login/",
        data={"username": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": base_url + "/accounts/login/"},
        allow_redirects=False,
        timeout=FAST,
    )
    assert answer.status_code == 302, answer.text[:500]
    return session


def balance(stack: Outage) -> int:
    return stack.sql("SELECT credit_balance FROM accounts_organization WHERE slug = 'it'")[0]


def jobs(stack: Outage) -> int:
    return stack.sql("SELECT count(*) FROM generation_job")[0]


def test_a_redis_outage_answers_json_503s_keeps_pages_and_recovers(outage):
    stack = outage
    url = stack.base_url
    before = submits(stack.key, "before")["modelslab"]
    first = requests.post(url + before[0], json=before[1], timeout=60)
    assert first.status_code == 200, first.text
    first_id = first.json()["id"]

    # A hung Redis (it accepts connections, never answers) costs timeouts, not a hang.
    os.killpg(stack.processes["redis"].pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        hung = requests.post(url + before[0], json=before[1] | {"prompt": "hung"}, timeout=60)
        assert hung.status_code == 503, hung.text[:500]
        assert in_own_shape("modelslab", hung.json())
        ready = requests.get(url + "/readyz", timeout=60)
        assert ready.status_code == 503
        assert time.monotonic() - started < 2 * FAST
    finally:
        os.killpg(stack.processes["redis"].pid, signal.SIGCONT)

    stack.stop_redis()
    credits, count = balance(stack), jobs(stack)
    for wire, (path, body, headers) in submits(stack.key, "during").items():
        started = time.monotonic()
        answer = requests.post(url + path, json=body, headers=headers, timeout=30)
        took = time.monotonic() - started
        assert answer.status_code == 503, (wire, answer.status_code, answer.text[:500])
        assert answer.headers["Content-Type"] == "application/json", (wire, answer.text[:300])
        assert int(answer.headers["Retry-After"]) > 0, wire
        assert in_own_shape(wire, answer.json()), (wire, answer.json())
        assert took < FAST, (wire, took)
    assert (balance(stack), jobs(stack)) == (credits, count), "nothing charged or created"

    # Reads go on: the counters that rate-limit them count in the database meanwhile.
    fetched = requests.post(f"{url}/api/v3/fetch/{first_id}", json={"key": stack.key}, timeout=30)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["id"] == first_id
    load = requests.post(url + "/api/v3/system_load", json={"key": stack.key}, timeout=FAST)
    assert load.status_code == 200, load.text
    session = logged_in(url)
    for page in ("/app/", "/app/keys/", "/app/history/", "/app/usage/", "/app/playground/"):
        assert session.get(url + page, timeout=FAST).status_code == 200, page
    ready = requests.get(url + "/readyz", timeout=FAST)
    assert ready.status_code == 503
    assert ready.json() == WITHOUT_REDIS

    stack.start_redis()  # empty: it keeps nothing
    wait_until(
        lambda: requests.get(url + "/readyz", timeout=FAST).status_code == 200,
        bound=30,
        what="/readyz after Redis came back",
    )
    # Every format generates again; Synapse waits for its image, so a worker runs it.
    for wire, (path, body, headers) in submits(stack.key, "after").items():
        answer = requests.post(url + path, json=body, headers=headers, timeout=120)
        assert answer.status_code == 200, (wire, answer.text[:500], stack.logs())
    synapse = submits(stack.key, "after again")["synapse"]
    image = requests.post(url + synapse[0], json=synapse[1], headers=synapse[2], timeout=120)
    assert image.status_code == 200, image.text[:500]
    assert base64.b64decode(image.json()["data"]).startswith(b"\x89PNG")
    # The counters are back in Redis.
    assert stack.redis().keys("*rpm:*"), "the rate counter should count in Redis again"


def test_a_job_whose_broker_task_fails_after_commit_keeps_its_id_and_runs(outage):
    stack = outage
    url = stack.base_url
    # Redis answers a PING but refuses to push onto the task list (it holds a string), so the
    # enqueue fails only after the job and its debit have committed.
    stack.redis().set(BROKER_KEY, "not a list")
    credits = balance(stack)
    body = {"key": stack.key, "prompt": "lost task", **SMALL}
    answer = requests.post(url + "/api/v3/text2img", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["status"] == "processing", data
    job_id = data["id"]
    assert stack.sql("SELECT status FROM generation_job WHERE id = %s", job_id)[0] == "queued"
    assert balance(stack) == credits - 1

    stack.redis().delete(BROKER_KEY)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        fetched = requests.post(f"{url}/api/v3/fetch/{job_id}", json={"key": stack.key}, timeout=30)
        if fetched.json()["status"] == "success":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the job never ran: {fetched.text}\n{stack.logs()}")
    assert len(fetched.json()["output"]) == 1
    assert balance(stack) == credits - 1
