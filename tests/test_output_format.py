"""Output formats across the wire formats: png, jpeg or webp, a quality, parameters kept."""

from __future__ import annotations

import base64
import io
import time

import pytest
import requests
from PIL import Image

from generation.engine.pngmeta import encode_image, read_parameters
from generation.engine.request import GenerationRequest
from generation.models import Job, OutputImage
from tests.images import fetched_bytes, noise_image
from tests.test_private_media import storage_from_settings

PARAMETERS = "a red fox, 狐\nNegative prompt: blur\nSteps: 21, Sampler: UniPC, Seed: 7"
SMALL = {"width": 64, "height": 64}


def body(tenant, **fields):
    return {"key": tenant.key, "prompt": "a red fox in the snow", **SMALL, **fields}


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- the engine's encoders ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_format", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")]
)
def test_each_format_carries_the_a1111_parameters(output_format, pil_format):
    data = encode_image(noise_image(48, 32), PARAMETERS, output_format, 80)
    image = Image.open(io.BytesIO(data))
    assert image.format == pil_format
    assert image.size == (48, 32)
    assert read_parameters(image) == PARAMETERS


def test_jpeg_and_webp_keep_them_where_a1111_does():
    for output_format in ("jpeg", "webp"):
        image = Image.open(io.BytesIO(encode_image(noise_image(32, 32), PARAMETERS, output_format)))
        # The Exif IFD's UserComment, "UNICODE" and UTF-16BE, as piexif writes it for webui.
        comment = image.getexif().get_ifd(0x8769)[0x9286]
        assert comment == b"UNICODE\x00" + PARAMETERS.encode("utf-16-be")


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_quality_changes_the_size(output_format):
    image = noise_image(96, 96, seed=3)
    low = encode_image(image, PARAMETERS, output_format, 10)
    high = encode_image(image, PARAMETERS, output_format, 95)
    assert len(low) < len(high)


def test_png_ignores_the_quality():
    image = noise_image(32, 32)
    assert encode_image(image, PARAMETERS, "png", 1) == encode_image(image, PARAMETERS, "png", 100)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"output_format": "gif"}, "output_format"),
        ({"output_quality": 0}, "output_quality"),
        ({"output_quality": 101}, "output_quality"),
    ],
)
def test_the_engine_refuses_bad_values(fields, name):
    assert name in GenerationRequest(prompt="x", model_id="m", **fields).problems()


def test_jobs_from_before_the_field_keep_png_names(demo_model, tenant):
    params = GenerationRequest(prompt="x", model_id="demo-sd15").to_params()
    del params["output_format"], params["output_quality"]
    job = Job.objects.create(organization=tenant.org, model=demo_model, params=params)
    assert job.output_path(0).endswith(f"/{job.pk}/0.png")
    assert GenerationRequest.from_params(params).output_format == "png"


# --- ModelsLab ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_modelslab_jpeg_job_is_stored_and_served_as_jpeg(
    api, client, tenant, demo_model, sync_queue
):
    status, data = api.post(
        "/api/v3/text2img", body(tenant, seed=7, output_format="jpg", quality=60)
    )
    assert status == 200, data
    assert data["status"] == "success"
    url = data["output"][0]
    assert url.startswith(
        f"http://testserver/files/generations/{tenant.org.pk}/{data['id']}/0.jpg?expires="
    )
    assert OutputImage.objects.get(job_id=data["id"]).path.endswith("/0.jpg")
    response = client.get(url.replace("http://testserver", ""))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert (image.format, image.size) == ("JPEG", (64, 64))
    text = read_parameters(image)
    assert text is not None and "Seed: 7" in text and "a red fox in the snow" in text


@pytest.mark.django_db(transaction=True)
def test_a_modelslab_webp_job_answers_base64_webp(api, tenant, demo_model, sync_queue):
    status, data = api.post(
        "/api/v6/images/text2img", body(tenant, seed=3, output_format="webp", base64="yes")
    )
    assert status == 200, data
    data_bytes = base64.b64decode(data["output"][0])
    assert data_bytes[:4] == b"RIFF" and data_bytes[8:12] == b"WEBP"
    assert "Seed: 3" in (read_parameters(Image.open(io.BytesIO(data_bytes))) or "")


