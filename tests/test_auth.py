"""The key may come in the body, a key/Key header or a Bearer token; revoked keys stop."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from accounts.models import ApiKey, Organization

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("how", ["body", "key header", "Key header", "bearer"])
def test_it_accepts_the_key_in_every_documented_place(api, tenant, demo_model, how):
    body, headers = {}, {}
    if how == "body":
        body["key"] = tenant.key
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {tenant.key}"
    else:
        headers[how.split()[0]] = tenant.key
    status, data = api.post("/api/v3/system_load", body, **headers)
    assert status == 200, data
    assert data["status"] == "ok"


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_key_counts_whatever_content_type_the_body_has(client, tenant, content_type):
    # requests.post(url, data=json.dumps(...)) sends no Content-Type; curl -d sends a form's.
    # The ModelsLab views read such a body as JSON, its key included.
    body = json.dumps({"key": tenant.key})
    response = client.generic("POST", "/api/v3/system_load", body, content_type=content_type)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "ok"


def test_it_stores_only_a_prefix_and_a_digest(tenant):
    key = ApiKey.objects.get(organization=tenant.org)
    assert tenant.key.startswith("pct_")
    assert tenant.key.startswith(key.prefix)
    assert tenant.key not in (key.prefix, key.digest)
    assert len(key.digest) == 64


def test_it_records_last_use(api, tenant, demo_model):
    assert ApiKey.objects.get(organization=tenant.org).last_used_at is None
    api.post("/api/v3/system_load", {"key": tenant.key})
    assert ApiKey.objects.get(organization=tenant.org).last_used_at is not None


def test_a_revoked_key_is_invalid(api, tenant, demo_model, capsys):
    call_command("apikey", "revoke", "--key", tenant.key)
    status, data = api.post("/api/v3/system_load", {"key": tenant.key})
    assert status == 401
    assert data["message"] == "Invalid Api Key"


def test_apikey_create_prints_the_key_alone_and_creates_the_org(api, demo_model, capsys):
    call_command("apikey", "create", "--org", "newco", "--plan", "basic")
    out = capsys.readouterr().out
    raw = out.strip()
    assert out == raw + "\n"
    assert raw.startswith("pct_")
    org = Organization.objects.get(slug="newco")
    assert org.plan.slug == "basic"
    status, _ = api.post("/api/v3/system_load", {"key": raw})
    assert status == 200


def test_apikey_create_defaults_to_the_free_plan(capsys):
    call_command("apikey", "create", "--org", "thrifty")
    assert Organization.objects.get(slug="thrifty").plan.slug == "free"


def test_apikey_create_refuses_an_unknown_plan():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No plan 'gold'"):
        call_command("apikey", "create", "--org", "x", "--plan", "gold")
