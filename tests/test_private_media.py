"""Output and input images are private: only signed links that expire reach them.

Local storage answers signed `/files/…` links (403 when altered or expired) and has no `/media/`
route at all; on S3 (moto's server over HTTP) answers carry presigned URLs and the objects
refuse an unsigned GET.
"""

from __future__ import annotations

import html
import io
import os
import re
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client
from django.utils import timezone
from PIL import Image

from accounts.models import Membership, User
from generation import media
from generation.models import Job
from tests.images import noise_image, png_base64
from tests.processes import python_json

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"width": 64, "height": 64}


def generate(api: Any, tenant: Any, path: str = "/api/v3/text2img", **fields: Any) -> dict:
    status, data = api.post(
        path, {"key": tenant.key, "prompt": "a lighthouse at dusk", **SMALL, **fields}
    )
    assert status == 200, data
    assert data["status"] == "success", data
    return data


def fetch(api: Any, tenant: Any, job_id: int) -> dict:
    status, data = api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})
    assert status == 200, data
    return data


ANONYMOUS = Client()


def get(url: str) -> Any:
    """An anonymous GET of a link, as anyone holding it (or guessing it) would send it."""
    parts = urlsplit(url)
    return ANONYMOUS.get(f"{parts.path}?{parts.query}" if parts.query else parts.path)


def body(response: Any) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def expires_of(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["expires"][0])


def one_character_changed(text: str, index: int) -> str:
    """`text` with the character at `index` replaced by another of the same kind."""
    index %= len(text)
    old = text[index]
    new = ("1" if old != "1" else "2") if old.isdigit() else ("a" if old != "a" else "b")
    return text[:index] + new + text[index + 1 :]


# Local storage ---------------------------------------------------------------------------------


def test_anonymous_enumeration_of_image_paths_finds_nothing(
    api, tenant, outsider, demo_model, sync_queue, media_dir
):
    jobs = {t.org.pk: generate(api, t, samples=2)["id"] for t in (tenant, outsider)}
    for org_id, job_id in jobs.items():
        # The files are there: only the way to them is closed.
        assert (media_dir / "generations" / str(org_id) / str(job_id) / "1.png").is_file()

    answers: dict[str, set[int]] = {"/media/": set(), "/files/": set()}
    # Every id around the real ones, as an attacker counting up from their own would try.
    for org_id in range(min(jobs) - 1, max(jobs) + 2):
        for job_id in range(min(jobs.values()) - 2, max(jobs.values()) + 3):
            for n in range(3):
                for prefix, seen in answers.items():
                    response = get(f"{prefix}generations/{org_id}/{job_id}/{n}.png")
                    seen.add(response.status_code)
    # No route serves /media/ any more; /files/ without a signature is refused before the file
    # system is looked at, so existing and missing images answer alike.
    assert answers == {"/media/": {404}, "/files/": {403}}


def test_the_signed_link_serves_the_png_privately(api, tenant, demo_model, sync_queue):
    data = generate(api, tenant, seed=3)
    url = data["output"][0]
    assert url.startswith(f"http://testserver/files/generations/{tenant.org.pk}/{data['id']}/")
    assert set(parse_qs(urlsplit(url).query)) == {"expires", "signature"}

    response = get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"].startswith("private, max-age=")
    assert 0 < int(response["Cache-Control"].rsplit("=", 1)[1]) <= 24 * 3600
    image = Image.open(io.BytesIO(body(response)))
    assert image.size == (64, 64)
    assert "Seed: 3" in image.info["parameters"]


def test_links_last_the_configured_time(api, tenant, demo_model, sync_queue, settings):
    settings.PICTOR_MEDIA_URL_EXPIRE = 5000
    before = time.time()
    url = generate(api, tenant)["output"][0]
    assert before + 5000 <= expires_of(url) <= time.time() + 5001


