"""The ModelsLab families (docs/architecture.md): v3, v4 dreambooth, v5, v6 images and realtime, v7.

Every family takes the same body and answers in the same shape; each points `fetch_result` at
its own fetch path. The engine's kinds are tested in test_<kind>.py beside this file; here
the contract.
"""

from __future__ import annotations

import base64
import io
import uuid

import pytest
from PIL import Image

from generation.models import AIModel, Job
from tests.images import centre_mask, noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE = png_base64(noise_image(64, 64))
MASK = png_base64(centre_mask(64, 64))
TEXT = {}
IMG2IMG = {"init_image": IMAGE}
INPAINT = {"init_image": IMAGE, "mask_image": MASK}
CONTROL = {"init_image": IMAGE, "controlnet_model": "demo-controlnet-canny"}
# (generation path, extra fields, the family's fetch path, the job kind)
FAMILIES = [
    ("/api/v3/text2img", TEXT, "/api/v3/fetch/", "text2img"),
    ("/api/v3/img2img", IMG2IMG, "/api/v3/fetch/", "img2img"),
    ("/api/v3/inpaint", INPAINT, "/api/v3/fetch/", "inpaint"),
    ("/api/v4/dreambooth", {"model_id": "demo-sd15"}, "/api/v4/dreambooth/fetch/", "text2img"),
    ("/api/v5/controlnet", CONTROL, "/api/v3/fetch/", "controlnet"),
    ("/api/v6/images/text2img", TEXT, "/api/v6/images/fetch/", "text2img"),
    ("/api/v6/images/img2img", IMG2IMG, "/api/v6/images/fetch/", "img2img"),
    ("/api/v6/images/inpaint", INPAINT, "/api/v6/images/fetch/", "inpaint"),
    ("/api/v6/images/controlnet", CONTROL, "/api/v6/images/fetch/", "controlnet"),
    ("/api/v6/realtime/text2img", TEXT, "/api/v6/realtime/fetch/", "text2img"),
    ("/api/v6/realtime/img2img", IMG2IMG, "/api/v6/realtime/fetch/", "img2img"),
    ("/api/v6/realtime/inpaint", INPAINT, "/api/v6/realtime/fetch/", "inpaint"),
    ("/api/v7/images/text-to-image", TEXT, "/api/v7/images/fetch/", "text2img"),
    ("/api/v7/images/image-to-image", IMG2IMG, "/api/v7/images/fetch/", "img2img"),
    ("/api/v7/images/inpaint", INPAINT, "/api/v7/images/fetch/", "inpaint"),
]


def body(tenant, **fields):
    return {
        "key": tenant.key,
        "prompt": f"a harbour at noon {uuid.uuid4().hex[:8]}",
        "width": 64,
        "height": 64,
        **fields,
    }


@pytest.mark.parametrize(("path", "extra", "fetch", "kind"), FAMILIES)
def test_it_queues_each_family_and_points_at_its_fetch(
    api, tenant, demo_models, no_wait, path, extra, fetch, kind
):
    status, data = api.post(path, body(tenant, **extra))
    assert status == 200, data
    assert data["status"] == "processing"
    job = Job.objects.get(pk=data["id"])
    assert job.kind == kind
    assert data["fetch_result"] == f"http://testserver{fetch}{job.pk}"
    assert [link.split("?", 1)[0] for link in data["future_links"]] == [
        f"http://testserver/files/generations/{tenant.org.pk}/{job.pk}/0.png"
    ]

    # The family's fetch path answers for the job; the caller's key may travel in a header.
    status, fetched = api.post(f"{fetch}{job.pk}", {}, key=tenant.key)
    assert status == 200, fetched
    assert fetched["id"] == job.pk
    assert fetched["fetch_result"] == data["fetch_result"]


@pytest.mark.parametrize(
    "path", ["/api/v6/images/text2img", "/api/v7/images/text-to-image", "/api/v6/realtime/text2img"]
)
def test_it_generates_an_image_in_each_new_family(api, tenant, demo_models, sync_queue, path):
    status, data = api.post(path, body(tenant, seed=5))
    assert status == 200, data
    assert data["status"] == "success"
    [image] = outputs(data)
    assert image.shape == (64, 64, 3)
    assert data["meta"]["seed"] == 5
    assert data["meta"]["model_id"] == "demo-sd15"


def test_realtime_answers_base64_when_asked_with_a_boolean(api, tenant, demo_models, sync_queue):
    status, data = api.post("/api/v6/realtime/text2img", body(tenant, base64=True))
    assert status == 200, data
    [encoded] = data["output"]
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert image.format == "PNG"
    assert image.size == (64, 64)


def test_realtime_refuses_a_model_id(api, tenant, demo_models, no_wait):
    status, data = api.post("/api/v6/realtime/text2img", body(tenant, model_id="demo-sdxl"))
    assert status == 400
    assert "default model" in data["message"]["model_id"][0]
    assert not Job.objects.exists()


def test_v6_images_use_the_model_id_given(api, tenant, demo_models, no_wait):
    status, data = api.post("/api/v6/images/text2img", body(tenant, model_id="demo-sdxl"))
    assert status == 200, data
    assert Job.objects.get().model.model_id == "demo-sdxl"


