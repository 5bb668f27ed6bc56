"""The admin: every model listed, searchable; the actions staff use to steer tenants and jobs."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.core.files.storage import default_storage
from django.db.models import IntegerField
from django.forms.models import model_to_dict
from django.test import RequestFactory
from django.urls import reverse

from accounts.models import ApiKey, Organization, User
from billing.models import CreditEntry, Plan
from generation.models import Job
from tests.helpers import make_tenant
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("root@example.com", "pw-123456789")
    client.force_login(user)
    return client


def act(client, model, action, ids, **extra):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return client.post(url, {"action": action, "_selected_action": ids, **extra}, follow=True)


@pytest.mark.parametrize(
    "model",
    [m for m in apps.get_models() if m._meta.app_label in ("accounts", "billing", "generation")],
    ids=lambda m: m.__name__,
)
def test_every_model_has_a_searchable_list(staff, model, demo_model):
    make_tenant("acme")
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert staff.get(url).status_code == 200
    assert staff.get(url, {"q": "acme"}).status_code == 200


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m.__name__)
def test_an_action_on_a_selection_no_row_can_have_answers_400(staff, model):
    # Django filters by the posted ids as they come: a NUL byte in text fails on PostgreSQL,
    # "abc" for a numeric key fails everywhere; neither may be a 500, on any model listed.
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    request = RequestFactory().get(url)
    request.user = User.objects.get(email="root@example.com")
    actions = admin.site._registry[model].get_actions(request)
    # A read-only list has no actions, so Django never reads a selection for it.
    expected = 400 if actions else 200
    junk = ["\x00"] + (["abc", ""] if isinstance(model._meta.pk, IntegerField) else [])
    for value in junk:
        response = staff.post(url, {"action": next(iter(actions), ""), "_selected_action": value})
        assert response.status_code == expected, (value, response.status_code)


def test_grant_credits_asks_for_the_amount_then_grants_once(staff):
    acme = make_tenant("acme", "free").org
    before = acme.credit_balance
    page = act(staff, Organization, "grant_credits", [acme.pk])
    assert "amount" in page.content.decode()
    act(staff, Organization, "grant_credits", [acme.pk], apply="1", amount=250, note="goodwill")
    acme.refresh_from_db()
    assert acme.credit_balance == before + 250
    assert CreditEntry.objects.filter(organization=acme, note="goodwill").count() == 1


def test_change_plan_moves_the_organization_and_grants_its_credits(staff):
    from billing.models import Plan

    acme = make_tenant("acme", "free").org
    basic = Plan.objects.get(slug="basic")
    act(staff, Organization, "change_plan", [acme.pk], apply="1", plan=basic.pk)
    acme.refresh_from_db()
    assert acme.plan == basic
    assert acme.credit_balance == 100 + basic.monthly_credits


def test_credits_past_a_balances_limit_are_an_error_on_the_page(staff):
    from billing import ledger

    acme = make_tenant("acme", "free").org
    globex = make_tenant("globex", "free").org
    ledger.set_balance(acme, ledger.MAX_BALANCE)
    basic = Plan.objects.get(slug="basic")
    entries = CreditEntry.objects.count()

    page = act(staff, Organization, "grant_credits", [acme.pk], apply="1", amount=1)
    assert page.status_code == 200
    assert "Nothing granted to acme: +1 credits would take the balance past" in page.text
    page = act(staff, Organization, "change_plan", [acme.pk, globex.pk], apply="1", plan=basic.pk)
    assert page.status_code == 200
    assert "Plan unchanged for acme: +3000 credits would take the balance past" in page.text
    assert "Put 1 organization(s) on the Basic plan." in page.text

    acme.refresh_from_db()
    globex.refresh_from_db()
    assert (acme.plan.slug, acme.credit_balance) == ("free", ledger.MAX_BALANCE)
    assert (globex.plan.slug, globex.credit_balance) == ("basic", 3_100)
    assert CreditEntry.objects.count() == entries + 1


def test_suspend_lift_and_revoke(staff, api):
    tenant = make_tenant("acme")
    act(staff, Organization, "suspend", [tenant.org.pk])
    assert api.post("/api/v3/system_load", {"key": tenant.key})[0] == 403
    act(staff, Organization, "lift_suspension", [tenant.org.pk])
    assert api.post("/api/v3/system_load", {"key": tenant.key})[0] == 200
    key = ApiKey.objects.get(organization=tenant.org)
    act(staff, ApiKey, "revoke", [key.pk])
    assert api.post("/api/v3/system_load", {"key": tenant.key})[0] == 401


def test_cancel_refunds_and_retry_queues_a_new_charged_job(staff, api, demo_model, no_wait):
    tenant = make_tenant("acme")
    status, data = api.post(
        "/api/v3/text2img", {"key": tenant.key, "prompt": "a kite", "width": 64, "height": 64}
    )
    assert status == 200
    job = Job.objects.get(pk=data["id"])
    tenant.org.refresh_from_db()
    charged = tenant.org.credit_balance
    act(staff, Job, "cancel", [job.pk])
    job.refresh_from_db()
    tenant.org.refresh_from_db()
    assert job.status == Job.Status.CANCELED
    assert tenant.org.credit_balance == charged + job.cost

    act(staff, Job, "retry", [job.pk])
    retried = Job.objects.exclude(pk=job.pk).get()
    assert retried.status == Job.Status.QUEUED
    assert retried.params == job.params
    tenant.org.refresh_from_db()
    assert tenant.org.credit_balance == charged


def test_retry_copies_the_input_images_and_refuses_a_job_whose_inputs_are_gone(
    staff, api, demo_model, no_wait
):
    tenant = make_tenant("acme")
    body = {"key": tenant.key, "prompt": "a kite", "width": 64, "height": 64}
    data = api.post("/api/v3/img2img", {**body, "init_image": png_base64(noise_image(64, 64))})[1]
    job = Job.objects.get(pk=data["id"])

    act(staff, Job, "retry", [job.pk])
    retried = Job.objects.exclude(pk=job.pk).get()
    assert retried.params["init_image"] != job.params["init_image"]
    assert default_storage.exists(retried.params["init_image"])

    default_storage.delete(job.params["init_image"])
    page = act(staff, Job, "retry", [job.pk]).content.decode()
    assert "its input images are no longer kept" in page
    assert Job.objects.count() == 2


def test_a_jobs_state_changes_only_through_the_actions(staff, api, demo_model, no_wait):
    tenant = make_tenant("acme", "free")
    data = api.post("/api/v3/text2img", {"key": tenant.key, "prompt": "x", "width": 64})[1]
    job = Job.objects.get(pk=data["id"])
    page = staff.get(reverse("admin:generation_job_change", args=[job.pk])).content.decode()
    # The form would fail or cancel a job without its refund, and leave its images counted.
    assert 'name="status"' not in page
    assert "Cancel (and refund)" in staff.get(reverse("admin:generation_job_changelist")).text


def change_plan(client, plan, steps_list):
    """POST the plan's admin form as it is, but for `steps_list` (the form's JSON text)."""
    data = {name: "" if value is None else value for name, value in model_to_dict(plan).items()}
    data["steps_list"] = steps_list
    return client.post(reverse("admin:billing_plan_change", args=[plan.pk]), data)


@pytest.mark.parametrize(
    "steps_list",
    ['["\\u0000"]', "[1e400]", '{"21": 1}', "[0]", "[21.5]", "[true]", "[151]", '"21"'],
)
def test_a_plans_steps_list_must_be_whole_step_counts(staff, steps_list):
    # Every request of the plan's tenants reads it: a wrong shape would fail them all.
    plan = Plan.objects.get(slug="free")
    before = plan.steps_list
    response = change_plan(staff, plan, steps_list)
    assert response.status_code == 200
    assert "Give a list of 1 to 20 step counts" in response.content.decode()
    plan.refresh_from_db()
    assert plan.steps_list == before


def test_a_plans_steps_list_of_step_counts_is_saved(staff):
    plan = Plan.objects.get(slug="free")
    assert change_plan(staff, plan, "[21, 31, 50]").status_code == 302
    plan.refresh_from_db()
    assert (plan.steps_list, plan.max_steps) == ([21, 31, 50], 50)


def test_a_stored_models_file_list_is_not_typed_in_the_admin(staff, demo_model):
    page = staff.get(reverse("admin:generation_aimodel_change", args=[demo_model.pk]))
    assert page.status_code == 200
    for field in ("files", "sha256", "size", "storage_prefix"):
        assert f'name="{field}"' not in page.content.decode()
