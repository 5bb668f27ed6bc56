"""The submit path under load: gunicorn (2 processes x 8 threads), PostgreSQL and Redis.

Four figures, each against 127.0.0.1 only, from `--clients` threads that each keep one HTTP/1.1
connection alive:

- submit: ModelsLab text2img with `instant_response` (validate, charge, enqueue, answer) for
  `--seconds`, with no worker running, so nothing but the web tier's own path is measured;
- poll_waiting: the ModelsLab fetch of a queued job with the submit phase's jobs ahead of it
  (its answer sums the queue ahead for its ETA), for `--seconds`;
- fetch: the ModelsLab fetch of one finished job, for `--seconds`;
- pickup: from a job's creation to a worker marking it `processing` (the job's own created_at
  and started_at), one job at a time with an idle worker, `--pickups` times;
- floor: GET /healthz for `--seconds`, which passes every middleware and makes one database
  round trip and nothing else: what no API request on this stack can beat.

The bench organizations' plan lifts the rate limit, the queue cap and the credits, so every
request goes the whole way. It has no daily image cap unless `--daily-cap` gives it one too high
to reach, so that each submit checks the tenant's images today against it, as those of the free,
basic and premium plans do. `--jobs-today N` starts each tenant with N finished one-image jobs of
the day, as a busy tenant has by the evening (premium allows 10,000 images a day). The submits
come from one organization, or take turns among `--tenants` of them: one tenant's submits wait
for each other on its row lock, different tenants' do not. Prints one JSON line.

    .venv/bin/python bench/submit.py [--seconds 20] [--clients 8] [--pickups 20] [--tenants 1]
        [--daily-cap] [--jobs-today 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import free_port, manage, python_json, spawn, spawn_web, stop  # noqa: E402

PG_URL = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PROMPT = "a lighthouse on a cliff at dusk"
# Smallest job a worker runs quickly: pickup is what is timed, not generation.
PICKUP_SIDE, PICKUP_STEPS = 64, 1
# The submit phase's jobs, out of the worker's way (their credits do not matter here).
CANCEL_QUEUED = "UPDATE generation_job SET status = 'canceled' WHERE status = 'queued'"

SETUP = """
import json, django
django.setup()
from pathlib import Path
from django.conf import settings
from accounts.models import ApiKey
from accounts.services import get_or_create_organization
from billing import ledger
from billing.models import Plan
from django.utils import timezone
from generation import quotas
from generation.engine import demo
from generation.models import AIModel, DailyImages, Job

demo.build_demo_sd15(str(Path(settings.PICTOR_MODELS_DIR) / "demo-sd15"))
model = AIModel.objects.create(
    model_id="demo-sd15", name="demo-sd15", path="demo-sd15", is_default=True
)
plan = Plan.objects.create(
    slug="bench", name="Bench", requests_per_minute=10**9, concurrent_jobs=10**8,
    images_per_day={images_per_day}, max_samples=4, max_side=1024, retention_days=1,
    monthly_credits=2 * 10**9, priority=0, steps_list=[1, 21],
)
keys = []
for n in range({tenants}):
    org = get_or_create_organization(f"bench-{{n}}", "bench")
    ledger.grant_monthly(org, plan)
    keys.append(ApiKey.objects.issue(org, name="bench")[1])
    if {jobs_today}:
        done = dict(status=Job.Status.SUCCESS, organization=org, model=model, params={params})
        Job.objects.bulk_create([Job(**done) for _ in range({jobs_today})], batch_size=2000)
        # As each of their submits would have counted them.
        DailyImages.objects.create(
            organization=org, day=quotas.usage_day(timezone.now()), images={jobs_today}
        )
print(json.dumps({{"keys": keys}}))
"""


def ms(values: list[float], q: float) -> float:
    """The q-quantile of `values` (seconds) in milliseconds."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


class Client:
    """One keep-alive connection: POST JSON, return (status, body, seconds)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        return self.request("POST", path, json.dumps(body).encode())

    def get(self, path: str) -> tuple[int, dict[str, Any], float]:
        return self.request("GET", path, None)

    def request(
        self, method: str, path: str, data: bytes | None
    ) -> tuple[int, dict[str, Any], float]:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        start = time.perf_counter()
        try:
            self.conn.request(method, path, data, headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError):
            # The server closed the kept-alive connection: one fresh try.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, data, headers)
            response = self.conn.getresponse()
            raw = response.read()
        elapsed = time.perf_counter() - start
        return response.status, json.loads(raw), elapsed


def hammer(
    port: int, clients: int, seconds: float, request: Callable[[Client, int], tuple[int, float]]
) -> dict[str, Any]:
    """Run `request` from `clients` threads for `seconds`: rate and latency of the 200s."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**9))

    def loop() -> None:
        client = Client(port)
        mine: list[float] = []
        while time.perf_counter() < stop_at:
            status, elapsed = request(client, next(counter))
            if status == 200:
                mine.append(elapsed)
            else:
                with lock:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": ms(latencies, 0.50),
        "p99_ms": ms(latencies, 0.99),
        "ok": len(latencies),
        "errors": errors,
    }