def test_v6_fetch_takes_the_request_id_in_the_body(api, tenant, demo_models, sync_queue):
    job_id = api.post("/api/v6/images/text2img", body(tenant))[1]["id"]
    for request_id in (job_id, str(job_id)):
        status, data = api.post(
            "/api/v6/images/fetch", {"key": tenant.key, "request_id": request_id}
        )
        assert status == 200, data
        assert data["status"] == "success"
        assert data["id"] == job_id
        assert len(data["output"]) == 1


@pytest.mark.parametrize(
    ("request_id", "message"),
    [
        (None, "The request_id field is required."),
        ("", "The request_id field is required."),
        ("abc", "The request_id must be a request's numeric id."),
        (-3, "The request_id must be a request's numeric id."),
        (True, "The request_id must be a request's numeric id."),
        # A digit to str.isdigit(), not to int().
        ("²", "The request_id must be a request's numeric id."),
        ("1²", "The request_id must be a request's numeric id."),
    ],
)
def test_v6_fetch_names_a_bad_request_id(api, tenant, request_id, message):
    fields = {} if request_id is None else {"request_id": request_id}
    status, data = api.post("/api/v6/images/fetch", {"key": tenant.key, **fields})
    assert status == 400
    assert data == {"status": "error", "message": {"request_id": [message]}}


@pytest.mark.parametrize(
    "fetch",
    [
        "/api/v6/images/fetch/{}",
        "/api/v6/realtime/fetch/{}",
        "/api/v7/images/fetch/{}",
        "/api/v6/images/fetch",
    ],
)
def test_another_tenants_request_looks_missing(api, tenant, outsider, demo_models, no_wait, fetch):
    job_id = api.post("/api/v6/images/text2img", body(tenant))[1]["id"]

    def fetch_as(caller, request_id):
        if "{}" in fetch:
            return api.post(fetch.format(request_id), {"key": caller.key})
        return api.post(fetch, {"key": caller.key, "request_id": request_id})

    theirs = fetch_as(outsider, job_id)
    missing = fetch_as(outsider, job_id + 1000)
    assert theirs == missing == (404, {"status": "error", "message": "Request not found"})
    assert fetch_as(tenant, job_id)[0] == 200


def test_another_tenants_private_model_looks_missing_on_v7(
    api, tenant, outsider, demo_models, no_wait
):
    AIModel.objects.create(
        model_id="their-model", name="theirs", path="demo-sd15", organization=outsider.org
    )
    theirs = api.post("/api/v7/images/text-to-image", body(tenant, model_id="their-model"))
    missing = api.post("/api/v7/images/text-to-image", body(tenant, model_id="no-such-model"))
    assert theirs == missing == (404, {"status": "error", "message": "Model id not found"})


def test_v7_takes_switches_as_words_numbers_as_strings_and_null_as_default(
    api, tenant, demo_models, no_wait
):
    status, data = api.post(
        "/api/v7/images/text-to-image",
        body(
            tenant,
            width="128",
            height="64",
            samples="2",
            guidance_scale="5.5",
            seed="42",
            safety_checker="no",
            tomesd="yes",
            negative_prompt=None,
            scheduler=None,
            something_new="ignored",
        ),
        Authorization=f"Bearer {tenant.key}",
    )
    assert status == 200, data
    params = Job.objects.get().params
    assert (params["width"], params["height"], params["samples"]) == (128, 64, 2)
    assert params["guidance_scale"] == 5.5
    assert params["seed"] == 42
    assert params["safety_checker"] is False
    assert params["tomesd"] is True
    assert params["negative_prompt"] == ""
    assert params["scheduler"] == "UniPCMultistepScheduler"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"width": 1032}, "width"),
        ({"height": 60}, "height"),
        ({"samples": 5}, "samples"),
        ({"guidance_scale": 21}, "guidance_scale"),
        ({"num_inference_steps": 22}, "num_inference_steps"),
        ({"seed": 2**32}, "seed"),
        ({"scheduler": "NoSuchScheduler"}, "scheduler"),
    ],
)
def test_v6_names_each_field_out_of_bounds(api, tenant, demo_models, no_wait, fields, field):
    status, data = api.post("/api/v6/images/text2img", body(tenant, **fields))
    assert status == 400, data
    assert data["status"] == "error"
    assert list(data["message"]) == [field]
    assert not Job.objects.exists()


def test_instant_response_answers_before_the_image_is_made(api, tenant, demo_models, settings):
    # Without it the request would wait this long for a worker that never comes.
    settings.PICTOR_SYNC_WAIT = 30
    status, data = api.post("/api/v6/realtime/text2img", body(tenant, instant_response=True))
    assert status == 200, data
    assert data["status"] == "processing"
    assert data["future_links"]


@pytest.mark.parametrize("path", ["/api/v6/images/text2img", "/api/v7/images/text-to-image"])
def test_a_bad_key_is_refused_in_the_modelslab_shape(api, path):
    status, data = api.post(path, {"key": "pct_not-a-real-key-000000", "prompt": "x"})
    assert status == 401
    assert data["status"] == "error"
    assert data["message"] == "Invalid Api Key"
