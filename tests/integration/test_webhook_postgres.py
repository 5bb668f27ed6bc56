"""Webhook attempts on PostgreSQL: a reply that cannot be stored never makes the sweep re-send.

PostgreSQL refuses a NUL character in text (SQLite stores it), so only here does a receiver's
200 reply holding one make the attempt's log row fail. A subprocess points Django at a fresh
PostgreSQL database, runs django-q2 tasks inline, and drives the stalled-delivery sweep again
and again against a real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import migrated_database
from tests.processes import python_json

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

    from accounts.services import get_or_create_organization
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

    org = get_or_create_organization("hooks", "premium")
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
def database(tmp_path: Path) -> Iterator[dict[str, str]]:
    with migrated_database(
        tmp_path, PICTOR_Q_SYNC="true", PICTOR_WEBHOOK_RETRY_DELAYS=RETRY_DELAYS
    ) as env:
        yield env


def test_a_reply_holding_nul_is_recorded_and_never_resent(database):
    outcome = python_json(
        "from tests.integration.test_webhook_postgres import sweep_many_times as run; run()",
        database,
    )
    assert outcome["posts"] <= MAX_ATTEMPTS, outcome
    assert outcome["posts"] == 1, outcome
    assert (outcome["status"], outcome["attempts"]) == ("delivered", 1), outcome
    assert outcome["log"] == [[200, '{"received":true}']], outcome
    assert outcome["errors"] == [], outcome
