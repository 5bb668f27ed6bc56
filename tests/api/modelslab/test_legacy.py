"""The legacy ModelsLab paths that clients still call, and each family's own fetch.

v3 dreambooth answers as v4 dreambooth, v3 super_resolution as the v6 one (the image in `url`),
model_reload says a visible model is ready, and v4 fetch takes the id in the body. Every
family's `fetch_result` is a route that answers the job.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest
from django.urls import resolve

from generation.models import Job
from tests.helpers import private_copy
from tests.images import noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE = png_base64(noise_image(64, 64))
SMALL_INPUT = png_base64(noise_image(40, 24))


def body(tenant, **fields):
    return {
        "key": tenant.key,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "prompt": f"a harbour at noon {uuid.uuid4().hex[:8]}",
        "width": 64,
        "height": 64,
        **fields,
    }


def upscale_body(tenant, **fields):
    return {
        "key": tenant.key,
        "url": SMALL_INPUT,
        "seed": 1,
        "track_id": uuid.uuid4().hex,
        **fields,
    }


# (submit path, body builder, the family's fetch path, the job kind)
FAMILIES = [
    ("/api/v3/text2img", lambda t: body(t), "/api/v3/fetch/", "text2img"),
    (
        "/api/v3/dreambooth",
        lambda t: body(t, model_id="demo-sd15"),
        "/api/v3/dreambooth/fetch/",
        "text2img",
    ),
    (
        "/api/v3/dreambooth/img2img",
        lambda t: body(t, model_id="demo-sd15", init_image=IMAGE),
        "/api/v3/dreambooth/fetch/",
        "img2img",
    ),
    ("/api/v3/super_resolution", lambda t: upscale_body(t, scale=2), "/api/v3/fetch/", "upscale"),
    (
        "/api/v4/dreambooth",
        lambda t: body(t, model_id="demo-sd15"),
        "/api/v4/dreambooth/fetch/",
        "text2img",
    ),
    (
        "/api/v5/controlnet",
        lambda t: body(t, init_image=IMAGE, controlnet_model="demo-controlnet-canny"),
        "/api/v3/fetch/",
        "controlnet",
    ),
    ("/api/v6/images/text2img", lambda t: body(t), "/api/v6/images/fetch/", "text2img"),
    ("/api/v6/realtime/text2img", lambda t: body(t), "/api/v6/realtime/fetch/", "text2img"),
    (
        "/api/v6/image_editing/super_resolution",
        lambda t: {
            "key": t.key,
            "init_image": SMALL_INPUT,
            "scale": 2,
            "track_id": uuid.uuid4().hex,
        },
        "/api/v6/image_editing/fetch/",
        "upscale",
    ),
    ("/api/v7/images/text-to-image", lambda t: body(t), "/api/v7/images/fetch/", "text2img"),
]


@pytest.mark.parametrize(("path", "make_body", "fetch", "kind"), FAMILIES)
def test_each_familys_fetch_result_is_a_route_that_answers_the_job(
    api, tenant, demo_models, no_wait, path, make_body, fetch, kind
):
    status, data = api.post(path, make_body(tenant))
    assert status == 200, data
    assert data["status"] == "processing", data
    job = Job.objects.get(pk=data["id"])
    assert job.kind == kind
    assert data["fetch_result"] == f"http://testserver{fetch}{job.pk}"

    fetch_path = urlsplit(data["fetch_result"]).path
    assert resolve(fetch_path).kwargs == {"job_id": job.pk}
    status, fetched = api.post(fetch_path, {"key": tenant.key})
    assert status == 200, fetched
    assert (fetched["id"], fetched["status"]) == (job.pk, "processing")
    assert fetched["fetch_result"] == data["fetch_result"]


@pytest.mark.parametrize("fetch", ["/api/v3/dreambooth/fetch/", "/api/v6/image_editing/fetch/"])
def test_the_new_fetch_paths_keep_other_tenants_jobs_private(
    api, tenant, outsider, demo_models, no_wait, fetch
):
    job_id = api.post("/api/v3/text2img", body(tenant))[1]["id"]
    status, data = api.post(f"{fetch}{job_id}", {"key": outsider.key})
    assert status == 404, data
    assert data == {"status": "error", "message": "Request not found"}


def test_v3_dreambooth_requires_a_model_id_like_v4(api, tenant, demo_models, no_wait):
    for path in ("/api/v3/dreambooth", "/api/v4/dreambooth"):
        status, data = api.post(path, body(tenant))
        assert status == 400, data
        assert "model_id" in data["message"]
    status, data = api.post("/api/v3/dreambooth", body(tenant, model_id="no-such-model"))
    assert (status, data["message"]) == (404, "Model id not found")
    assert not Job.objects.exists()


def test_v3_dreambooth_generates_with_the_model_given(api, tenant, demo_models, sync_queue):
    status, data = api.post("/api/v3/dreambooth", body(tenant, model_id="demo-sdxl", seed=3))
    assert status == 200, data
    [image] = outputs(data)
    assert image.shape == (64, 64, 3)
    assert (data["meta"]["model_id"], data["meta"]["seed"]) == ("demo-sdxl", 3)


def test_v3_dreambooth_img2img_needs_its_init_image(api, tenant, demo_models, no_wait):
    status, data = api.post("/api/v3/dreambooth/img2img", body(tenant, model_id="demo-sd15"))
    assert status == 400, data
    assert data["message"]["init_image"] == ["The init_image field is required."]


def test_v3_super_resolution_upscales_the_image_in_url(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        "/api/v3/super_resolution", upscale_body(tenant, scale=2, face_enhance=False)
    )
    assert status == 200, data
    [image] = outputs(data)
    assert image.shape == (48, 80, 3)
    job = Job.objects.get()
    assert (job.kind, job.model.model_id, data["meta"]["scale"]) == (
        "upscale",
        "demo-upscaler-x4",
        2,
    )


def test_v3_super_resolution_asks_for_the_image_as_url(api, tenant, demo_models):
    body = upscale_body(tenant, scale=2, init_image=SMALL_INPUT)
    del body["url"]
    got, data = api.post("/api/v3/super_resolution", body)
    assert got == 400, data
    assert data["message"] == {
        "init_image": ["This route takes the image as url; send it as url, not init_image."]
    }
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"), [("prompt", "a cat"), ("width", 512), ("num_inference_steps", 41)]
)
def test_v3_super_resolution_refuses_generation_fields(api, tenant, demo_models, field, value):
    got, data = api.post("/api/v3/super_resolution", upscale_body(tenant, **{field: value}))
    assert got == 400, data
    assert list(data["message"]) == [field]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "status"),
    [
        ({"face_enhance": True}, "face_enhance", 400),
        ({"face_enhance": "yes"}, "face_enhance", 400),
        ({"url": None}, "url", 400),
        ({"url": "not an image"}, "url", 400),
        ({"url": png_base64(noise_image(4, 16))}, "url", 400),
        ({"url": png_base64(noise_image(600, 16))}, "url", 400),
        ({"scale": 3}, "scale", 400),
        ({"model_id": "demo-sd15"}, None, 404),
    ],
)
def test_v3_super_resolution_refuses_bad_input(api, tenant, demo_models, fields, field, status):
    got, data = api.post("/api/v3/super_resolution", upscale_body(tenant, **fields))
    assert got == status, data
    if field:
        assert list(data["message"]) == [field]
    assert not Job.objects.exists()


@pytest.mark.parametrize("path", ["/api/v4/dreambooth/model_reload", "/api/v6/images/model_reload"])
def test_model_reload_answers_like_modelslab_for_a_visible_model(api, tenant, demo_models, path):
    own = private_copy("demo-sd15", tenant.org)
    for model_id in ("demo-sd15", own):
        status, data = api.post(path, {"key": tenant.key, "model_id": model_id})
        assert status == 200, data
        assert data == {"status": "success", "message": "Model reloaded", "model_id": model_id}


@pytest.mark.parametrize("path", ["/api/v4/dreambooth/model_reload", "/api/v6/images/model_reload"])
def test_model_reload_hides_models_the_caller_cannot_see(api, tenant, outsider, demo_models, path):
    theirs = private_copy("demo-sd15", outsider.org)
    for model_id in (theirs, "no-such-model"):
        status, data = api.post(path, {"key": tenant.key, "model_id": model_id})
        assert status == 404, data
        assert data == {"status": "error", "message": "Model id not found"}
    status, data = api.post(path, {"key": tenant.key})
    assert status == 400, data
    assert data["message"] == {"model_id": ["The model_id field is required."]}
    status, data = api.post(path, {"model_id": "demo-sd15"})
    assert status == 401, data


def test_v4_fetch_takes_the_request_id_in_the_body(api, tenant, outsider, demo_models, sync_queue):
    created = api.post("/api/v4/dreambooth", body(tenant, model_id="demo-sd15"))[1]
    for request_id in (created["id"], str(created["id"])):
        status, data = api.post(
            "/api/v4/dreambooth/fetch", {"key": tenant.key, "request_id": request_id}
        )
        assert status == 200, data
        assert (data["id"], data["status"]) == (created["id"], "success")
        assert [u.split("?")[0] for u in data["output"]] == [
            u.split("?")[0] for u in created["output"]
        ]

    status, data = api.post(
        "/api/v4/dreambooth/fetch", {"key": outsider.key, "request_id": created["id"]}
    )
    assert (status, data["message"]) == (404, "Request not found")
    status, data = api.post("/api/v4/dreambooth/fetch", {"key": tenant.key})
    assert status == 400, data
    assert data["message"] == {"request_id": ["The request_id field is required."]}
