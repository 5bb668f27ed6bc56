"""The history gallery: filters, the lightbox's data, downloads of one image or a zip, and vary.

Jobs are generated for real (demo model, django-q2 in sync mode); zips are read back and their
PNGs opened. Another organization's jobs and images answer 404 like missing ones.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from accounts.models import Membership, User
from generation import gallery, tasks
from generation.models import Job, OutputImage
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"width": 64, "height": 64}
IMG2IMG = "/api/v3/img2img"


def member_of(org: Any, email: str) -> Any:
    user = User.objects.create_user(email, "pw-123456789", email_verified_at=timezone.now())
    Membership.objects.create(user=user, organization=org, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def ada(client, tenant) -> Any:
    """The test client, logged in as a member of `tenant`'s organization."""
    client.force_login(member_of(tenant.org, "ada@example.com"))
    return client


def generate(
    api: Any, tenant: Any, samples: int = 1, path: str = "/api/v3/text2img", **fields: Any
) -> Job:
    status, data = api.post(
        path,
        {
            "key": tenant.key,
            "prompt": "a lighthouse at dusk",
            "samples": samples,
            **SMALL,
            **fields,
        },
    )
    assert status == 200, data
    assert data["status"] == "success", data
    return Job.objects.get(pk=data["id"])


def pngs(response: Any) -> dict[str, bytes]:
    """The files of a zip answer, each checked to be a PNG image."""
    assert response.status_code == 200, response
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        assert archive.testzip() is None
        files = {name: archive.read(name) for name in archive.namelist()}
    for name, data in files.items():
        assert name.endswith(".png")
        assert Image.open(io.BytesIO(data)).format == "PNG"
    return files


def stored(output: OutputImage) -> bytes:
    with default_storage.open(output.path, "rb") as file:
        return file.read()


def test_it_zips_the_images_of_a_job(ada, api, tenant, sync_queue, demo_model):
    job = generate(api, tenant, samples=3)
    response = ada.get(f"/app/history/download/?job={job.pk}")
    assert response["Content-Disposition"] == f'attachment; filename="pictor-job-{job.pk}.zip"'
    files = pngs(response)
    assert len(files) == 3
    for output in job.outputs.all():
        assert files[f"job-{job.pk}-{output.index}-seed-{output.seed}.png"] == stored(output)


def test_it_zips_a_selection_of_images_across_jobs(ada, api, tenant, sync_queue, demo_model):
    first = generate(api, tenant, samples=2)
    second = generate(api, tenant, samples=3)
    chosen = [first.outputs.get(index=1), *second.outputs.filter(index__in=[0, 2])]
    query = "&".join(f"image={o.pk}" for o in chosen)
    files = pngs(ada.get(f"/app/history/download/?{query}"))
    assert len(files) == 3
    assert {f"job-{o.job_id}-{o.index}-seed-{o.seed}.png" for o in chosen} == set(files)
    # A job and an image of another job together; an image of that same job counts once.
    both = f"job={second.pk}&image={first.outputs.get(index=0).pk}&image={chosen[1].pk}"
    assert len(pngs(ada.get(f"/app/history/download/?{both}"))) == 4


def test_it_zips_from_s3(ada, api, tenant, sync_queue, demo_model, settings, s3_endpoint):
    import boto3

    bucket = f"gallery-{time.time_ns() % 10**10}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
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
                "signature_version": "s3v4",
            },
        },
    }
    job = generate(api, tenant, samples=2)
    files = pngs(ada.get(f"/app/history/download/?job={job.pk}"))
    assert sorted(files.values()) == sorted(stored(o) for o in job.outputs.all())
    first = job.outputs.get(index=0)
    single = ada.get(f"/app/history/images/{first.pk}/download/")
    assert single.status_code == 200
    assert b"".join(single.streaming_content) == stored(first)


def test_it_downloads_one_image_as_a_file(ada, api, tenant, sync_queue, demo_model):
    output = generate(api, tenant).outputs.get()
    response = ada.get(f"/app/history/images/{output.pk}/download/")
    assert response.status_code == 200
    name = f"job-{output.job_id}-0-seed-{output.seed}.png"
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert b"".join(response.streaming_content) == stored(output)