def test_an_expired_link_answers_403(api, tenant, demo_model, sync_queue, settings):
    settings.PICTOR_MEDIA_URL_EXPIRE = 1
    url = generate(api, tenant)["output"][0]
    assert get(url).status_code == 200

    time.sleep(max(0.0, expires_of(url) - time.time()) + 0.1)
    response = get(url)
    assert response.status_code == 403
    assert b"expired" in response.content
    # A fetch hands out a new link that works again.
    settings.PICTOR_MEDIA_URL_EXPIRE = 60
    assert get(fetch(api, tenant, Job.objects.get().pk)["output"][0]).status_code == 200


def test_a_link_with_one_character_changed_answers_403(api, tenant, demo_model, sync_queue):
    url = generate(api, tenant, samples=2)["output"][0]
    assert get(url).status_code == 200
    path, query = url.split("?", 1)
    signature_at = url.index("signature=") + len("signature=")
    altered = [
        # The signature, its first and last character.
        one_character_changed(url, signature_at),
        one_character_changed(url, len(url) - 1),
        # The expiry, pushed later.
        url.replace(f"expires={expires_of(url)}", f"expires={expires_of(url) + 1}"),
        # The image: the other sample of the same job, and another job id.
        path.replace("/0.png", "/1.png") + "?" + query,
        one_character_changed(path, path.rindex("/") - 1) + "?" + query,
        # No signature, or an empty one.
        path,
        url.split("&signature=")[0],
        url.split("signature=")[0] + "signature=",
    ]
    for link in altered:
        assert link != url
        response = get(link)
        assert response.status_code == 403, link
        assert b"not valid" in response.content
        assert not response.streaming


def test_another_tenants_link_with_a_character_changed_does_not_work(
    api, tenant, outsider, demo_model, sync_queue
):
    ours = generate(api, tenant)["output"][0]
    theirs = generate(api, outsider)["output"][0]
    our_path = urlsplit(ours).path
    their_path, their_query = theirs.split("?", 1)
    org_digit = their_path.index(f"/generations/{outsider.org.pk}/") + len("/generations/")

    attempts = [
        # Their link pointed at our organization's folder, or at our image.
        one_character_changed(their_path, org_digit) + "?" + their_query,
        f"http://testserver{our_path}?{their_query}",
        # Their signature with one character changed.
        one_character_changed(theirs, len(theirs) - 1),
    ]
    for link in attempts:
        assert get(link).status_code == 403, link
    # Unchanged, each link shows its own image, never the other's.
    assert body(get(theirs)) != body(get(ours))


def test_two_fetches_give_fresh_links_that_both_work(api, tenant, demo_model, sync_queue):
    job_id = generate(api, tenant)["id"]
    first = fetch(api, tenant, job_id)["output"][0]
    time.sleep(1.05)  # expiries are whole seconds
    second = fetch(api, tenant, job_id)["output"][0]

    assert first != second
    assert expires_of(second) > expires_of(first)
    assert urlsplit(first).path == urlsplit(second).path
    assert body(get(first)) == body(get(second))


def test_temp_links_expire_sooner(api, tenant, demo_model, sync_queue, settings):
    settings.PICTOR_MEDIA_TEMP_URL_EXPIRE = 1
    kept = generate(api, tenant)
    temp = generate(api, tenant, temp="yes")
    assert Job.objects.get(pk=temp["id"]).params["temp"] is True
    assert expires_of(temp["output"][0]) < expires_of(kept["output"][0]) - 3600

    time.sleep(max(0.0, expires_of(temp["output"][0]) - time.time()) + 0.1)
    assert get(temp["output"][0]).status_code == 403
    assert get(kept["output"][0]).status_code == 200
    # Every fetch of the temp job signs short links again.
    refetched = fetch(api, tenant, temp["id"])["output"][0]
    assert expires_of(refetched) <= time.time() + 2


