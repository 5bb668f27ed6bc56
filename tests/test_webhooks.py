"""Job-completion webhooks: signed (Standard Webhooks), retried, logged, and refused when unsafe."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.scheduler import scheduler
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from accounts.models import Organization
from generation import media, webhooks
from generation.models import AIModel, Job, WebhookAttempt, WebhookDelivery
from tests.helpers import unsigned
from tests.scrape import local_metrics, sample

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that answers from a script: (status, seconds to stall)."""

    port: int = 0
    script: list[tuple[int, float]] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The reply body; None answers {"received": true|false}.
    reply: bytes | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pictor"

    def answer(self, *statuses: int | tuple[int, float]) -> None:
        self.script = [s if isinstance(s, tuple) else (s, 0.0) for s in statuses]

    def take(self, hit: Hit) -> tuple[int, float]:
        with self.lock:
            self.hits.append(hit)
            return self.script.pop(0) if self.script else (200, 0.0)


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status, stall = state.take(Hit({k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(stall)
            reply = state.reply or json.dumps({"received": status < 300}).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:
                pass  # the client gave up waiting: what a timeout test wants

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ("127.0.0.0/8",)
    settings.PICTOR_FETCH_ALLOWED_PORTS = (80, 443, state.port)
    settings.PICTOR_FETCH_MAX_BYTES = 1024 * 1024
    settings.PICTOR_FETCH_TIMEOUT = 5.0
    settings.PICTOR_WEBHOOK_RETRY_DELAYS = (0, 0, 0)
    yield state
    server.shutdown()
    server.server_close()


def submit(api: Any, tenant: Any, **fields: Any) -> dict[str, Any]:
    status, data = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a lighthouse", "width": 64, "height": 64, **fields},
    )
    assert status == 200, data
    return data


def delivery_of(job_id: int) -> WebhookDelivery:
    return WebhookDelivery.objects.get(job_id=job_id)


def retries() -> Any:
    """The one-off schedules of webhook retries (the reaper's schedule lives there too)."""
    return Schedule.objects.filter(func="generation.webhooks.deliver")


def verify(org: Organization, hit: Hit) -> Any:
    """What a receiver does: check the signature with the reference library."""
    org.refresh_from_db()
    return Webhook(org.webhook_secret).verify(hit.body, hit.headers)


def attempts_counted(outcome: str) -> float:
    return sample(local_metrics(), "pictor_webhook_attempts_total", outcome=outcome)


def test_it_retries_until_the_receiver_accepts(
    api, tenant, demo_model, sync_queue, receiver, monkeypatch
):
    # One clock for the links: the answer and each delivery sign them at different instants,
    # and across a second's boundary their expiry (so their signature) would differ.
    now = time.time()
    monkeypatch.setattr(media, "time", SimpleNamespace(time=lambda: now))
    receiver.answer(500, 500, 200)
    before = {o: attempts_counted(o) for o in ("delivered", "retry", "failed")}
    data = submit(api, tenant, webhook=receiver.url, track_id="order-77", seed=5)
    job_id = data["id"]
    assert data["status"] == "success"

    assert len(receiver.hits) == 3
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 1
    for hit in receiver.hits:
        payload = verify(tenant.org, hit)
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["user-agent"] == "Pictor-Webhooks/1"
        assert hit.headers["webhook-signature"].startswith("v1,")
        assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60
        assert payload["status"] == "success"
        assert payload["id"] == job_id
        assert payload["track_id"] == "order-77"
        assert payload["meta"]["seed"] == 5
        assert list(map(unsigned, payload["output"])) == list(map(unsigned, data["output"]))
        assert payload["output"][0].startswith(
            f"http://testserver/files/generations/{tenant.org.pk}/{job_id}/0.png?expires="
        )

    delivery = delivery_of(job_id)
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.webhook_id == receiver.hits[0].headers["webhook-id"]
    assert delivery.webhook_id.startswith("msg_")
    assert delivery.attempts == 3
    assert delivery.finished_at is not None
    log = list(delivery.attempt_log.values_list("number", "status_code", "error"))
    assert log == [(1, 500, ""), (2, 500, ""), (3, 200, "")]
    assert delivery.attempt_log.get(number=3).response_excerpt == '{"received": true}'
    after = {o: attempts_counted(o) - before[o] for o in before}
    assert after == {"delivered": 1, "retry": 2, "failed": 0}


def test_a_signature_from_another_secret_does_not_verify(
    api, tenant, demo_model, sync_queue, receiver
):
    submit(api, tenant, webhook=receiver.url)
    [hit] = receiver.hits
    verify(tenant.org, hit)
    tenant.org.rotate_webhook_secret()
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verify(tenant.org, hit)


def test_sign_matches_the_standard_webhooks_reference():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330." + body, hashlib.sha256).digest()
    ).decode()
    signature = webhooks.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1," + expected
    when = datetime.fromtimestamp(1614265330, tz=UTC)
    assert signature == Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", when, body.decode())


@pytest.mark.parametrize("status", [400, 410])
def test_a_4xx_answer_stops_after_one_attempt(
    api, tenant, demo_model, sync_queue, receiver, status
):
    receiver.answer(status, 200)
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    assert len(receiver.hits) == 1
    delivery = delivery_of(job_id)
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts == 1
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [status]
    assert not retries().exists()


def test_it_gives_up_after_the_last_retry(api, tenant, demo_model, sync_queue, receiver, settings):
    settings.PICTOR_WEBHOOK_RETRY_DELAYS = (0, 0)
    receiver.answer(503, 502, 500, 200)
    before = {o: attempts_counted(o) for o in ("delivered", "retry", "failed")}
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    assert len(receiver.hits) == 3
    delivery = delivery_of(job_id)
    assert delivery.status == WebhookDelivery.Status.FAILED
    after = {o: attempts_counted(o) - before[o] for o in before}
    assert after == {"delivered": 0, "retry": 2, "failed": 1}
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [503, 502, 500]


def test_a_receiver_that_stalls_past_the_timeout_is_retried(
    api, tenant, demo_model, sync_queue, receiver, settings
):
    settings.PICTOR_FETCH_TIMEOUT = 0.5
    receiver.answer((200, 2.0), 200)
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    assert len(receiver.hits) == 2
    delivery = delivery_of(job_id)
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    first, second = delivery.attempt_log.all()
    assert first.status_code is None
    assert first.error.startswith("Timed out")
    assert 400 <= first.duration_ms < 2000
    assert second.status_code == 200


def test_a_failed_job_sends_the_failed_payload(api, tenant, demo_model, sync_queue, receiver):
    AIModel.objects.filter(pk=demo_model.pk).update(path="missing-folder")
    data = submit(api, tenant, webhook=receiver.url, track_id="t-1")
    job_id = data["id"]
    assert data["status"] == "failed"
    assert Job.objects.get(pk=job_id).status == Job.Status.FAILED
    [hit] = receiver.hits
    assert verify(tenant.org, hit) == {
        "event": "completed",
        "status": "failed",
        "id": job_id,
        "track_id": "t-1",
        "message": "Failed, Try Again",
        "output": [],
    }
    assert delivery_of(job_id).status == WebhookDelivery.Status.DELIVERED


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "10.1.2.3", "localhost", "169.254.169.254"])
def test_a_webhook_to_a_private_address_is_a_400_before_anything_is_charged(
    api, tenant, demo_model, sync_queue, receiver, settings, host
):
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ()
    before = tenant.org.credit_balance
    status, data = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a lighthouse", "webhook": f"http://{host}:{receiver.port}/"},
    )
    assert status == 400, data
    assert "is not allowed" in data["message"]["webhook"][0], data
    assert not Job.objects.exists() and receiver.hits == []
    tenant.org.refresh_from_db()
    assert tenant.org.credit_balance == before


