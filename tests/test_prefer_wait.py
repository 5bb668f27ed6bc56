"""`Prefer: wait=N` (RFC 7240): the caller picks the blocking wait, within the server's maximum."""

from __future__ import annotations

import time
from typing import Any

import pytest

from billing import ledger
from generation.models import Job
from generation.service import prefer_wait

pytestmark = pytest.mark.django_db(transaction=True)

TEXT2IMG = "/api/v3/text2img"


def modelslab(tenant: Any, **fields: Any) -> dict[str, Any]:
    return {"key": tenant.key, "prompt": "a lighthouse", "width": 64, "height": 64, **fields}


def post(client: Any, path: str, body: dict[str, Any], **headers: str) -> tuple[Any, float]:
    """The response and the seconds it took."""
    started = time.monotonic()
    response = client.post(path, body, content_type="application/json", headers=headers)
    return response, time.monotonic() - started


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=10", 10),
        ("WAIT = 7", 7),
        ('wait="5"', 5),
        ("respond-async, wait=10", 10),
        ("wait=3; foo=bar", 3),
        ("wait=1, wait=9", 1),
        ("wait=0", 0),
        ("wait=" + "9" * 50, 10**9),
        # Leading zeros are not a long wait: ten of them are no wait at all.
        ("wait=0000000000", 0),
        ("wait=00000000007", 7),
        ("wait=abc", None),
        ("wait=-1", None),
        ("wait=1.5", None),
        ("wait=", None),
        ("handling=lenient", None),
        ("", None),
    ],
)
def test_the_wait_preference_is_read_as_rfc_7240_writes_it(header, seconds):
    assert prefer_wait(header) == seconds


def test_modelslab_answers_at_once_when_the_client_prefers_no_wait(
    client, settings, tenant, demo_model
):
    settings.PICTOR_SYNC_WAIT = 30  # no worker runs: without the header this would wait 30 s

    response, took = post(client, TEXT2IMG, modelslab(tenant), Prefer="wait=0")

    assert response.status_code == 200
    assert response.json()["status"] == "processing"
    assert response["Preference-Applied"] == "wait=0"
    assert took < 10


def test_modelslab_waits_as_long_as_the_client_prefers(client, settings, tenant, demo_model):
    settings.PICTOR_SYNC_WAIT = 0

    response, took = post(client, TEXT2IMG, modelslab(tenant), Prefer="wait=2")

    assert response.status_code == 200
    assert response.json()["status"] == "processing"
    assert response["Preference-Applied"] == "wait=2"
    assert took >= 2


def test_a_wait_past_the_maximum_is_clamped(client, settings, tenant, demo_model):
    settings.PICTOR_SYNC_WAIT = 0
    settings.PICTOR_BLOCKING_WAIT = 1

    response, took = post(client, TEXT2IMG, modelslab(tenant), Prefer="wait=86400")

    assert response.status_code == 200
    assert response["Preference-Applied"] == "wait=1"
    assert 1 <= took < 10


@pytest.mark.parametrize("header", ["wait=-1", "wait=soon", "wait=1.5"])
def test_a_bad_wait_is_ignored(client, settings, tenant, demo_model, header):
    settings.PICTOR_SYNC_WAIT = 0

    response, took = post(client, TEXT2IMG, modelslab(tenant, prompt=header), Prefer=header)

    assert response.status_code == 200
    assert response.json()["status"] == "processing"
    assert "Preference-Applied" not in response
    assert took < 10


def test_modelslab_instant_response_wins_over_a_wait(client, settings, tenant, demo_model):
    settings.PICTOR_SYNC_WAIT = 30

    body = modelslab(tenant, instant_response=True)
    response, took = post(client, TEXT2IMG, body, Prefer="wait=20")

    assert response.json()["status"] == "processing"
    assert "Preference-Applied" not in response
    assert took < 10


def test_a_finished_job_answers_with_the_preference_applied(
    client, settings, tenant, demo_model, sync_queue
):
    response, _took = post(client, TEXT2IMG, modelslab(tenant), Prefer="wait=3")

    assert response.json()["status"] == "success"
    assert response["Preference-Applied"] == "wait=3"


def test_dan_answers_at_once_when_the_client_prefers_no_wait(client, settings, tenant, demo_model):
    settings.PICTOR_SYNC_WAIT = 30
    body = {"prompt": "a harbour", "width": 64, "height": 64}

    response, took = post(
        client,
        "/api/sd/txt2img",
        body,
        Authorization=f"Bearer {tenant.key}",
        Prefer="wait=0",
    )

    assert response.status_code == 200
    assert response.json()["data"]["status"] == 0
    assert response["Preference-Applied"] == "wait=0"
    assert took < 10


def test_a_blocking_format_takes_a_wait_as_its_deadline_of_at_least_a_second(
    client, settings, tenant, demo_model
):
    settings.PICTOR_BLOCKING_WAIT = 300  # no worker runs: without the header, 5 minutes
    before = ledger.balance(tenant.org)
    body = {"model_name": "demo-sd15", "prompt": "a fox", "width": 64, "height": 64}

    response, took = post(
        client,
        "/v1/image/generation",
        body,
        Authorization=f"Bearer {tenant.key}",
        Prefer="wait=0",
    )

    # Hyperbolic has no answer for a job still queued: past the wait it is canceled, unpaid.
    assert response.status_code == 504
    assert response.json()["type"] == "timeout_error"
    assert response["Preference-Applied"] == "wait=1"
    assert 1 <= took < 10
    assert Job.objects.get().status == Job.Status.CANCELED
    assert ledger.balance(tenant.org) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sd/demo-sd15", {"prompt": "a fox", "width": 64, "height": 64, "steps": 4}),
        ("/sdapi/v1/txt2img", {"prompt": "a fox", "width": 64, "height": 64, "steps": 4}),
    ],
    ids=["synapse", "a1111"],
)
def test_blocking_formats_answer_the_image_within_a_chosen_wait(
    client, tenant, demo_model, sync_queue, path, body
):
    response, _took = post(
        client, path, body, Authorization=f"Bearer {tenant.key}", Prefer="wait=30"
    )

    assert response.status_code == 200, response.content
    assert response["Preference-Applied"] == "wait=30"
    assert Job.objects.get().status == Job.Status.SUCCESS
