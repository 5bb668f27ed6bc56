"""The account pages: sign up, log in (rate limited), password reset, email change, deletion."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from accounts.models import ApiKey, Membership, Organization, User
from accounts.services import get_or_create_organization
from billing.models import CreditEntry, Plan
from generation.models import Job

PASSWORD = "correct-horse-battery-9"


def signup(client, email="ada@example.com", organization="Analytical Engines"):
    return client.post(
        "/accounts/signup/",
        {"email": email, "password": PASSWORD, "organization": organization},
    )


@pytest.mark.django_db
def test_it_signs_up_with_an_organization_on_the_free_plan(client):
    response = signup(client)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/verify/"
    user = User.objects.get(email="ada@example.com")
    membership = Membership.objects.get(user=user)
    org = membership.organization
    assert membership.role == Membership.Role.OWNER
    assert (org.name, org.slug) == ("Analytical Engines", "analytical-engines")
    free = Plan.objects.get(slug="free")
    assert org.plan == free
    # The free credits wait for the emailed link (tests/test_signup.py has the rest).
    assert org.credit_balance == 0
    [message] = mail.outbox
    link = re.search(r"http://testserver(/accounts/verify/\S+/)", message.body).group(1)
    assert client.get(link).status_code == 302
    org.refresh_from_db()
    assert org.credit_balance == free.monthly_credits == 100
    assert CreditEntry.objects.get(organization=org).amount == 100
    # Logged in: the overview shows the organization.
    page = client.get("/app/")
    assert page.status_code == 200
    assert "Analytical Engines" in page.content.decode()


@pytest.mark.django_db
def test_it_refuses_a_taken_email_a_weak_password_and_a_reserved_slug(client):
    signup(client)
    client.logout()
    again = signup(client, email="ADA@example.com")
    assert "already exists" in again.content.decode()
    weak = client.post(
        "/accounts/signup/",
        {"email": "bob@example.com", "password": "123", "organization": "Bob"},
    )
    assert weak.status_code == 200
    assert "too short" in weak.content.decode()
    assert not User.objects.filter(email="bob@example.com").exists()
    # "anonymous" belongs to Dan's public key; a team named so gets another slug.
    signup(client, email="anon@example.com", organization="Anonymous")
    assert Organization.objects.get(name="Anonymous").slug == "anonymous-2"


@pytest.mark.django_db
def test_it_logs_in_and_out(client):
    signup(client)
    client.post("/accounts/logout/")
    assert client.get("/app/").status_code == 302
    response = client.post(
        "/accounts/login/", {"username": "ada@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/app/"
    assert client.get("/app/").status_code == 200


@pytest.mark.django_db
def test_it_limits_failed_logins_per_email_and_address(client):
    signup(client)
    client.post("/accounts/logout/")
    for _ in range(5):
        wrong = client.post("/accounts/login/", {"username": "ada@example.com", "password": "x"})
        assert wrong.status_code == 200
    blocked = client.post("/accounts/login/", {"username": "ada@example.com", "password": PASSWORD})
    assert blocked.status_code == 429
    assert "Too many failed login attempts" in blocked.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_password_reset_by_email(client):
    signup(client)
    client.post("/accounts/logout/")
    mail.outbox.clear()  # the sign-up's verification email
    response = client.post("/accounts/password/reset/", {"email": "ada@example.com"})
    assert response.status_code == 302
    [message] = mail.outbox
    assert message.to == ["ada@example.com"]
    link = re.search(r"http://testserver(/accounts/password/reset/\S+/)", message.body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "another-long-secret-5", "new_password2": "another-long-secret-5"},
    )
    assert done.status_code == 302
    assert User.objects.get(email="ada@example.com").check_password("another-long-secret-5")
    # The link works once.
    assert "no longer valid" in client.get(link, follow=True).content.decode()


@pytest.mark.django_db
def test_email_change_needs_the_password(client):
    signup(client)
    wrong = client.post("/accounts/", {"email-email": "new@example.com", "email-password": "x"})
    assert "not right" in wrong.content.decode()
    client.post("/accounts/", {"email-email": "new@example.com", "email-password": PASSWORD})
    assert User.objects.filter(email="new@example.com").exists()


@pytest.mark.django_db
def test_deleting_the_account_deletes_an_organization_left_empty(client, demo_model):
    signup(client)
    org = Organization.objects.get(slug="analytical-engines")
    ApiKey.objects.issue(org)
    Job.objects.create(organization=org, model=demo_model, params={"samples": 1})
    # A second organization with another member survives.
    shared = get_or_create_organization("shared")
    user = User.objects.get(email="ada@example.com")
    Membership.objects.create(user=user, organization=shared)
    other = User.objects.create_user("grace@example.com", PASSWORD)
    Membership.objects.create(user=other, organization=shared)

    page = client.get("/accounts/").content.decode()
    assert "Analytical Engines" in page
    response = client.post("/accounts/", {"delete-password": PASSWORD, "delete-confirm": "on"})
    assert response.status_code == 302
    assert not User.objects.filter(email="ada@example.com").exists()
    assert not Organization.objects.filter(slug="analytical-engines").exists()
    assert not Job.objects.filter(organization_id=org.pk).exists()
    assert Organization.objects.filter(slug="shared").exists()


@pytest.mark.django_db
def test_pages_carry_csrf_and_security_headers(client):
    page = client.get("/accounts/signup/")
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    assert page["X-Frame-Options"] == "DENY"
    assert page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin"
    assert "default-src 'self'" in page["Content-Security-Policy"]
