"""`Idempotency-Key` on every format's submit: a retry gets the original job, charged once."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import pytest
from PIL import Image

from accounts.auth import ANONYMOUS_KEY
from billing import ledger
from billing.models import CreditEntry
from generation.models import Job
from tests.helpers import unsigned
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

TEXT2IMG = "/api/v3/text2img"
TXT2IMG = "/sdapi/v1/txt2img"


def key_header(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def modelslab(tenant: Any, **fields: Any) -> dict[str, Any]:
    return {"key": tenant.key, "prompt": "a lighthouse", "width": 64, "height": 64, **fields}


def debits(org: Any) -> int:
    return CreditEntry.objects.filter(organization=org, kind=CreditEntry.Kind.DEBIT).count()


def test_it_answers_a_retry_with_the_original_job_and_charges_once(
    api, tenant, demo_model, sync_queue
):
    key = str(uuid.uuid4())
    status, first = api.post(TEXT2IMG, modelslab(tenant, seed=7), **key_header(key))
    assert status == 200, first
    assert first["status"] == "success"
    balance = type(tenant.org).objects.get(pk=tenant.org.pk).credit_balance

    # Within the 30 s of the duplicate filter, which refuses this body without a key.
    status, again = api.post(TEXT2IMG, modelslab(tenant, seed=7), **key_header(key))

    assert status == 200, again
    assert again["id"] == first["id"]
    assert again["status"] == "success"
    assert again["meta"]["seed"] == 7
    assert len(again["output"]) == 1
    assert Job.objects.filter(organization=tenant.org).count() == 1
    assert debits(tenant.org) == 1
    assert type(tenant.org).objects.get(pk=tenant.org.pk).credit_balance == balance


def test_a_retry_of_a_queued_job_answers_its_current_state(api, tenant, demo_model, no_wait):
    key = "order-1042"
    status, first = api.post(TEXT2IMG, modelslab(tenant), **key_header(key))
    assert (status, first["status"]) == (200, "processing")

    status, again = api.post(TEXT2IMG, modelslab(tenant), **key_header(key))

    assert status == 200, again
    assert (again["status"], again["id"]) == ("processing", first["id"])
    assert again["fetch_result"] == first["fetch_result"]
    assert debits(tenant.org) == 1


def test_the_same_body_without_a_key_is_still_refused_as_a_duplicate(
    api, tenant, demo_model, no_wait
):
    assert api.post(TEXT2IMG, modelslab(tenant))[0] == 200
    status, data = api.post(TEXT2IMG, modelslab(tenant))
    assert (status, data["message"]) == (429, "Rate limit exceeded")


def test_the_same_body_under_a_new_key_is_a_new_job(api, tenant, demo_model, no_wait):
    status, first = api.post(TEXT2IMG, modelslab(tenant), **key_header("one"))
    status2, second = api.post(TEXT2IMG, modelslab(tenant), **key_header("two"))

    assert (status, status2) == (200, 200)
    assert first["id"] != second["id"]
    assert debits(tenant.org) == 2
    assert set(Job.objects.values_list("idempotency_key", flat=True)) == {"one", "two"}


def test_a_key_reused_with_another_body_is_a_422(api, tenant, demo_model, no_wait):
    assert api.post(TEXT2IMG, modelslab(tenant), **key_header("k1"))[0] == 200

    status, data = api.post(TEXT2IMG, modelslab(tenant, prompt="a harbour"), **key_header("k1"))

    assert status == 422
    assert data == {
        "status": "error",
        "message": "This Idempotency-Key was used for a different request; send a new key for "
        "a new request.",
    }
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1


def test_a_key_reused_on_another_endpoint_is_a_422(api, tenant, demo_model, no_wait):
    assert api.post(TEXT2IMG, modelslab(tenant), **key_header("k2"))[0] == 200

    status, data = api.post("/api/v6/images/text2img", modelslab(tenant), **key_header("k2"))

    assert status == 422, data
    assert Job.objects.count() == 1


def test_keys_belong_to_one_organization(api, tenant, outsider, demo_model, no_wait):
    status, mine = api.post(TEXT2IMG, modelslab(tenant), **key_header("shared"))
    status2, theirs = api.post(TEXT2IMG, modelslab(outsider), **key_header("shared"))

    assert (status, status2) == (200, 200)
    assert mine["id"] != theirs["id"]
    assert Job.objects.get(pk=theirs["id"]).organization == outsider.org


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "caf\u00e9", "tab\there"],
    ids=["empty", "256 characters", "not ASCII", "control character"],
)
def test_a_key_out_of_bounds_is_a_400_and_queues_nothing(api, tenant, demo_model, no_wait, key):
    status, data = api.post(TEXT2IMG, modelslab(tenant), **key_header(key))

    assert status == 400, data
    assert data == {
        "status": "error",
        "message": {
            "Idempotency-Key": ["The Idempotency-Key must be 1 to 255 printable ASCII characters."]
        },
    }
    assert not Job.objects.exists()


def test_a_key_of_255_characters_is_accepted(api, tenant, demo_model, no_wait):
    key = "k" * 255
    status, first = api.post(TEXT2IMG, modelslab(tenant), **key_header(key))
    status2, again = api.post(TEXT2IMG, modelslab(tenant), **key_header(key))
    assert (status, status2) == (200, 200)
    assert again["id"] == first["id"]


def test_a_request_refused_for_credits_leaves_the_key_free(api, tenant, demo_model, no_wait):
    ledger.set_balance(tenant.org, 0)
    status, data = api.post(TEXT2IMG, modelslab(tenant), **key_header("paid-later"))
    assert (status, data["message"]) == (402, "Insufficient credits")

    ledger.set_balance(tenant.org, 10)
    status, data = api.post(TEXT2IMG, modelslab(tenant), **key_header("paid-later"))

    assert (status, data["status"]) == (200, "processing")
    assert debits(tenant.org) == 1


# The other wire formats: a retry answers the same job in the format's own shape ------------------


def test_dan_answers_a_retry_with_the_same_task(api, tenant, demo_model, no_wait):
    headers = {**bearer(tenant.key), **key_header("dan-1")}
    body = {"prompt": "a harbour at dawn", "width": 64, "height": 64}
    status, first = api.post("/api/sd/txt2img", body, **headers)
    status2, again = api.post("/api/sd/txt2img", body, **headers)

    assert (status, status2) == (200, 200), again
    assert again["data"]["taskId"] == first["data"]["taskId"]
    assert debits(tenant.org) == 1


def test_dan_refuses_a_key_with_the_public_anonymous_key(api, demo_model, no_wait, settings):
    settings.PICTOR_ANONYMOUS_KEY_ENABLED = True
    headers = {**bearer(ANONYMOUS_KEY), **key_header("anon-1")}
    status, data = api.post("/api/sd/txt2img", {"prompt": "a fox", "width": 64}, **headers)

    assert status == 400
    assert data == {
        "code": 400,
        "data": None,
        "message": "Idempotency-Key: An Idempotency-Key needs your own API key, not the public "
        "one.",
    }
    assert not Job.objects.exists()


def test_hyperbolic_answers_a_retry_with_the_same_images(api, tenant, demo_model, sync_queue):
    headers = {**bearer(tenant.key), **key_header("hyp-1")}
    body = {"model_name": "demo-sd15", "prompt": "a fox", "width": 64, "height": 64, "steps": 4}
    status, first = api.post("/v1/image/generation", body, **headers)
    status2, again = api.post("/v1/image/generation", body, **headers)

    assert (status, status2) == (200, 200), again
    assert again["images"] == first["images"]
    base64.b64decode(again["images"][0]["image"], validate=True)
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1


def test_hyperbolic_answers_a_bad_key_in_its_error_shape(api, tenant, demo_model, sync_queue):
    headers = {**bearer(tenant.key), **key_header("x" * 300)}
    body = {"model_name": "demo-sd15", "prompt": "a fox", "width": 64, "height": 64}
    status, data = api.post("/v1/image/generation", body, **headers)

    assert status == 400
    assert (data["object"], data["param"]) == ("error", "Idempotency-Key")
    assert data["type"] == "invalid_request_error"


def test_synapse_answers_a_retry_with_the_same_image(api, tenant, demo_model, sync_queue):
    headers = {**bearer(tenant.key), **key_header("syn-1")}
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 4}
    status, first = api.post("/sd/demo-sd15", body, **headers)
    status2, again = api.post("/sd/demo-sd15", body, **headers)

    assert (status, status2) == (200, 200), again
    assert again["data"] == first["data"]
    assert debits(tenant.org) == 1


def test_synapse_answers_a_reused_key_in_its_error_shape(api, tenant, demo_model, sync_queue):
    headers = {**bearer(tenant.key), **key_header("syn-2")}
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 4}
    assert api.post("/sd/demo-sd15", body, **headers)[0] == 200

    status, data = api.post("/sd/demo-sd15", {**body, "prompt": "a cat"}, **headers)

    assert status == 422
    assert data == {
        "error": "This Idempotency-Key was used for a different request; send a new key for a "
        "new request."
    }


def test_a1111_answers_a_retry_with_the_same_images(api, tenant, demo_model, sync_queue):
    headers = {**bearer(tenant.key), **key_header("webui-1")}
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 4, "seed": 3}
    status, first = api.post("/sdapi/v1/txt2img", body, **headers)
    status2, again = api.post("/sdapi/v1/txt2img", body, **headers)

    assert (status, status2) == (200, 200), again
    assert again["images"] == first["images"]
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1


def test_a_retry_of_a_blocking_request_that_timed_out_answers_the_same_timeout(
    api, tenant, demo_model
):
    # No worker runs: the first request's job is canceled at its deadline, and refunded.
    headers = {**bearer(tenant.key), **key_header("syn-late"), "Prefer": "wait=1"}
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 4}
    first = api.post("/sd/demo-sd15", body, **headers)
    again = api.post("/sd/demo-sd15", body, **headers)

    assert first[0] == again[0] == 504, again
    assert again[1] == first[1]
    assert Job.objects.get().status == Job.Status.CANCELED
    assert ledger.balance(tenant.org) == tenant.org.plan.monthly_credits


def test_a1111_answers_a_retry_of_an_interrupted_request_as_it_answered_the_request(
    api, tenant, demo_model, monkeypatch
):
    from generation import jobs, service

    waited = service.wait_for

    def interrupted_while_waiting(job, seconds):
        # No worker runs: /sdapi/v1/interrupt cancels the job while the request waits for it.
        if not job.replayed:
            jobs.cancel(job)
        return waited(job, seconds)

    monkeypatch.setattr(service, "wait_for", interrupted_while_waiting)
    headers = {**bearer(tenant.key), **key_header("webui-stopped")}
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 4, "seed": 3}
    first = api.post(TXT2IMG, body, **headers)
    again = api.post(TXT2IMG, body, **headers)

    assert first[0] == again[0] == 200, (first, again)
    assert first[1]["images"] == again[1]["images"] == []
    assert Job.objects.get().status == Job.Status.CANCELED
    assert ledger.balance(tenant.org) == tenant.org.plan.monthly_credits


def test_a_retry_never_cancels_the_job_of_the_request_it_repeats(settings, tenant, demo_model):
    from generation import service, submission

    job = Job.objects.create(organization=tenant.org, model=demo_model, params={"samples": 1})
    settings.PICTOR_BLOCKING_WAIT = 0.2
    # As submit answers a retry whose Idempotency-Key names this job.
    retried = service.Replayed(Job.objects.get(pk=job.pk)).job
    with pytest.raises(submission.GenerationStillRunning):
        submission.wait_until_done(retried)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    # The request that made the job still cancels it at its own deadline.
    with pytest.raises(submission.GenerationTimedOut):
        submission.wait_until_done(Job.objects.get(pk=job.pk))
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELED


def test_every_request_waiting_on_one_job_wakes_when_it_finishes(settings):
    import threading
    import time

    from generation import notify

    settings.REDIS_URL = "redis://127.0.0.1:6379/14"
    job_id = 10**12 + uuid.uuid4().int % 10**9
    woke: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        if notify.block_until_finished(job_id, 20):
            woke.append(time.monotonic() - started)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)
    notify.job_finished(job_id)
    for waiter in waiters:
        waiter.join(30)
    # One announcement wakes all three, not one of them with the others left to their deadline.
    assert len(woke) == 3 and max(woke) < 10, woke


def test_a1111_answers_a_bad_key_in_its_error_shape(api, tenant, demo_model, sync_queue):
    headers = {**bearer(tenant.key), **key_header("")}
    status, data = api.post("/sdapi/v1/txt2img", {"prompt": "a fox"}, **headers)

    assert status == 400
    assert data["error"] == "ValidationError"
    assert "Idempotency-Key" in data["detail"]
    assert not Job.objects.exists()


# OpenAI: generations take JSON; edits and variations a form, keyed on its fields and files -----


def png_upload(image: Image.Image) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    buffer.name = "image.png"
    return buffer


def openai_form(client: Any, path: str, key: str, tenant: Any, **fields: Any) -> tuple[int, Any]:
    """(status, body) of a multipart POST with an Idempotency-Key; image values are PIL images."""
    data = {
        name: png_upload(value) if isinstance(value, Image.Image) else value
        for name, value in fields.items()
    }
    headers = {**bearer(tenant.key), **key_header(key)}
    response = client.post(path, data=data, headers=headers)
    return response.status_code, response.json()


REUSED_IN_OPENAI_SHAPE = {
    "error": {
        "message": "This Idempotency-Key was used for a different request; send a new key for "
        "a new request.",
        "type": "invalid_request_error",
        "param": None,
        "code": "idempotency_key_reused",
    }
}


def test_openai_generations_answers_a_retry_with_the_same_images(
    api, tenant, demo_model, sync_queue
):
    headers = {**bearer(tenant.key), **key_header("oai-1")}
    body = {"prompt": "a fox", "size": "64x64", "quality": "low", "response_format": "b64_json"}
    status, first = api.post("/v1/images/generations", body, **headers)
    status2, again = api.post("/v1/images/generations", body, **headers)

    assert (status, status2) == (200, 200), again
    assert again["data"] == first["data"]
    assert again["created"] == first["created"]
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1

    status, data = api.post("/v1/images/generations", {**body, "prompt": "a cat"}, **headers)

    assert (status, data) == (422, REUSED_IN_OPENAI_SHAPE)
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/v1/images/edits", {"prompt": "a stone bridge", "quality": "low"}),
        ("/v1/images/variations", {}),
    ],
    ids=["edits", "variations"],
)
def test_openai_uploads_answer_a_retry_with_the_same_job(
    client, tenant, demo_model, sync_queue, path, fields
):
    form = {**fields, "size": "64x64"}
    status, first = openai_form(client, path, "up-1", tenant, image=noise_image(64, 64), **form)
    status2, again = openai_form(client, path, "up-1", tenant, image=noise_image(64, 64), **form)

    assert (status, status2) == (200, 200), again
    assert [unsigned(item["url"]) for item in again["data"]] == [
        unsigned(item["url"]) for item in first["data"]
    ]
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1

    # The same fields with another picture: the key names another request.
    status, data = openai_form(client, path, "up-1", tenant, image=noise_image(64, 64, 1), **form)

    assert (status, data) == (422, REUSED_IN_OPENAI_SHAPE)
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1


# A1111 extras: an upscaler model's jobs, one per image of a batch ("key", then "key#1", ...) ----


def test_a1111_extra_single_image_answers_a_retry_with_the_same_image(
    api, tenant, demo_models, sync_queue
):
    headers = {**bearer(tenant.key), **key_header("extras-1")}
    body = {"image": png_base64(noise_image(40, 24)), "upscaler_1": "demo-upscaler-x4"}
    status, first = api.post("/sdapi/v1/extra-single-image", body, **headers)
    status2, again = api.post("/sdapi/v1/extra-single-image", body, **headers)

    assert (status, status2) == (200, 200), again
    assert again["image"] == first["image"]
    assert Job.objects.get().idempotency_key == "extras-1"
    assert debits(tenant.org) == 1

    other = {**body, "image": png_base64(noise_image(40, 24, seed=1))}
    status, data = api.post("/sdapi/v1/extra-single-image", other, **headers)

    assert status == 422, data
    assert data["detail"] == (
        "This Idempotency-Key was used for a different request; send a new key for a new request."
    )
    assert Job.objects.count() == 1
    assert debits(tenant.org) == 1


def test_a1111_extra_batch_images_answers_a_retry_with_the_same_jobs(
    api, tenant, demo_models, sync_queue
):
    headers = {**bearer(tenant.key), **key_header("batch-1")}
    images = [noise_image(40, 24, seed=1), noise_image(24, 24, seed=2)]
    body = {
        "imageList": [{"data": png_base64(im), "name": f"{n}.png"} for n, im in enumerate(images)],
        "upscaler_1": "demo-upscaler-x4",
    }
    status, first = api.post("/sdapi/v1/extra-batch-images", body, **headers)
    status2, again = api.post("/sdapi/v1/extra-batch-images", body, **headers)

    assert (status, status2) == (200, 200), again
    assert again["images"] == first["images"]
    keys = list(Job.objects.order_by("pk").values_list("idempotency_key", flat=True))
    assert keys == ["batch-1", "batch-1#1"]
    assert debits(tenant.org) == 2

    # Another batch under the key, whether its first image differs or only a later one.
    items = body["imageList"]
    third = {"data": png_base64(noise_image(24, 24, seed=3)), "name": "2.png"}
    for other in ([items[1], items[0]], [items[0], third]):
        status, data = api.post(
            "/sdapi/v1/extra-batch-images", {**body, "imageList": other}, **headers
        )

        assert status == 422, data
        assert Job.objects.count() == 2
        assert debits(tenant.org) == 2
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.SUCCESS}