@pytest.mark.django_db(transaction=True)
def test_the_modelslab_quality_changes_the_stored_size(api, tenant, demo_model, sync_queue):
    sizes = []
    for quality in (5, 100):
        _, data = api.post(
            "/api/v3/text2img", body(tenant, seed=11, output_format="jpeg", quality=quality)
        )
        sizes.append(len(fetched_bytes(data["output"][0])))
    assert sizes[0] < sizes[1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"output_format": "gif"}, "output_format"),
        ({"output_format": ["png"]}, "output_format"),
        ({"output_format": "jpeg", "quality": 0}, "quality"),
        ({"output_format": "webp", "quality": 101}, "quality"),
        ({"quality": "high"}, "quality"),
    ],
)
def test_bad_modelslab_values_are_a_400_naming_the_field(api, tenant, demo_model, fields, name):
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))
    assert status == 400, data
    assert data["status"] == "error"
    assert list(data["message"]) == [name]
    assert Job.objects.count() == 0


# --- S3 -----------------------------------------------------------------------------------


@pytest.fixture
def bucket(settings, s3_endpoint, demo_model) -> str:
    import boto3

    name = f"pictor-fmt-{time.time_ns() % 10**10}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_from_settings(
            S3_BUCKET=name,
            S3_ENDPOINT_URL=s3_endpoint,
            S3_ACCESS_KEY_ID="test",
            S3_SECRET_ACCESS_KEY="test",
            S3_REGION="us-east-1",
        ),
    }
    settings.S3_BUCKET = name
    return name


@pytest.mark.django_db(transaction=True)
def test_on_s3_a_webp_is_uploaded_with_its_content_type(api, tenant, sync_queue, bucket):
    status, data = api.post("/api/v3/text2img", body(tenant, output_format="webp"))
    assert status == 200, data
    url = data["output"][0]
    assert f"/{bucket}/generations/{tenant.org.pk}/{data['id']}/0.webp?" in url
    signed = requests.get(url, timeout=10)
    assert signed.status_code == 200
    assert signed.headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(signed.content)).format == "WEBP"


# --- AUTOMATIC1111 ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a1111_override_samples_format_answers_jpeg_with_its_infotext(
    api, tenant, demo_model, sync_queue
):
    status, data = api.post(
        "/sdapi/v1/txt2img",
        {
            "prompt": "a lighthouse",
            "seed": 5,
            **SMALL,
            "override_settings": {"samples_format": "jpg", "jpeg_quality": 70},
        },
        **basic(tenant.key),
    )
    assert status == 200, data
    raw = base64.b64decode(data["images"][0])
    assert raw[:3] == b"\xff\xd8\xff"
    image = Image.open(io.BytesIO(raw))
    assert "Seed: 5" in (read_parameters(image) or "")
    # webui's own reader (png-info) finds it in the EXIF, as in webui's JPEGs.
    status, info = api.post("/sdapi/v1/png-info", {"image": data["images"][0]}, **basic(tenant.key))
    assert status == 200, info
    assert info["info"] == read_parameters(image)
    assert info["parameters"]["Seed"] == "5"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"samples_format": "gif"}, "samples_format"),
        ({"samples_format": 3}, "samples_format"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"jpeg_quality": "best"}, "jpeg_quality"),
    ],
)
def test_a1111_bad_format_overrides_are_a_422_naming_the_key(
    api, tenant, demo_model, override, key
):
    status, data = api.post(
        "/sdapi/v1/txt2img",
        {"prompt": "a hill", "override_settings": override},
        **basic(tenant.key),
    )
    assert status == 422, data
    assert data["detail"][0]["loc"] == ["body", "override_settings", key]
    assert Job.objects.count() == 0