def text2img(key: str, seed: int, **fields: Any) -> dict[str, Any]:
    # A new seed each time: the spam filter refuses the same body twice within 30 s.
    return {
        "key": key,
        "prompt": PROMPT,
        "width": 512,
        "height": 512,
        "samples": 1,
        "num_inference_steps": 21,
        "seed": seed,
        "instant_response": True,
        **fields,
    }


@contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards: its URL."""
    import psycopg

    name = f"pictor_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL}/{name}"
    finally:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_http(port: int, bound: float = 90) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn on port {port} did not answer within {bound}s")


def pickup(port: int, key: str, db_url: str, runs: int) -> dict[str, Any]:
    """Submit-to-processing of `runs` jobs, each sent to an idle worker."""
    import psycopg

    client = Client(port)
    delays: list[float] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(runs + 1):
            size = {"width": PICKUP_SIDE, "height": PICKUP_SIDE}
            body = text2img(key, 10**8 + i, num_inference_steps=PICKUP_STEPS, **size)
            status, answer, _ = client.post("/api/v3/text2img", body)
            assert status == 200, answer
            job_id = answer["id"]
            deadline = time.monotonic() + 120
            row = None
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT status, extract(epoch FROM started_at - created_at) "
                    "FROM generation_job WHERE id = %s",
                    (job_id,),
                ).fetchone()
                if row and row[0] in ("success", "failed", "canceled"):
                    break
                time.sleep(0.05)
            assert row is not None and row[0] == "success", row
            if i:  # the first job loads the model
                delays.append(float(row[1]))
    return {
        "p50_ms": round(statistics.median(delays) * 1000, 2),
        "p95_ms": ms(delays, 0.95),
        "runs": runs,
        "last_job": job_id,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--pickups", type=int, default=20)
    parser.add_argument("--daily-cap", action="store_true", help="check a daily image cap too")
    parser.add_argument("--jobs-today", type=int, default=0, help="each tenant's jobs so far today")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pictor-bench-") as tmp, database() as db_url:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
            "DATABASE_URL": db_url,
            "REDIS_URL": REDIS_URL,
            "PICTOR_VAR_DIR": tmp,
            "PICTOR_MODELS_DIR": os.environ.get("PICTOR_TEST_MODELS_DIR", str(Path(tmp) / "m")),
            "PICTOR_BIND": f"127.0.0.1:{port}",
            "HF_HUB_OFFLINE": "1",
            # Fetches count against the poll limit, not the plan's: lifted like the plan's.
            "PICTOR_POLL_RATE_PER_MINUTE": str(10**9),
        }
        manage(env, "migrate", "--noinput", "-v", "0")
        daily = 10**9 if args.daily_cap else None
        setup = SETUP.format(
            tenants=args.tenants,
            images_per_day=daily,
            jobs_today=args.jobs_today,
            params=repr({"prompt": PROMPT, "width": 512, "height": 512, "samples": 1, "steps": 21}),
        )
        keys = python_json(setup, env)["keys"]
        key = keys[0]
        log = Path(tmp) / "stack.log"
        web = spawn_web(env, log)
        procs = [web]
        try:
            wait_http(port)
            path = "/api/v3/text2img"
            submit = hammer(
                port,
                args.clients,
                args.seconds,
                lambda c, n: c.post(path, text2img(keys[n % len(keys)], n))[::2],
            )
            # A poll of a waiting job: the newest, with every job of the submit phase ahead.
            status, answer, _ = Client(port).post(path, text2img(key, 2 * 10**9))
            assert status == 200, answer
            waiting_path = f"/api/v3/fetch/{answer['id']}"
            poll_waiting = hammer(
                port,
                args.clients,
                args.seconds,
                lambda c, n: c.post(waiting_path, {"key": key})[::2],
            )
            # Nothing left for the worker but the pickup jobs.
            import psycopg

            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(CANCEL_QUEUED)
            redis.Redis.from_url(REDIS_URL).flushdb()
            procs.append(spawn(env, log, "manage.py", "worker"))
            picked = pickup(port, key, db_url, args.pickups)
            fetch_path = f"/api/v3/fetch/{picked.pop('last_job')}"
            fetch = hammer(
                port, args.clients, args.seconds, lambda c, n: c.post(fetch_path, {"key": key})[::2]
            )
            floor = hammer(port, args.clients, args.seconds, lambda c, n: c.get("/healthz")[::2])
        except BaseException:
            sys.stderr.write(log.read_text()[-5000:])
            raise
        finally:
            stop(procs)
    print(
        json.dumps(
            {
                "bench": "submit",
                "web": "gunicorn 2 processes x 8 threads, PostgreSQL, Redis",
                "clients": args.clients,
                "tenants": args.tenants,
                "daily_cap": args.daily_cap,
                "jobs_today": args.jobs_today,
                "seconds": args.seconds,
                "submit": submit,
                "fetch": fetch,
                "poll_waiting": poll_waiting,
                "pickup": picked,
                "floor": floor,
            }
        )
    )


if __name__ == "__main__":
    main()