def test_temp_images_are_deleted_once_their_links_expire(
    api, tenant, demo_model, sync_queue, settings, media_dir
):
    from generation.retention import expire_outputs

    kept = generate(api, tenant)
    temp = generate(api, tenant, temp="yes")
    folder = media_dir / "generations" / str(tenant.org.pk)

    assert expire_outputs(timezone.now()) == 0
    later = timezone.now() + timedelta(seconds=settings.PICTOR_MEDIA_TEMP_URL_EXPIRE + 1)
    assert expire_outputs(later) == 1
    assert not (folder / str(temp["id"])).exists()
    assert (folder / str(kept["id"]) / "0.png").is_file()
    assert fetch(api, tenant, temp["id"])["message"] == "Outputs expired"
    assert get(kept["output"][0]).status_code == 200


def test_temp_applies_to_future_links_too(api, tenant, demo_model, no_wait, settings):
    settings.PICTOR_MEDIA_TEMP_URL_EXPIRE = 600
    status, data = api.post(
        "/api/v3/text2img", {"key": tenant.key, "prompt": "a fox", "temp": True, **SMALL}
    )
    assert (status, data["status"]) == (200, "processing"), data
    assert expires_of(data["future_links"][0]) <= time.time() + 601


def test_input_images_are_only_reachable_through_signed_links(
    api, tenant, demo_model, sync_queue, media_dir
):
    data = generate(
        api,
        tenant,
        "/api/v3/img2img",
        init_image=png_base64(noise_image(64, 64)),
        base64="yes",
        strength=0.5,
    )
    name = Job.objects.get(pk=data["id"]).params["init_image"]
    assert name.startswith(f"inputs/{tenant.org.pk}/")
    assert (media_dir / name).is_file()

    assert get(f"/media/{name}").status_code == 404
    assert get(f"/files/{name}").status_code == 403
    link = media.signed_url(name, 60)
    response = get(link)
    assert response.status_code == 200
    assert Image.open(io.BytesIO(body(response))).size == (64, 64)


def test_a_signed_link_never_reaches_outside_media_root(settings, media_dir, tmp_path):
    media_dir.mkdir(parents=True, exist_ok=True)
    (tmp_path / "secret.txt").write_text("not an image")
    (media_dir / "escape.png").symlink_to(tmp_path / "secret.txt")
    for name in ("../secret.txt", "escape.png", "generations/../../secret.txt"):
        assert get(media.signed_url(name, 60)).status_code == 404, name


def test_the_history_page_shows_fresh_signed_thumbnails(
    client, api, tenant, demo_model, sync_queue
):
    data = generate(api, tenant)
    user = User.objects.create_user("member@example.com", "pw-123456789")
    Membership.objects.create(user=user, organization=tenant.org, role=Membership.Role.MEMBER)
    client.force_login(user)

    page = client.get("/app/history/").content.decode()
    sources = [html.unescape(s) for s in re.findall(r'<img src="([^"]+)"', page)]
    assert len(sources) == 1
    assert sources[0].startswith(f"/files/generations/{tenant.org.pk}/{data['id']}/0.png?")
    assert "/media/" not in page
    assert get(sources[0]).status_code == 200


@pytest.mark.parametrize(
    ("mode", "header"), [("nginx", "X-Accel-Redirect"), ("apache", "X-Sendfile")]
)
def test_the_proxy_can_send_the_file(
    api, tenant, demo_model, sync_queue, settings, media_dir, mode, header
):
    settings.PICTOR_MEDIA_SENDFILE = mode
    data = generate(api, tenant)
    name = f"generations/{tenant.org.pk}/{data['id']}/0.png"

    response = get(data["output"][0])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert body(response) == b""
    expected = f"/protected-media/{name}" if mode == "nginx" else str((media_dir / name).resolve())
    assert response[header] == expected
    # The proxy only sees the header after the signature was checked.
    assert header not in get(one_character_changed(data["output"][0], -1)).headers


