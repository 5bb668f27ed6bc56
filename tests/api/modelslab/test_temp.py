"""ModelsLab's `temp`: links valid for 24 hours from submission, then the images are deleted.

The switch takes ModelsLab's "yes"/"no" or booleans on every endpoint. The retention run
(generation/retention.py) is driven with a clock past the expiry: a temp job's stored images
(outputs and inputs) are gone, on local storage and on S3 (moto's server over HTTP), while a
job without `temp` keeps its images.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client
from django.utils import timezone

from generation.models import Job
from generation.retention import expire_outputs
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

DAY = 24 * 3600
IMAGE = png_base64(noise_image(64, 64))


def body(tenant: Any, **fields: Any) -> dict[str, Any]:
    return {
        "key": tenant.key,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "prompt": f"a lighthouse at dusk {uuid.uuid4().hex[:8]}",
        "width": 64,
        "height": 64,
        **fields,
    }


def generate(api: Any, path: str, fields: dict[str, Any]) -> dict[str, Any]:
    status, data = api.post(path, fields)
    assert status == 200, data
    assert data["status"] == "success", data
    return data


def expires_of(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["expires"][0])


def local_get(url: str) -> Any:
    parts = urlsplit(url)
    return Client().get(f"{parts.path}?{parts.query}")


def upscale_body(tenant: Any, field: str, **fields: Any) -> dict[str, Any]:
    return {"key": tenant.key, field: IMAGE, "scale": 2, "track_id": uuid.uuid4().hex, **fields}


SUBMITS = [
    ("/api/v3/text2img", lambda t, **f: body(t, **f)),
    ("/api/v6/images/img2img", lambda t, **f: body(t, init_image=IMAGE, **f)),
    ("/api/v6/image_editing/super_resolution", lambda t, **f: upscale_body(t, "init_image", **f)),
    ("/api/v3/super_resolution", lambda t, **f: upscale_body(t, "url", **f)),
]


@pytest.mark.parametrize(("path", "make_body"), SUBMITS)
@pytest.mark.parametrize(
    ("value", "temp"),
    [("yes", True), ("YES", True), (True, True), ("no", False), (False, False), ("0", False)],
)
def test_temp_takes_modelslab_switches(
    api, tenant, demo_models, no_wait, path, make_body, value, temp
):
    status, data = api.post(path, make_body(tenant, temp=value))
    assert status == 200, data
    assert bool(Job.objects.get(pk=data["id"]).params.get("temp")) is temp


@pytest.mark.parametrize(("path", "make_body"), SUBMITS)
def test_temp_refuses_what_is_not_a_switch(api, tenant, demo_models, no_wait, path, make_body):
    status, data = api.post(path, make_body(tenant, temp="maybe"))
    assert status == 400, data
    assert list(data["message"]) == ["temp"]
    assert not Job.objects.exists()


def test_temp_links_last_24_hours(api, tenant, demo_model, sync_queue, settings):
    assert settings.PICTOR_MEDIA_TEMP_URL_EXPIRE == DAY  # ModelsLab's contract
    before = time.time()
    data = generate(api, "/api/v3/text2img", body(tenant, temp="yes"))
    [url] = data["output"]
    assert before + DAY <= expires_of(url) <= time.time() + DAY + 1
    assert local_get(url).status_code == 200


def test_temp_images_are_deleted_locally_after_24_hours(
    api, tenant, demo_model, sync_queue, media_dir
):
    kept = generate(api, "/api/v3/img2img", body(tenant, init_image=IMAGE))
    temp = generate(api, "/api/v3/img2img", body(tenant, init_image=IMAGE, temp=True))
    files = {
        job["id"]: [media_dir / o.path for o in Job.objects.get(pk=job["id"]).outputs.all()]
        + [media_dir / Job.objects.get(pk=job["id"]).params["init_image"]]
        for job in (kept, temp)
    }
    assert all(path.is_file() for paths in files.values() for path in paths)

    assert expire_outputs(timezone.now() + timedelta(seconds=DAY - 60)) == 0
    assert all(path.is_file() for path in files[temp["id"]])

    assert expire_outputs(timezone.now() + timedelta(seconds=DAY + 1)) == 1
    assert not any(path.exists() for path in files[temp["id"]])
    assert all(path.is_file() for path in files[kept["id"]])
    assert local_get(temp["output"][0]).status_code == 404
    assert local_get(kept["output"][0]).status_code == 200
    status, fetched = api.post(f"/api/v3/fetch/{temp['id']}", {"key": tenant.key})
    assert (status, fetched["message"], fetched["output"]) == (200, "Outputs expired", [])


@pytest.fixture
def s3_bucket(settings: Any, s3_endpoint: str) -> Any:
    """Images in a fresh private bucket on moto's S3 server, with settings.py's storage options."""
    import boto3

    bucket = f"pictor-temp-{time.time_ns() % 10**10}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_endpoint,
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "querystring_auth": True,
                "querystring_expire": settings.PICTOR_MEDIA_URL_EXPIRE,
                "signature_version": "s3v4",
                "file_overwrite": True,
                "default_acl": None,
            },
        },
    }

    def keys() -> set[str]:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {item["Key"] for item in listed}

    return keys


def test_temp_objects_are_deleted_on_s3_after_24_hours(
    api, tenant, demo_model, sync_queue, s3_bucket
):
    kept = generate(api, "/api/v3/img2img", body(tenant, init_image=IMAGE))
    temp = generate(api, "/api/v3/img2img", body(tenant, init_image=IMAGE, temp="yes"))
    # Counted from the job's creation: the seconds the generation took are already gone.
    expires = int(parse_qs(urlsplit(temp["output"][0]).query)["X-Amz-Expires"][0])
    assert DAY - 60 < expires <= DAY

    def stored(job_id: int) -> set[str]:
        job = Job.objects.get(pk=job_id)
        return {o.path for o in job.outputs.all()} | {job.params["init_image"]}

    kept_keys, temp_keys = stored(kept["id"]), stored(temp["id"])
    assert len(temp_keys) == 2 and (kept_keys | temp_keys) <= s3_bucket()
    assert requests.get(temp["output"][0], timeout=10).status_code == 200

    assert expire_outputs(timezone.now() + timedelta(seconds=DAY - 60)) == 0
    assert temp_keys <= s3_bucket()

    assert expire_outputs(timezone.now() + timedelta(seconds=DAY + 1)) == 1
    assert not temp_keys & s3_bucket()
    assert kept_keys <= s3_bucket()
    assert requests.get(temp["output"][0], timeout=10).status_code == 404
    assert requests.get(kept["output"][0], timeout=10).status_code == 200
