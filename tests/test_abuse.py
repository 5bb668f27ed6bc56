"""Blocked prompts add strikes, enough strikes suspend every key; revoked and expired keys stop."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts import abuse
from accounts.models import ApiKey, Organization, Strike, User
from generation.models import Job

pytestmark = pytest.mark.django_db

SUSPENDED = {"status": "error", "message": "Account suspended"}
BLOCKED = {"status": "error", "message": {"prompt": ["The prompt contains blocked content."]}}


_takes = itertools.count()


def text2img(api, key, prompt="", **fields):
    # A fresh default prompt each time, so the 30-second duplicate filter never answers instead.
    prompt = prompt or f"a red fox in the snow, take {next(_takes)}"
    body = {"key": key, "prompt": prompt, "width": 64, "height": 64, **fields}
    return api.post("/api/v3/text2img", body)


def strikes_of(org: Organization) -> int:
    org.refresh_from_db()
    return org.strikes


def test_it_refuses_a_blocked_prompt_and_adds_a_strike(api, tenant, demo_model, no_wait):
    status, data = text2img(api, tenant.key, "a photo of a loli on a beach")
    assert status == 400
    assert data == BLOCKED
    assert "loli" not in str(data)
    assert not Job.objects.exists()
    strike = Strike.objects.get()
    assert strike.organization == tenant.org
    assert strike.api_key == ApiKey.objects.get(organization=tenant.org)
    assert strike.prompt == "a photo of a loli on a beach"
    assert "loli" in strike.reason
    assert strikes_of(tenant.org) == 1
    assert tenant.org.suspended_at is None


@pytest.mark.django_db(transaction=True)
def test_the_strike_is_committed_although_the_request_fails(api, tenant, demo_model, no_wait):
    status, _ = text2img(api, tenant.key, "child porn")
    assert status == 400
    assert Strike.objects.filter(organization=tenant.org).count() == 1
    assert strikes_of(tenant.org) == 1
    assert not Job.objects.exists()


def test_the_negative_prompt_may_name_a_blocked_term(api, tenant, demo_model, no_wait):
    status, data = text2img(api, tenant.key, negative_prompt="loli, child nude, lowres")
    assert status == 200, data
    assert data["status"] == "processing"
    assert Job.objects.count() == 1
    assert strikes_of(tenant.org) == 0


@pytest.mark.parametrize(
    "prompt",
    [
        "LOLI girl",
        "L0L1 girl",
        "1oli girl",
        "a ch1ld p0rn scene",
        "child_porn",
        "CHILD-PORN",
        "childporn",
        "child   ...   porn",
        "j41lb41t",
        "pédo",
        "masterpiece, (nude child:1.2), best quality",
    ],
)
def test_it_sees_through_case_punctuation_and_leetspeak(api, tenant, demo_model, no_wait, prompt):
    status, data = text2img(api, tenant.key, prompt)
    assert (status, data) == (400, BLOCKED), prompt
    assert strikes_of(tenant.org) == 1


@pytest.mark.parametrize(
    "prompt",
    [
        "a lollipop on a table",
        "a shotgun on a wall",
        "a torpedo under water",
        "a child flying a kite in a park",
        "a nude marble statue",
    ],
)
def test_it_matches_whole_words_only(api, tenant, demo_model, no_wait, prompt):
    status, data = text2img(api, tenant.key, prompt)
    assert status == 200, data
    assert strikes_of(tenant.org) == 0


def test_pictor_blocked_terms_extends_the_list(api, tenant, demo_model, no_wait, settings):
    status, _ = text2img(api, tenant.key, "a portrait of Grumbleweed")
    assert status == 200
    settings.PICTOR_BLOCKED_TERMS = ("grumbleweed", "Ugly Troll")
    status, data = text2img(api, tenant.key, "a portrait of GRUMBLEWEED")
    assert (status, data) == (400, BLOCKED)
    status, data = text2img(api, tenant.key, "an ugly-troll under a bridge")
    assert (status, data) == (400, BLOCKED)
    status, _ = text2img(api, tenant.key, "loli")
    assert status == 400, "the built-in list still applies"
    assert strikes_of(tenant.org) == 3


def test_the_limit_suspends_every_key_of_the_organization(
    api, tenant, outsider, demo_model, no_wait, settings
):
    settings.PICTOR_STRIKE_LIMIT = 2
    _, second_key = ApiKey.objects.issue(tenant.org, name="second")
    _, before = text2img(api, tenant.key)
    job_id = before["id"]

    assert text2img(api, tenant.key, "lolicon")[0] == 400
    tenant.org.refresh_from_db()
    assert tenant.org.suspended_at is None
    assert text2img(api, second_key, "shotacon")[0] == 400
    tenant.org.refresh_from_db()
    assert tenant.org.strikes == 2
    assert tenant.org.suspended_at is not None
    assert "2 blocked-content strikes" in tenant.org.suspension_reason
    assert Strike.objects.filter(organization=tenant.org).count() == 2

    for key in (tenant.key, second_key):
        assert text2img(api, key) == (403, SUSPENDED)
        assert api.post(f"/api/v3/fetch/{job_id}", {"key": key}) == (403, SUSPENDED)
        assert api.get(f"/api/v3/fetch/{job_id}", key=key) == (403, SUSPENDED)
        assert api.post("/api/v4/dreambooth/model_list", {"key": key}) == (403, SUSPENDED)
        assert api.post("/api/v3/system_load", {"key": key}) == (403, SUSPENDED)
    assert Job.objects.count() == 1

    status, data = text2img(api, outsider.key)
    assert status == 200, data
    assert api.post("/api/v4/dreambooth/model_list", {"key": outsider.key})[0] == 200

    abuse.lift_suspension(tenant.org)
    tenant.org.refresh_from_db()
    assert (tenant.org.strikes, tenant.org.suspended_at, tenant.org.suspension_reason) == (
        0,
        None,
        "",
    )
    assert Strike.objects.filter(organization=tenant.org).count() == 2, "the log stays"
    for key in (tenant.key, second_key):
        assert text2img(api, key)[0] == 200
        assert api.post(f"/api/v3/fetch/{job_id}", {"key": key})[0] == 200
        assert api.post("/api/v4/dreambooth/model_list", {"key": key})[0] == 200


def test_staff_suspend_and_lift_in_the_admin(api, client, tenant, outsider, demo_model, no_wait):
    admin = User.objects.create_superuser("staff@example.com", "pw")
    client.force_login(admin)
    changelist = "/admin/accounts/organization/"

    response = client.post(
        changelist, {"action": "suspend", "_selected_action": [tenant.org.pk]}, follow=True
    )
    assert response.status_code == 200
    tenant.org.refresh_from_db()
    assert tenant.org.suspended_at is not None
    assert "staff@example.com" in tenant.org.suspension_reason
    assert text2img(api, tenant.key) == (403, SUSPENDED)

    page = client.get(changelist, {"suspended": "yes"}).content.decode()
    assert "acme" in page
    assert "globex" not in page

    response = client.post(
        changelist, {"action": "lift_suspension", "_selected_action": [tenant.org.pk]}, follow=True
    )
    assert response.status_code == 200
    tenant.org.refresh_from_db()
    assert tenant.org.suspended_at is None
    assert text2img(api, tenant.key)[0] == 200


def test_the_admin_shows_strikes_read_only(client, tenant, demo_model):
    abuse.add_strike(tenant.org, None, reason="Blocked term 'loli' in the prompt", prompt="loli")
    client.force_login(User.objects.create_superuser("staff@example.com", "pw"))
    page = client.get(f"/admin/accounts/organization/{tenant.org.pk}/change/").content.decode()
    assert "Blocked term" in page
    strike = Strike.objects.get()
    assert client.get(f"/admin/accounts/strike/{strike.pk}/change/").status_code == 200
    client.post(f"/admin/accounts/strike/{strike.pk}/delete/", {"post": "yes"})
    assert Strike.objects.filter(pk=strike.pk).exists()
    assert client.get("/admin/accounts/strike/add/").status_code == 403


def test_a_revoked_key_answers_invalid(api, tenant, demo_model):
    key = ApiKey.objects.get(organization=tenant.org)
    key.revoke()
    status, data = text2img(api, tenant.key)
    assert status == 401
    assert data["message"] == "Invalid Api Key"
    assert not Job.objects.exists()


def test_an_expired_key_answers_invalid(api, tenant, demo_model, no_wait):
    key, raw = ApiKey.objects.issue(tenant.org, name="short-lived")
    key.expires_at = timezone.now() + timedelta(hours=1)
    key.save()
    assert text2img(api, raw)[0] == 200

    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save()
    status, data = text2img(api, raw)
    assert status == 401
    assert data["message"] == "Invalid Api Key"
    assert api.post("/api/v4/dreambooth/model_list", {"key": raw})[0] == 401
    assert text2img(api, tenant.key)[0] == 200, "the organization's other keys still work"


def test_the_org_command_suspends_and_lifts(api, tenant, outsider, demo_model, no_wait):
    call_command("org", "suspend", "--org", "acme", "--reason", "chargeback fraud")
    tenant.org.refresh_from_db()
    assert tenant.org.suspension_reason == "chargeback fraud"
    assert text2img(api, tenant.key) == (403, SUSPENDED)
    assert text2img(api, outsider.key)[0] == 200

    call_command("org", "lift", "--org", "acme")
    tenant.org.refresh_from_db()
    assert tenant.org.suspended_at is None
    assert text2img(api, tenant.key)[0] == 200


@pytest.mark.parametrize("reason", ["chargeback\nfraud", "tab\there", "nul\x00", "\x1b[31mred"])
def test_the_org_command_refuses_a_reason_with_control_characters(tenant, reason):
    with pytest.raises(CommandError, match="--reason cannot hold line breaks"):
        call_command("org", "suspend", "--org", "acme", "--reason", reason)
    tenant.org.refresh_from_db()
    assert (tenant.org.suspended_at, tenant.org.suspension_reason) == (None, "")


def test_the_org_command_refuses_an_unknown_org():
    with pytest.raises(CommandError, match="No organization 'nope'"):
        call_command("org", "lift", "--org", "nope")