# S3 --------------------------------------------------------------------------------------------


def storage_from_settings(**env: str) -> dict[str, Any]:
    """STORAGES["default"] as sdplatform/settings.py builds it from this environment."""
    code = (
        "import django, json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'sdplatform.settings';"
        "django.setup(); from django.conf import settings;"
        "print(json.dumps(settings.STORAGES['default']))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "PICTOR_MEDIA_"))}
    return python_json(code, {**clean, **env}, timeout=60)


@pytest.fixture
def s3_storage(settings, s3_endpoint, demo_model) -> str:
    """Images in a fresh private bucket, with the storage options settings.py gives."""
    import boto3

    bucket = f"pictor-{time.time_ns() % 10**10}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_from_settings(
            S3_BUCKET=bucket,
            S3_ENDPOINT_URL=s3_endpoint,
            S3_ACCESS_KEY_ID="test",
            S3_SECRET_ACCESS_KEY="test",
            S3_REGION="us-east-1",
            # Still honoured: signing is not optional any more.
            S3_PRESIGNED_URLS="false",
            S3_CUSTOM_DOMAIN="cdn.example.com",
        ),
    }
    settings.S3_BUCKET = bucket
    return bucket


def test_on_s3_answers_carry_presigned_urls_with_the_configured_expiry(
    api, tenant, sync_queue, settings, s3_storage, s3_endpoint
):
    settings.PICTOR_MEDIA_URL_EXPIRE = 7200
    settings.PICTOR_MEDIA_TEMP_URL_EXPIRE = 900
    data = generate(api, tenant)
    url = data["output"][0]
    key = f"generations/{tenant.org.pk}/{data['id']}/0.png"
    assert url.startswith(f"{s3_endpoint}/{s3_storage}/{key}?")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["7200"]
    assert query["X-Amz-Signature"][0]

    signed = requests.get(url, timeout=10)
    assert signed.status_code == 200
    assert Image.open(io.BytesIO(signed.content)).size == (64, 64)
    # The bucket is private: the object without a signature is refused.
    assert requests.get(url.split("?", 1)[0], timeout=10).status_code == 403
    # Nothing is served locally for it either.
    assert get(f"/files/{key}").status_code == 403
    assert get(f"/media/{key}").status_code == 404

    temp = generate(api, tenant, temp="yes")["output"][0]
    assert parse_qs(urlsplit(temp).query)["X-Amz-Expires"] == ["900"]


def test_on_s3_each_fetch_presigns_again(api, tenant, sync_queue, s3_storage):
    job_id = generate(api, tenant)["id"]
    first = fetch(api, tenant, job_id)["output"][0]
    time.sleep(1.05)  # X-Amz-Date has whole seconds
    second = fetch(api, tenant, job_id)["output"][0]
    assert first != second
    assert requests.get(first, timeout=10).content == requests.get(second, timeout=10).content


def test_a_temp_jobs_links_end_when_its_images_are_deleted(tenant, demo_model):
    # Defaults: both settings are 24 hours. A kept job's link lasts 24 hours from each fetch;
    # a temp job 23 hours old has one hour left before retention deletes its images.
    day_old = timezone.now() - timedelta(hours=23)
    kept = Job.objects.create(organization=tenant.org, model=demo_model, params={})
    temp = Job.objects.create(organization=tenant.org, model=demo_model, params={"temp": True})
    Job.objects.filter(pk__in=[kept.pk, temp.pk]).update(created_at=day_old)
    kept.refresh_from_db()
    temp.refresh_from_db()
    assert media.job_lifetime(kept) == 24 * 3600
    assert 3590 <= media.job_lifetime(temp) <= 3601
    # Past its deletion time, a link still gets the shortest lifetime, never a negative one.
    Job.objects.filter(pk=temp.pk).update(created_at=timezone.now() - timedelta(days=2))
    temp.refresh_from_db()
    assert media.job_lifetime(temp) == 1