def test_another_organizations_jobs_and_images_look_missing(
    client, ada, api, tenant, outsider, sync_queue, demo_model
):
    mine = generate(api, tenant)
    theirs = generate(api, outsider, prompt="globex secret prompt")
    image = theirs.outputs.get()
    assert ada.get(f"/app/history/download/?job={theirs.pk}").status_code == 404
    assert ada.get(f"/app/history/download/?image={image.pk}").status_code == 404
    # Mixed with one of the organization's own: still nothing.
    mixed = f"/app/history/download/?job={mine.pk}&image={image.pk}"
    assert ada.get(mixed).status_code == 404
    assert ada.get(f"/app/history/images/{image.pk}/download/").status_code == 404
    assert ada.post(f"/app/history/{theirs.pk}/vary/").status_code == 404
    assert ada.get("/app/history/download/?job=999999999").status_code == 404
    assert "globex secret prompt" not in ada.get("/app/history/").content.decode()
    # And nothing at all without a login.
    client.logout()
    response = client.get(f"/app/history/download/?job={mine.pk}")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_zip_beyond_the_cap_is_refused(ada, api, tenant, sync_queue, demo_model, monkeypatch):
    monkeypatch.setattr(gallery, "ZIP_MAX_IMAGES", 2)
    job = generate(api, tenant, samples=3)
    response = ada.get(f"/app/history/download/?job={job.pk}")
    assert response.status_code == 400
    assert "at most 2" in response.content.decode()
    query = "&".join(f"image={o.pk}" for o in job.outputs.all())
    assert ada.get(f"/app/history/download/?{query}").status_code == 400
    # Within the cap it works.
    two = "&".join(f"image={o.pk}" for o in job.outputs.all()[:2])
    assert len(pngs(ada.get(f"/app/history/download/?{two}"))) == 2
    # The page tells the script the cap.
    assert 'data-max="2"' in ada.get("/app/history/").content.decode()


@pytest.mark.parametrize(
    "query",
    ["", "job=abc", "job=-1", "job=0", "job=1.5", "image=", "job=" + "9" * 40, "job=²"],
)
def test_bad_zip_requests_answer_400(ada, query):
    response = ada.get(f"/app/history/download/?{query}")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().strip()


def test_a_nul_in_the_query_string_is_refused_before_the_page(ada):
    # The site refuses NUL characters in any query string (sdplatform's middleware), with 400.
    assert ada.get("/app/history/download/?image=%00").status_code == 400
    assert ada.get("/app/history/?q=a%00b").status_code == 400


def make_job(org: Any, model: Any, prompt: str, **fields: Any) -> Job:
    created = fields.pop("created_at", timezone.now())
    return Job.objects.create(
        organization=org,
        model=model,
        params={"prompt": prompt, "samples": 1, **SMALL},
        cost=1,
        created_at=created,
        **fields,
    )


def test_filters_narrow_by_model_kind_status_and_dates(ada, tenant, demo_models):
    now = timezone.now()
    make_job(tenant.org, demo_models["demo-sd15"], "old sunrise", created_at=now - timedelta(10))
    make_job(tenant.org, demo_models["demo-sd15"], "new harbour", status=Job.Status.SUCCESS)
    make_job(tenant.org, demo_models["demo-sd15-inpaint"], "inpainted door", kind="inpaint")

    def shown(query: str) -> set[str]:
        page = ada.get(f"/app/history/?{query}")
        assert page.status_code == 200
        text = page.content.decode()
        return {p for p in ("old sunrise", "new harbour", "inpainted door") if p in text}

    assert shown("") == {"old sunrise", "new harbour", "inpainted door"}
    assert shown("model=demo-sd15-inpaint") == {"inpainted door"}
    assert shown("kind=text2img") == {"old sunrise", "new harbour"}
    assert shown("status=success") == {"new harbour"}
    today = timezone.localdate()
    assert shown(f"date_from={today.isoformat()}") == {"new harbour", "inpainted door"}
    week_ago = (today - timedelta(7)).isoformat()
    assert shown(f"date_to={week_ago}") == {"old sunrise"}
    assert shown(f"date_from={week_ago}&date_to={today.isoformat()}&kind=text2img") == {
        "new harbour"
    }
    assert shown("q=HARBOUR") == {"new harbour"}


