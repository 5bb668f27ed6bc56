"""The key may come in the body, a key/Key header or a Bearer token; revoked keys stop."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey, ApiKeyManager, Organization
from billing import ledger
from billing.models import CreditEntry

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


def rows() -> tuple[int, int, int]:
    return Organization.objects.count(), ApiKey.objects.count(), CreditEntry.objects.count()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "newco", "--name", "x" * 500], "--name has at most 100 characters, not 500"),
        (["--org", "newco", "--name", "ci\nrunner"], "--name cannot hold line breaks"),
        (["--org", "newco", "--name", "nul\x00"], "--name cannot hold line breaks"),
        (["--org", "o" * 300], "is not an organization slug"),
        (["--org", ""], "'' is not an organization slug"),
        (["--org", "日本"], "is not an organization slug"),
        (["--org", "Fuzz CA!!"], "lowercase letters and digits, with single hyphens"),
    ],
)
def test_apikey_create_refuses_bad_input_and_writes_nothing(args, message):
    before = rows()
    with pytest.raises(CommandError, match=message):
        call_command("apikey", "create", *args)
    assert rows() == before


@pytest.mark.parametrize("given", ["Acme", "acme!", " acme"])
def test_apikey_create_never_issues_a_key_for_a_slug_it_made_up(tenant, given):
    before = rows()
    with pytest.raises(CommandError, match="is not an organization slug"):
        call_command("apikey", "create", "--org", given)
    assert rows() == before


def test_apikey_create_makes_the_organization_and_its_key_or_neither(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("the key could not be stored")

    monkeypatch.setattr(ApiKeyManager, "issue", fail)
    before = rows()
    with pytest.raises(RuntimeError):
        call_command("apikey", "create", "--org", "newco", "--name", "ci")
    assert rows() == before
    assert not Organization.objects.filter(slug="newco").exists()


def test_apikey_create_refuses_a_plan_whose_credits_the_balance_cannot_hold(free_tenant):
    ledger.set_balance(free_tenant.org, ledger.MAX_BALANCE)
    before = rows()
    with pytest.raises(CommandError, match="freeloader stays on its plan, and no key was made"):
        call_command("apikey", "create", "--org", "freeloader", "--plan", "basic")
    assert rows() == before
    free_tenant.org.refresh_from_db()
    assert (free_tenant.org.plan.slug, free_tenant.org.credit_balance) == (
        "free",
        ledger.MAX_BALANCE,
    )
