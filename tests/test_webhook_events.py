"""Webhook events a client chooses: start, progress (25/50/75 %) and completed (the default)."""

from __future__ import annotations

from typing import Any

import pytest

from generation import webhooks
from generation.models import Job, WebhookDelivery
from tests import test_webhooks
from tests.helpers import unsigned
from tests.test_webhooks import Receiver, verify

# The real HTTP receiver of the completion webhook tests.
receiver = test_webhooks.receiver

pytestmark = pytest.mark.django_db(transaction=True)

TEXT2IMG = "/api/v3/text2img"
CHOOSE = "Choose among: start, progress, completed."


def submit(api: Any, tenant: Any, **fields: Any) -> tuple[int, Any]:
    return api.post(
        TEXT2IMG,
        {"key": tenant.key, "prompt": "a lighthouse", "width": 64, "height": 64, **fields},
    )


def test_a_webhook_is_called_on_completion_only_by_default(
    api, tenant, demo_model, sync_queue, receiver: Receiver
):
    status, data = submit(api, tenant, webhook=receiver.url)

    assert status == 200, data
    [hit] = receiver.hits
    payload = verify(tenant.org, hit)
    assert payload["event"] == "completed"
    assert payload["status"] == "success"
    assert payload["id"] == data["id"]
    assert Job.objects.get().webhook_events == ["completed"]


def test_every_event_is_sent_in_order_signed_and_once(
    api, tenant, demo_model, sync_queue, receiver: Receiver
):
    status, data = submit(
        api,
        tenant,
        webhook=receiver.url,
        webhook_events=["start", "progress", "completed"],
        num_inference_steps=21,
    )

    assert status == 200, data
    payloads = [verify(tenant.org, hit) for hit in receiver.hits]
    assert [p["event"] for p in payloads] == [
        "start",
        "progress",
        "progress",
        "progress",
        "completed",
    ]
    assert {p["id"] for p in payloads} == {data["id"]}
    assert payloads[0]["status"] == "processing"
    assert payloads[0]["fetch_result"].endswith(f"/api/v3/fetch/{data['id']}")
    # Each progress event once its quarter of the 21 steps was passed (6, 11 and 16 steps).
    assert [p["progress"] for p in payloads[1:4]] == [
        round(6 / 21, 3),
        round(11 / 21, 3),
        round(16 / 21, 3),
    ]
    assert payloads[-1]["status"] == "success"
    assert list(map(unsigned, payloads[-1]["output"])) == list(map(unsigned, data["output"]))
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 5
    deliveries = WebhookDelivery.objects.order_by("pk").values_list("event", "progress", "status")
    assert list(deliveries) == [
        ("start", 0, "delivered"),
        ("progress", 25, "delivered"),
        ("progress", 50, "delivered"),
        ("progress", 75, "delivered"),
        ("completed", 0, "delivered"),
    ]


def test_events_as_comma_text_choose_some(api, tenant, demo_model, sync_queue, receiver: Receiver):
    status, data = submit(api, tenant, webhook=receiver.url, webhook_events=" Start ,completed")

    assert status == 200, data
    events = [verify(tenant.org, hit)["event"] for hit in receiver.hits]
    assert events == ["start", "completed"]
    assert Job.objects.get().webhook_events == ["start", "completed"]


def test_progress_alone_is_never_called_on_completion(
    api, tenant, demo_model, sync_queue, receiver: Receiver
):
    status, data = submit(api, tenant, webhook=receiver.url, webhook_events=["progress"])

    assert status == 200, data
    events = [verify(tenant.org, hit)["event"] for hit in receiver.hits]
    assert events == ["progress", "progress", "progress"]


def test_a_retry_of_a_failed_delivery_sends_the_same_event(
    api, tenant, demo_model, sync_queue, receiver: Receiver
):
    receiver.answer(500, 200)
    status, _data = submit(api, tenant, webhook=receiver.url, webhook_events="start")

    assert status == 200
    assert [verify(tenant.org, hit)["event"] for hit in receiver.hits] == ["start", "start"]
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 1


def test_a_requeued_job_starts_and_progresses_with_one_webhook_each(
    api, tenant, demo_model, no_wait, receiver: Receiver
):
    status, data = submit(
        api, tenant, webhook=receiver.url, webhook_events="start,progress,completed"
    )
    assert (status, data["status"]) == (200, "processing")
    job = Job.objects.get()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.PROCESSING)

    # A job the reaper requeued is claimed, started and passes 25 % a second time.
    for _ in range(2):
        webhooks.job_started(job.pk)
        webhooks.job_progressed(job.pk, 1)

    deliveries = WebhookDelivery.objects.order_by("pk")
    assert list(deliveries.values_list("event", "progress")) == [("start", 0), ("progress", 25)]
    assert [d.payload["event"] for d in deliveries] == ["start", "progress"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            ["start", "finished"],
            "Unknown event 'finished'; choose among: start, progress, completed.",
        ),
        ("start,done", "Unknown event 'done'; " + CHOOSE.lower()),
        (7, "Send a list of event names, or them separated by commas."),
        ([{"event": "start"}], CHOOSE),
        (["start"] * 4, CHOOSE),
        ("start," * 30, "Send at most 100 characters."),
    ],
    ids=["unknown in a list", "unknown in text", "a number", "not names", "too many", "too long"],
)
def test_bad_events_are_a_400_naming_the_field(api, tenant, demo_model, no_wait, value, message):
    status, data = submit(api, tenant, webhook="https://example.com/hook", webhook_events=value)

    assert status == 400
    assert data == {"status": "error", "message": {"webhook_events": [message]}}
    assert not Job.objects.exists()


def test_events_without_a_webhook_call_nothing(api, tenant, demo_model, sync_queue):
    status, data = submit(api, tenant, webhook_events=["start", "completed"])

    assert (status, data["status"]) == (200, "success")
    assert not WebhookDelivery.objects.exists()