@pytest.mark.parametrize(
    ("query", "note"),
    [
        ("status=bogus", "Ignored the status"),
        ("kind=teleport", "Ignored the kind"),
        ("model=not-a-model", "Ignored the model"),
        ("date_from=2024-13-45", "Ignored the from date"),
        ("date_to=yesterday", "Ignored the to date"),
        ("date_from=2024-02-02&date_to=2024-01-01", "the first comes after the second"),
        ("q=" + "x" * 500, "cut to 200 characters"),
    ],
)
def test_bad_filters_are_ignored_with_a_note(ada, tenant, demo_model, query, note):
    make_job(tenant.org, demo_model, "a quiet lake")
    page = ada.get(f"/app/history/?{query}")
    assert page.status_code == 200
    text = page.content.decode()
    assert note in text
    assert "a quiet lake" in text or query.startswith("q=")


@pytest.mark.parametrize("query", ["page=abc", "page=-3", "page=99999999999999999999", "kind=%FF"])
def test_odd_filters_never_fail(ada, tenant, demo_model, query):
    make_job(tenant.org, demo_model, "a quiet lake")
    assert ada.get(f"/app/history/?{query}").status_code == 200


def test_the_page_carries_each_images_settings_for_the_lightbox(
    ada, api, tenant, sync_queue, demo_model
):
    job = generate(api, tenant, samples=2, seed=1234, guidance_scale=6.5)
    page = ada.get("/app/history/").content.decode()
    found = re.search(r'<script id="gallery-items" type="application/json">(.*?)</script>', page)
    assert found, page
    items = json.loads(found.group(1))
    assert [(i["job"], i["index"], i["seed"]) for i in items] == [
        (job.pk, 0, 1234),
        (job.pk, 1, 1235),
    ]
    first = items[0]
    assert ["guidance_scale", "6.5"] in first["parameters"]
    assert first["use"] == f"/app/playground/?from={job.pk}"
    assert first["vary"] == f"/app/history/{job.pk}/vary/"
    assert first["zip"] == f"/app/history/download/?job={job.pk}"
    # The thumbnail links are the signed ones, and they work.
    assert ada.get(first["url"]).status_code == 200
    assert 'data-position="1"' in page
    assert f'name="image" value="{job.outputs.get(index=1).pk}"' in page


def test_vary_runs_the_same_settings_with_a_new_seed(ada, api, tenant, sync_queue, demo_model):
    job = generate(api, tenant, seed=77, steps=21)
    response = ada.post(f"/app/history/{job.pk}/vary/")
    assert response.status_code == 302
    varied = Job.objects.for_org(tenant.org).latest("pk")
    assert varied.pk != job.pk
    assert varied.params["seed"] != 77
    same = {k: v for k, v in job.params.items() if k != "seed"}
    assert {k: v for k, v in varied.params.items() if k != "seed"} == same
    varied.refresh_from_db()
    assert varied.status == Job.Status.SUCCESS
    assert ada.get(f"/app/history/{job.pk}/vary/").status_code == 405


@pytest.mark.parametrize("action", ["vary", "rerun"])
def test_a_job_made_again_keeps_its_inputs_when_the_first_ones_outputs_are_deleted(
    ada, api, tenant, sync_queue, demo_model, monkeypatch, action
):
    from django_q.conf import Conf

    first = generate(api, tenant, path=IMG2IMG, init_image=png_base64(noise_image(64, 64)))
    monkeypatch.setattr(Conf, "SYNC", False)  # the new job waits in the queue, no worker yet
    assert ada.post(f"/app/history/{first.pk}/{action}/").status_code == 302
    again = Job.objects.for_org(tenant.org).latest("pk")
    assert again.pk != first.pk and again.status == Job.Status.QUEUED
    assert again.params["init_image"] != first.params["init_image"]

    deleted = ada.delete(
        f"/api/v1/jobs/{first.pk}/outputs", headers={"Authorization": f"Bearer {tenant.key}"}
    )
    assert deleted.status_code == 200, deleted.content
    assert not default_storage.exists(first.params["init_image"])

    assert tasks.run_next_job() == again.pk
    again.refresh_from_db()
    assert again.status == Job.Status.SUCCESS, again.error


def test_a_job_that_cannot_be_made_again_leaves_no_copied_inputs(
    ada, api, tenant, sync_queue, demo_model
):
    first = generate(api, tenant, path=IMG2IMG, init_image=png_base64(noise_image(64, 64)))
    folder = f"inputs/{tenant.org.pk}"
    before = default_storage.listdir(folder)[0]
    tenant.org.credit_balance = 0
    tenant.org.save(update_fields=["credit_balance"])
    page = ada.post(f"/app/history/{first.pk}/rerun/", follow=True).content.decode()
    assert "Not queued" in page
    assert default_storage.listdir(folder)[0] == before