@pytest.mark.parametrize(
    ("webhook", "says"),
    [
        ("ftp://hooks.example.com/done", "Only http and https URLs are allowed."),
        ("https://hooks.example.com:8443/done", "Port 8443 is not allowed"),
    ],
)
def test_a_webhook_delivery_would_refuse_is_a_400(api, tenant, demo_model, webhook, says):
    status, data = api.post(
        "/api/v3/text2img", {"key": tenant.key, "prompt": "a lighthouse", "webhook": webhook}
    )
    assert status == 400, data
    assert says in data["message"]["webhook"][0], data
    assert not Job.objects.exists()


def test_an_address_refused_after_the_submit_is_refused_without_a_request(
    api, tenant, demo_model, sync_queue, receiver, settings
):
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    assert len(receiver.hits) == 1
    # The operator closes the network before the delivery is sent again: the send checks too.
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ()
    assert webhooks.redeliver(delivery_of(job_id).pk)
    assert len(receiver.hits) == 1
    delivery = delivery_of(job_id)
    assert delivery.status == WebhookDelivery.Status.FAILED
    attempt = delivery.attempt_log.latest("pk")
    assert attempt.status_code is None
    assert "127.0.0.1 is not allowed" in attempt.error


def test_a_job_without_webhook_creates_no_delivery(api, tenant, demo_model, sync_queue, receiver):
    data = submit(api, tenant)
    assert data["status"] == "success"
    assert not WebhookDelivery.objects.exists()
    assert receiver.hits == []


def test_a_job_is_delivered_once_even_if_it_finishes_twice(
    api, tenant, demo_model, sync_queue, receiver
):
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    webhooks.job_finished(job_id)
    assert WebhookDelivery.objects.filter(job_id=job_id).count() == 1
    assert len(receiver.hits) == 1


