"""Webhook attempts on PostgreSQL: a reply that cannot be stored never makes the sweep re-send.

PostgreSQL refuses a NUL character in text (SQLite stores it), so only here does a receiver's
200 reply holding one make the attempt's log row fail. A subprocess points Django at a fresh
PostgreSQL database, runs django-q2 tasks inline, and drives the stalled-delivery sweep again
and again against a real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import PG_URL, ROOT, create_database, drop_database, manage

pytestmark = pytest.mark.integration

RETRY_DELAYS = "600,600"  # three attempts at most
MAX_ATTEMPTS = 3
SWEEPS = 6
REPLY = b'{"received":\x00true}'


def sweep_many_times() -> None:
    """The subprocess: one finished job with a webhook, then SWEEPS sweeps, each long overdue."""
    import threading
    from datetime import timedelta
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import django

    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from accounts.models import Organization
    from generation import webhooks
    from generation.models import AIModel, Job, WebhookDelivery

    posts: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(self.rfile.read(int(self.headers.get("content-length", 0))))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(REPLY)))
            self.end_headers()
            self.wfile.write(REPLY)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ("127.0.0.0/8",)
    settings.PICTOR_FETCH_ALLOWED_PORTS = (80, 443, port)

    org = Organization.get_or_create_by_slug("hooks", "premium")
    # Only registered: nothing is generated, the job is made finished.
    model = AIModel.objects.create(model_id="demo-sd15", name="demo-sd15", path="demo-sd15")
    job = Job.objects.create(
        organization=org,
        model=model,
        params={},
        status=Job.Status.FAILED,
        webhook=f"http://127.0.0.1:{port}/hook",
        finished_at=timezone.now(),
    )
    errors: list[str] = []

    def attempt(work) -> None:
        try:
            work()
        except Exception as exc:  # the old code's failure to record; keep sweeping
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    attempt(lambda: webhooks.job_finished(job.pk))
    for _ in range(SWEEPS):
        # Long past due, as after the lease and the sweep's wait, every few minutes.
        WebhookDelivery.objects.filter(job=job, status=WebhookDelivery.Status.PENDING).update(
            next_attempt_at=timezone.now() - timedelta(minutes=10)
        )
        attempt(webhooks.resume_stalled_deliveries)
    delivery = WebhookDelivery.objects.get(job=job)
    server.shutdown()
    print(
        json.dumps(
            {
                "posts": len(posts),
                "status": delivery.status,
                "attempts": delivery.attempts,
                "log": list(delivery.attempt_log.values_list("status_code", "response_excerpt")),
                "errors": errors,
            }
        )
    )


@pytest.fixture
def database(tmp_path: Path):
    name = create_database()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "DATABASE_URL": f"{PG_URL}/{name}",
        "PICTOR_VAR_DIR": str(tmp_path / "var"),
        "PICTOR_Q_SYNC": "true",
        "PICTOR_WEBHOOK_RETRY_DELAYS": RETRY_DELAYS,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "createcachetable")
        yield env
    finally:
        drop_database(name)


def test_a_reply_holding_nul_is_recorded_and_never_resent(database):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tests.integration.test_webhook_postgres import sweep_many_times as run; run()",
        ],
        cwd=ROOT,
        env=database,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["posts"] <= MAX_ATTEMPTS, outcome
    assert outcome["posts"] == 1, outcome
    assert (outcome["status"], outcome["attempts"]) == ("delivered", 1), outcome
    assert outcome["log"] == [[200, '{"received":true}']], outcome
    assert outcome["errors"] == [], outcome
