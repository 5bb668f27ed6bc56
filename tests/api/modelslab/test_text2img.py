"""Contract of POST /api/v3/text2img and /api/v4/dreambooth (docs/architecture.md)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.test import Client
from PIL import Image

from generation.engine.schedulers import A1111_SAMPLERS, SCHEDULERS
from generation.models import Job, OutputImage
from tests.images import fetched_bytes

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"width": 64, "height": 64}


def body(tenant, **fields):
    return {"key": tenant.key, "prompt": "a red fox in the snow", **SMALL, **fields}


def stored_image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(fetched_bytes(url)))


def link_path(url: str) -> str:
    """An image link without its signature: the same image whenever it was signed."""
    return url.split("?", 1)[0]


def test_it_generates_and_answers_success(api, tenant, demo_model, sync_queue):
    status, data = api.post("/api/v3/text2img", body(tenant, seed=42))
    assert status == 200, data
    assert data["status"] == "success"
    assert isinstance(data["id"], int)
    assert len(data["output"]) == 1
    assert data["output"][0].startswith(
        f"http://testserver/files/generations/{tenant.org.pk}/{data['id']}/0.png?expires="
    )
    assert data["nsfw_content_detected"] == [False]
    meta = data["meta"]
    assert meta["seed"] == 42
    assert (meta["W"], meta["H"], meta["steps"], meta["n_samples"]) == (64, 64, 21, 1)
    assert meta["guidance_scale"] == 7.5
    assert meta["scheduler"] == "UniPCMultistepScheduler"
    assert meta["model_id"] == "demo-sd15"
    assert meta["credits"] == 1
    assert data["generationTime"] > 0
    image = stored_image(data["output"][0])
    assert image.size == (64, 64)
    assert "Seed: 42" in image.info["parameters"]
    assert "a red fox in the snow" in image.info["parameters"]


def test_the_output_url_serves_the_png(api, client, tenant, demo_model, sync_queue):
    _, data = api.post("/api/v3/text2img", body(tenant))
    response = client.get(data["output"][0].replace("http://testserver", ""))
    assert response.status_code == 200
    png = b"".join(response.streaming_content)
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    outside = Client(raise_request_exception=False).get("/media/generations/../../etc/passwd")
    assert outside.status_code in (400, 404)


def test_it_reproduces_pixels_for_the_same_seed(api, tenant, demo_model, sync_queue):
    _, first = api.post("/api/v3/text2img", body(tenant, seed=7))
    _, again = api.post("/api/v3/text2img", body(tenant, seed=7, negative_prompt=" "))
    _, other = api.post("/api/v3/text2img", body(tenant, seed=8))
    a, b, c = (stored_image(d["output"][0]).tobytes() for d in (first, again, other))
    assert a == b
    assert a != c


def test_it_returns_the_random_seed_it_used(api, tenant, demo_model, sync_queue):
    _, data = api.post("/api/v3/text2img", body(tenant, seed=None))
    seed = data["meta"]["seed"]
    assert isinstance(seed, int) and seed >= 0
    _, again = api.post(
        "/api/v3/text2img", body(tenant, seed=seed, prompt="a red fox in the snow ")
    )
    assert stored_image(again["output"][0]).tobytes() == stored_image(data["output"][0]).tobytes()


def test_it_makes_one_batch_of_samples_with_consecutive_seeds(api, tenant, demo_model, sync_queue):
    status, data = api.post("/api/v3/text2img", body(tenant, seed=100, samples="4"))
    assert status == 200, data
    assert len(data["output"]) == 4
    assert data["meta"]["seeds"] == [100, 101, 102, 103]
    pixels = [stored_image(u).tobytes() for u in data["output"]]
    assert len(set(pixels)) == 4
    _, single = api.post("/api/v3/text2img", body(tenant, seed=102, samples=1))
    # Batched maths may round a rare pixel one level differently; anything more is a bug.
    alone = np.asarray(stored_image(single["output"][0]), dtype=np.int16)
    third = np.asarray(stored_image(data["output"][2]), dtype=np.int16)
    assert np.abs(alone - third).max() <= 1
    assert np.abs(alone - third).mean() < 0.01
    assert OutputImage.objects.filter(job_id=data["id"]).count() == 4


def test_it_accepts_lenient_types(api, tenant, demo_model, sync_queue):
    status, data = api.post(
        "/api/v3/text2img",
        body(
            tenant,
            width="64",
            height="128",
            samples="1",
            num_inference_steps="21",
            guidance_scale="5.5",
            seed="3",
            safety_checker="no",
            use_karras_sigmas="no",
            clip_skip="2",
            negative_prompt=None,
            scheduler=None,
            enhance_prompt="no",
            webhook=None,
            some_unknown_field={"nested": True},
        ),
    )
    assert status == 200, data
    assert data["status"] == "success"
    assert (data["meta"]["W"], data["meta"]["H"]) == (64, 128)
    assert data["meta"]["guidance_scale"] == 5.5
    assert data["meta"]["safety_checker"] == "no"
    assert stored_image(data["output"][0]).size == (64, 128)


def test_it_accepts_steps_as_an_alias(api, tenant, demo_model, sync_queue):
    status, data = api.post("/api/v3/text2img", body(tenant, steps=31))
    assert status == 200, data
    assert data["meta"]["steps"] == 31
    assert data["meta"]["credits"] == 2


@pytest.mark.parametrize(
    "steps", [{"num_inference_steps": 21, "steps": 31}, {"num_inference_steps": 41, "steps": 21}]
)
def test_it_refuses_steps_that_differ_from_num_inference_steps(api, tenant, demo_model, steps):
    status, data = api.post("/api/v3/text2img", body(tenant, **steps))
    assert status == 400, data
    assert data["message"] == {"steps": ["num_inference_steps and steps differ; send one of them."]}
    assert not Job.objects.exists()


def test_it_takes_the_same_steps_under_both_names(api, tenant, demo_model, sync_queue):
    status, data = api.post("/api/v3/text2img", body(tenant, num_inference_steps=31, steps="31"))
    assert status == 200, data
    assert data["meta"]["steps"] == 31


def test_it_reads_json_sent_without_a_json_content_type(api, tenant, demo_model, sync_queue):
    import json

    response = api.raw(
        "/api/v3/text2img", json.dumps(body(tenant)), "application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "success"


@pytest.mark.parametrize(
    "scheduler", ["DDIMScheduler", "EulerAncestralDiscreteScheduler", "Euler a"]
)
def test_it_honours_the_scheduler(api, tenant, demo_model, sync_queue, scheduler):
    _, default = api.post("/api/v3/text2img", body(tenant, seed=5))
    status, data = api.post("/api/v3/text2img", body(tenant, seed=5, scheduler=scheduler))
    assert status == 200, data
    assert data["status"] == "success"
    assert stored_image(data["output"][0]).tobytes() != stored_image(default["output"][0]).tobytes()


def test_it_answers_base64_outputs_when_asked(api, tenant, demo_model, sync_queue):
    import base64

    status, data = api.post("/api/v3/text2img", body(tenant, base64="yes"))
    assert status == 200, data
    png = base64.b64decode(data["output"][0])
    assert Image.open(io.BytesIO(png)).size == (64, 64)


def test_it_censors_flagged_images_and_reports_them(api, tenant, demo_model, sync_queue, settings):
    _, clean = api.post("/api/v3/text2img", body(tenant, seed=9))
    settings.PICTOR_NSFW_THRESHOLD = 0.0
    for mode in ("sensitive_content_text", "blur", "pixelate", "black"):
        status, data = api.post(
            "/api/v3/text2img", body(tenant, seed=9, safety_checker_type=mode, track_id=mode)
        )
        assert status == 200, data
        assert data["nsfw_content_detected"] == [True]
        censored = stored_image(data["output"][0])
        assert censored.tobytes() != stored_image(clean["output"][0]).tobytes()
        if mode == "black":
            assert censored.convert("L").getextrema() == (0, 0)
    status, data = api.post("/api/v3/text2img", body(tenant, seed=9, safety_checker="no"))
    assert data["nsfw_content_detected"] == [False]
    assert stored_image(data["output"][0]).tobytes() == stored_image(clean["output"][0]).tobytes()


def test_dreambooth_requires_a_model_id(api, tenant, demo_model, sync_queue):
    status, data = api.post("/api/v4/dreambooth", body(tenant))
    assert status == 400
    assert data == {"status": "error", "message": {"model_id": ["The model_id field is required."]}}
    status, data = api.post("/api/v4/dreambooth", body(tenant, model_id="demo-sd15"))
    assert status == 200, data
    assert data["status"] == "success"


def test_it_answers_404_for_an_unknown_model(api, tenant, demo_model, sync_queue):
    for path in ("/api/v3/text2img", "/api/v4/dreambooth"):
        status, data = api.post(path, body(tenant, model_id="no-such-model"))
        assert status == 404
        assert data == {"status": "error", "message": "Model id not found"}
    assert not Job.objects.exists()


def test_it_answers_processing_then_fetch_gives_success(api, tenant, demo_model, no_wait):
    from generation.tasks import run_next_job

    status, data = api.post("/api/v3/text2img", body(tenant, seed=11, track_id="t-1"))
    assert status == 200, data
    assert data["status"] == "processing"
    assert data["track_id"] == "t-1"
    assert data["eta"] > 0
    assert data["output"] == []
    assert data["fetch_result"] == f"http://testserver/api/v3/fetch/{data['id']}"
    assert [link_path(u) for u in data["future_links"]] == [
        f"http://testserver/files/generations/{tenant.org.pk}/{data['id']}/0.png"
    ]
    assert data["message"] == "Try to fetch request after seconds estimated"

    assert run_next_job() == data["id"]
    status, fetched = api.post(
        data["fetch_result"].replace("http://testserver", ""), {"key": tenant.key}
    )
    assert status == 200
    assert fetched["status"] == "success"
    assert [link_path(u) for u in fetched["output"]] == [link_path(u) for u in data["future_links"]]
    assert stored_image(fetched["output"][0]).size == (64, 64)


def test_dreambooth_points_at_its_own_fetch(api, tenant, demo_model, no_wait):
    _, data = api.post("/api/v4/dreambooth", body(tenant, model_id="demo-sd15"))
    assert data["fetch_result"] == f"http://testserver/api/v4/dreambooth/fetch/{data['id']}"


def test_it_uses_the_base_url_setting_for_links(api, tenant, demo_model, no_wait, settings):
    settings.PICTOR_BASE_URL = "https://img.example.com"
    _, data = api.post("/api/v3/text2img", body(tenant))
    assert data["fetch_result"].startswith("https://img.example.com/api/v3/fetch/")
    assert data["future_links"][0].startswith("https://img.example.com/files/generations/")


@pytest.mark.parametrize(
    "scheduler",
    sorted(SCHEDULERS) + sorted(A1111_SAMPLERS) + ["NoSuchScheduler", "DPM++ 3M SDE"],
)
@pytest.mark.parametrize("karras", ["no", "yes"])
def test_every_scheduler_gives_an_image_or_a_clear_400(
    api, tenant, demo_model, sync_queue, scheduler, karras
):
    status, data = api.post(
        "/api/v3/text2img", body(tenant, scheduler=scheduler, use_karras_sigmas=karras)
    )
    if status == 200:
        assert data["status"] == "success", data
        assert stored_image(data["output"][0]).size == (64, 64)
    else:
        assert status == 400, data
        assert "scheduler" in data["message"] or "use_karras_sigmas" in data["message"]
        assert not Job.objects.exists()
    assert not Job.objects.filter(status=Job.Status.FAILED).exists()