def test_a_later_retry_goes_through_the_scheduler(
    api, tenant, demo_model, sync_queue, receiver, settings
):
    settings.PICTOR_WEBHOOK_RETRY_DELAYS = (30, 60)
    receiver.answer(500, 200)
    before = timezone.now()
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    assert len(receiver.hits) == 1
    delivery = delivery_of(job_id)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.PENDING, 1)

    [retry] = retries()
    assert retry.schedule_type == Schedule.ONCE
    assert ast.literal_eval(retry.args) == (delivery.pk,)
    assert retry.next_run == delivery.next_attempt_at
    assert (
        before + timedelta(seconds=30) <= retry.next_run <= timezone.now() + timedelta(seconds=30)
    )

    # A duplicate task arriving before the retry is due sends nothing.
    webhooks.deliver(delivery.pk)
    assert len(receiver.hits) == 1

    # Thirty seconds later, as far as the delivery and the scheduler can tell.
    past = timezone.now() - timedelta(seconds=1)
    retries().update(next_run=past)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=past)
    scheduler(broker=get_broker())

    assert len(receiver.hits) == 2
    assert receiver.hits[0].headers["webhook-id"] == receiver.hits[1].headers["webhook-id"]
    verify(tenant.org, receiver.hits[1])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 2)
    assert not retries().exists()
    webhooks.deliver(delivery.pk)
    assert len(receiver.hits) == 2
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 2


def test_each_organization_gets_its_own_secret(tenant, outsider):
    secrets = {tenant.org.webhook_secret, outsider.org.webhook_secret}
    assert len(secrets) == 2
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    old = tenant.org.webhook_secret
    new = tenant.org.rotate_webhook_secret()
    tenant.org.refresh_from_db()
    assert tenant.org.webhook_secret == new != old


def test_a_stalled_delivery_is_sent_by_the_reaper(
    api, tenant, demo_model, sync_queue, receiver, settings
):
    from datetime import timedelta

    from django.utils import timezone

    from generation.jobs import reap_expired_jobs

    settings.PICTOR_WEBHOOK_RETRY_DELAYS = (600,)
    receiver.answer(500, 200)
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    delivery = delivery_of(job_id)
    assert (len(receiver.hits), delivery.status) == (1, WebhookDelivery.Status.PENDING)
    # As if the retry's schedule had been lost, and its time long past.
    retries().delete()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    reap_expired_jobs()
    delivery.refresh_from_db()
    assert len(receiver.hits) == 2
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    # Nothing stalled any more: another sweep sends nothing.
    reap_expired_jobs()
    assert len(receiver.hits) == 2


def test_a_reply_holding_nul_and_invalid_utf8_is_logged_without_them(
    api, tenant, demo_model, sync_queue, receiver
):
    receiver.reply = b'{"ok":\x00 true}\xed\xa0\x80' + b"x" * 3000
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    assert len(receiver.hits) == 1
    delivery = delivery_of(job_id)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 1)
    [attempt] = delivery.attempt_log.all()
    assert attempt.status_code == 200
    assert attempt.response_excerpt.startswith('{"ok": true}')
    assert "\x00" not in attempt.response_excerpt
    assert len(attempt.response_excerpt) == webhooks.EXCERPT_CHARS


def test_a_2xx_with_a_body_larger_than_any_download_is_delivered_at_once(
    api, tenant, demo_model, sync_queue, receiver, settings
):
    receiver.reply = b"ok " * (2 * settings.PICTOR_FETCH_MAX_BYTES)
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    assert len(receiver.hits) == 1
    delivery = delivery_of(job_id)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 1)
    [attempt] = delivery.attempt_log.all()
    assert (attempt.status_code, attempt.error) == (200, "")
    assert attempt.response_excerpt == ("ok " * webhooks.EXCERPT_CHARS)[: webhooks.EXCERPT_CHARS]


def test_a_delivery_whose_attempts_are_spent_is_never_sent_again(
    api, tenant, demo_model, sync_queue, receiver, settings
):
    """Its last attempt's outcome was never recorded: the sweep gives up instead of sending."""
    from generation.jobs import reap_expired_jobs

    settings.PICTOR_WEBHOOK_RETRY_DELAYS = (600, 600)
    receiver.answer(500)
    job_id = submit(api, tenant, webhook=receiver.url)["id"]
    delivery = delivery_of(job_id)
    assert (len(receiver.hits), delivery.attempts) == (1, 1)
    # As if attempts 2 and 3 were sent and then their workers died before recording them.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        attempts=3, next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    for _ in range(3):
        reap_expired_jobs()
        webhooks.deliver(delivery.pk)
    assert len(receiver.hits) == 1
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.finished_at is not None
    assert delivery.attempts == 3
