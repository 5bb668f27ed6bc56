"""The settings page's webhook log: test pings, redelivery, and who may do either.

The receiver is a real HTTP server on 127.0.0.1, allowed by the fetch settings as in
tests/test_webhooks.py; deliveries go through the real signed delivery path (django-q2 sync).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from generation import webhooks
from generation.models import AIModel, Job, WebhookDelivery, WebhookEvent

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (200 once the script is spent)."""

    port: int = 0
    script: list[int] = field(default_factory=list)
    hits: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.hits.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.script.pop(0) if state.script else 200
            reply = json.dumps({"pong": status < 300}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ("127.0.0.0/8",)
    settings.PICTOR_FETCH_ALLOWED_PORTS = (80, 443, state.port)
    settings.PICTOR_FETCH_TIMEOUT = 5.0
    settings.PICTOR_WEBHOOK_RETRY_DELAYS = (0, 0)
    yield state
    server.shutdown()
    server.server_close()


def ping(client: Any, url: str) -> Any:
    return client.post("/app/settings/", {"action": "ping", "url": url}, follow=True)


def redeliver(client: Any, delivery: WebhookDelivery) -> Any:
    return client.post(f"/app/settings/webhooks/{delivery.pk}/redeliver/", follow=True)


def finished_job_delivery(org: Any, url: str) -> WebhookDelivery:
    """A failed job with a webhook, and its `completed` delivery sent as a worker would."""
    model = AIModel.objects.create(model_id="page-model", name="page-model", path="page-model")
    job = Job.objects.create(
        organization=org,
        model=model,
        status=Job.Status.FAILED,
        params={"prompt": "a lighthouse", "samples": 1, "width": 64, "height": 64},
        webhook=url,
        finished_at=timezone.now(),
    )
    webhooks.job_finished(job.pk)
    return WebhookDelivery.objects.get(job=job, event=WebhookEvent.COMPLETED)


def test_it_sends_a_signed_test_ping_that_shows_in_the_log(client, people, receiver, sync_queue):
    client.force_login(people.owner)
    page = ping(client, receiver.url).content.decode()

    [(headers, body)] = receiver.hits
    people.acme.refresh_from_db()
    payload = Webhook(people.acme.webhook_secret).verify(body, headers)
    assert payload["event"] == "ping"
    assert payload["organization"] == "acme"
    delivery = WebhookDelivery.objects.get(organization=people.acme)
    assert delivery.job is None
    assert headers["webhook-id"] == delivery.webhook_id
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 1)

    assert "Test ping sent" in page
    log = page.split('data-testid="webhook-log"')[1]
    assert "test ping" in log
    assert delivery.webhook_id in log
    assert 'data-testid="delivery-status">delivered<' in log
    assert 'data-testid="delivery-attempts">1<' in log
    assert "HTTP 200" in log
    assert "{&quot;pong&quot;: true}" in log
    # The form offers the same URL again.
    assert f'value="{receiver.url}"' in page


def test_redeliver_sends_the_same_delivery_again_as_a_new_attempt(
    client, people, receiver, sync_queue
):
    receiver.script = [400]
    delivery = finished_job_delivery(people.acme, receiver.url)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.FAILED, 1)

    client.force_login(people.owner)
    page = redeliver(client, delivery).content.decode()
    assert "being sent again" in page
    assert len(receiver.hits) == 2
    assert receiver.hits[0][0]["webhook-id"] == receiver.hits[1][0]["webhook-id"]
    assert receiver.hits[0][1] == receiver.hits[1][1]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 2)
    log = list(delivery.attempt_log.values_list("number", "status_code"))
    assert log == [(1, 400), (2, 200)]
    listed = page.split('data-testid="webhook-log"')[1]
    assert f"job {delivery.job_id}" in listed
    assert "All 2 attempts" in listed


def test_a_redelivery_gets_a_full_round_of_retries(client, people, receiver, sync_queue):
    # Three attempts (the retry delays allow two retries) all fail: the delivery gives up.
    receiver.script = [500, 500, 500, 503, 200]
    delivery = finished_job_delivery(people.acme, receiver.url)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.FAILED, 3)

    client.force_login(people.owner)
    redeliver(client, delivery)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 5)
    codes = list(delivery.attempt_log.values_list("status_code", flat=True))
    assert codes == [500, 500, 500, 503, 200]


def test_a_pending_delivery_is_not_sent_twice(client, people, receiver):
    # No sync queue: the delivery waits for a worker, so it stays pending.
    delivery = finished_job_delivery(people.acme, receiver.url)
    assert delivery.status == WebhookDelivery.Status.PENDING
    client.force_login(people.owner)
    page = redeliver(client, delivery).content.decode()
    assert "still on its way" in page
    delivery.refresh_from_db()
    assert delivery.earlier_attempts == 0
    assert receiver.hits == []


def test_a_member_sees_the_log_but_cannot_ping_redeliver_or_rotate(
    client, people, receiver, sync_queue
):
    delivery = finished_job_delivery(people.acme, receiver.url)
    secret = people.acme.webhook_secret
    client.force_login(people.member)
    page = client.get("/app/settings/").content.decode()
    assert delivery.webhook_id in page
    assert "Redeliver" not in page
    assert 'data-testid="ping-form"' not in page

    assert client.post(f"/app/settings/webhooks/{delivery.pk}/redeliver/").status_code == 403
    pinged = client.post("/app/settings/", {"action": "ping", "url": receiver.url})
    assert pinged.status_code == 403
    assert client.post("/app/settings/", {"action": "rotate"}).status_code == 403
    assert len(receiver.hits) == 1
    assert WebhookDelivery.objects.count() == 1
    people.acme.refresh_from_db()
    assert people.acme.webhook_secret == secret


def test_another_organizations_delivery_is_missing(client, people, receiver, sync_queue):
    delivery = finished_job_delivery(people.acme, receiver.url)
    client.force_login(people.outsider)
    assert client.post(f"/app/settings/webhooks/{delivery.pk}/redeliver/").status_code == 404
    assert client.post("/app/settings/webhooks/999999/redeliver/").status_code == 404
    assert delivery.webhook_id not in client.get("/app/settings/").content.decode()
    assert len(receiver.hits) == 1


def test_a_ping_to_a_private_address_is_refused_before_connecting(
    client, people, receiver, sync_queue, settings
):
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ()
    client.force_login(people.owner)
    # As a job's webhook is at submit: refused at once, with the reason, and nothing sent.
    for url in (receiver.url, "http://10.0.0.1/hook", "http://127.0.0.1:22/"):
        page = ping(client, url).content.decode()
        assert "The webhook cannot be called" in page and "is not allowed" in page
    assert receiver.hits == []
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(
    "url", ["", "ftp://example.com/x", "not a url", "https://x.io/" + "a" * 2000]
)
def test_a_bad_ping_url_is_refused_with_a_message(client, people, sync_queue, url):
    client.force_login(people.owner)
    response = ping(client, url)
    assert response.status_code == 200
    assert "Give an http:// or https:// URL" in response.content.decode()
    assert not WebhookDelivery.objects.exists()


def test_pings_are_limited_per_minute(client, people, receiver, sync_queue):
    client.force_login(people.owner)
    for _ in range(5):
        ping(client, receiver.url)
    page = ping(client, receiver.url).content.decode()
    assert "At most 5 test pings a minute" in page
    assert len(receiver.hits) == 5
