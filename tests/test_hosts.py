"""Absolute URLs come from PICTOR_BASE_URL, never from the Host header a client sends.

Each test sends a forged `Host: evil.example` that ALLOWED_HOSTS lets through (as `*` did in
production before), so only the code that builds the URL stands between the forger and a link
to their own site in a victim's mailbox, an API answer or a webhook.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone
from storages.backends.s3 import S3Storage

from accounts.models import Membership, User
from generation import webhooks
from generation.models import Job, WebhookDelivery
from sdplatform.middleware import content_security_policy
from tests.helpers import make_tenant

pytestmark = pytest.mark.django_db

BASE = "https://pictor.example.com"
FORGED = "evil.example"
PASSWORD = "correct-horse-battery-9"


@pytest.fixture
def forged(settings: Any) -> Client:
    """A client whose every request says `Host: evil.example`, which the site lets in."""
    settings.ALLOWED_HOSTS = ["pictor.example.com", FORGED]
    settings.PICTOR_BASE_URL = BASE
    return Client(HTTP_HOST=FORGED)


def owner_of(slug: str) -> tuple[User, Any]:
    tenant = make_tenant(slug)
    user = User.objects.create_user(
        f"owner@{slug}.example.com", PASSWORD, email_verified_at=timezone.now()
    )
    Membership.objects.create(user=user, organization=tenant.org, role=Membership.Role.OWNER)
    return user, tenant


def test_it_mails_the_password_reset_link_on_the_base_url(forged):
    User.objects.create_user("ada@example.com", PASSWORD)
    response = forged.post("/accounts/password/reset/", {"email": "ada@example.com"})
    assert response.status_code == 302
    [message] = mail.outbox
    assert FORGED not in message.subject + message.body
    link = re.search(r"(\S+/accounts/password/reset/\S+/)", message.body).group(1)
    assert link.startswith(f"{BASE}/accounts/password/reset/")
    # The link is a working one: it leads to the form that sets a new password.
    page = Client(HTTP_HOST="pictor.example.com").get(urlsplit(link).path, follow=True)
    assert page.status_code == 200
    assert 'name="new_password1"' in page.content.decode()


def test_it_mails_the_invitation_link_on_the_base_url(forged):
    owner, _ = owner_of("acme")
    forged.force_login(owner)
    response = forged.post("/app/team/invite/", {"email": "new@example.com", "role": "member"})
    assert response.status_code == 302
    [message] = mail.outbox
    assert FORGED not in message.subject + message.body
    link = re.search(r"(\S+/accounts/invite/\S+/)", message.body).group(1)
    assert link.startswith(f"{BASE}/accounts/invite/")
    invitation = Client(HTTP_HOST="pictor.example.com").get(urlsplit(link).path)
    assert "Sign up to accept" in invitation.content.decode()


def test_it_answers_fetch_result_output_and_webhook_links_on_the_base_url(
    forged, demo_model, no_wait
):
    tenant = make_tenant("acme")
    response = forged.post(
        "/api/v3/text2img",
        {
            "key": tenant.key,
            "prompt": "a lighthouse at dusk",
            "width": 64,
            "height": 64,
            "webhook": "https://hooks.example.com/done",
        },
        content_type="application/json",
    )
    data = response.json()
    assert data["status"] == "processing", data
    assert FORGED not in json.dumps(data)
    assert data["fetch_result"] == f"{BASE}/api/v3/fetch/{data['id']}"
    assert all(link.startswith(f"{BASE}/") for link in data["future_links"])

    fetched = forged.post(
        f"/api/v3/fetch/{data['id']}", {"key": tenant.key}, content_type="application/json"
    ).json()
    assert FORGED not in json.dumps(fetched)
    assert fetched["fetch_result"] == data["fetch_result"]

    # The webhook is built later, in a worker, from the base stored with the job.
    assert Job.objects.get(pk=data["id"]).base_url == BASE
    webhooks.job_finished(data["id"])
    payload = WebhookDelivery.objects.get(job_id=data["id"]).payload
    assert FORGED not in json.dumps(payload)
    assert payload["fetch_result"] == data["fetch_result"]


def test_the_pages_show_api_examples_on_the_base_url(forged):
    owner, _ = owner_of("acme")
    forged.force_login(owner)
    page = forged.get("/app/playground/").content.decode()
    assert f'data-base="{BASE}"' in page
    assert FORGED not in page


def test_without_a_base_url_development_links_follow_the_host_called(settings):
    settings.PICTOR_BASE_URL = ""
    User.objects.create_user("ada@example.com", PASSWORD)
    Client().post("/accounts/password/reset/", {"email": "ada@example.com"})
    [message] = mail.outbox
    assert "http://testserver/accounts/password/reset/" in message.body


# Where the pages may load images from (Content-Security-Policy img-src).


def img_src(policy: str) -> list[str]:
    (directive,) = [d for d in policy.split("; ") if d.startswith("img-src ")]
    return directive.split()[1:]


def test_the_pages_allow_images_only_from_this_site_and_data_urls(client, settings):
    settings.S3_BUCKET = ""
    settings.PICTOR_BASE_URL = ""
    page = client.get("/accounts/login/")
    assert img_src(page["Content-Security-Policy"]) == ["'self'", "data:"]


def test_the_pages_allow_images_from_the_base_url(client, settings):
    settings.S3_BUCKET = ""
    settings.PICTOR_BASE_URL = "https://pictor.example.com:8443"
    page = client.get("/accounts/login/")
    assert img_src(page["Content-Security-Policy"]) == [
        "'self'",
        "data:",
        "https://pictor.example.com:8443",
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"endpoint_url": "http://minio:9000"},
        {"endpoint_url": "https://abc.r2.cloudflarestorage.com/"},
        {"endpoint_url": "https://s3.example.net", "addressing_style": "virtual"},
        {},
        {"region_name": "eu-west-1"},
        {"region_name": "eu-west-1", "bucket_name": "images.example.com"},
    ],
    ids=["minio", "r2", "virtual-hosted", "aws", "aws-region", "aws-dotted-bucket"],
)
def test_the_pages_allow_images_from_the_bucket_the_links_point_at(settings, options):
    options = {"bucket_name": "pictor", **options}
    settings.S3_BUCKET = options["bucket_name"]
    settings.PICTOR_BASE_URL = ""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "access_key": "test",
                "secret_key": "test",
                "signature_version": "s3v4",
                **options,
            },
        },
    }
    storage = S3Storage(**settings.STORAGES["default"]["OPTIONS"])
    link = urlsplit(storage.url("generations/1/2/0.png"))
    sources = img_src(content_security_policy())
    assert f"{link.scheme}://{link.netloc}" in sources
    # Only the bucket's own origins: no wildcard scheme or host lets any other site in.
    assert not {"https:", "http:", "*", "blob:"} & set(sources)
    assert len(sources) <= 4


def test_a_page_carries_the_bucket_origin_in_its_policy(client, settings):
    settings.S3_BUCKET = "pictor"
    settings.PICTOR_BASE_URL = ""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": "pictor", "endpoint_url": "http://minio:9000"},
        },
    }
    page = client.get("/accounts/login/")
    assert img_src(page["Content-Security-Policy"]) == ["'self'", "data:", "http://minio:9000"]
