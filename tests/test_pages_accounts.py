"""The account pages: sign up, log in (rate limited), password reset, email change, deletion."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from accounts.models import ApiKey, Membership, Organization, User
from accounts.services import get_or_create_organization
from billing import ledger
from billing.models import CreditEntry, Plan
from generation import quotas
from generation.models import AIModel, Job, OutputImage

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
def test_a_changed_email_is_unverified_until_its_own_link_is_followed(client):
    user, org = verified_owner("ada")
    client.force_login(user)
    response = client.post(
        "/accounts/", {"email-email": "new@example.com", "email-password": PASSWORD}
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert (user.email, user.email_verified_at) == ("new@example.com", None)
    # No key until the new address is proved; the mail went there, not to the old one.
    client.post("/app/keys/", {"name": "laptop"})
    assert not ApiKey.objects.filter(organization=org).exists()
    [message] = mail.outbox
    assert message.to == ["new@example.com"]
    link = re.search(r"http://testserver(/accounts/verify/\S+/)", message.body).group(1)
    client.get(link)
    user.refresh_from_db()
    assert user.email_verified_at is not None
    # The same address again is no change: it stays verified and nothing is sent.
    client.post("/accounts/", {"email-email": "new@example.com", "email-password": PASSWORD})
    user.refresh_from_db()
    assert user.email_verified_at is not None
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_the_only_owner_of_a_shared_organization_makes_another_owner_before_leaving(client):
    user, org = verified_owner("ada")
    other = User.objects.create_user("grace@example.com", PASSWORD)
    theirs = Membership.objects.create(user=other, organization=org)
    client.force_login(user)
    page = client.get("/accounts/").content.decode()
    assert "You are the only owner of <strong>ada</strong>" in page
    delete = {"delete-password": PASSWORD, "delete-confirm": "on"}
    response = client.post("/accounts/", delete)
    assert response.status_code == 200
    assert "Make one of them an owner on the team page" in response.content.decode()
    assert User.objects.filter(pk=user.pk).exists()
    assert Membership.objects.filter(user=user, organization=org).exists()

    theirs.role = Membership.Role.OWNER
    theirs.save()
    assert client.post("/accounts/", delete).status_code == 302
    assert not User.objects.filter(pk=user.pk).exists()
    assert list(org.memberships.values_list("user__email", "role")) == [
        ("grace@example.com", Membership.Role.OWNER)
    ]


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
def test_deleting_the_account_deletes_the_files_of_the_organizations_it_deletes(
    client, demo_model, media_dir
):
    signup(client)
    org = Organization.objects.get(slug="analytical-engines")
    shared = get_or_create_organization("shared")
    user = User.objects.get(email="ada@example.com")
    Membership.objects.create(user=user, organization=shared)
    Membership.objects.create(
        user=User.objects.create_user("grace@example.com", PASSWORD), organization=shared
    )
    folders = ("generations", "inputs", "models", "samples")
    for owner in (org, shared):
        for folder in folders:
            default_storage.save(f"{folder}/{owner.pk}/7/0.png", ContentFile(b"image"))
    # An organization whose id starts with the deleted one's digits keeps its files.
    default_storage.save(f"generations/{org.pk}0/1/0.png", ContentFile(b"image"))

    response = client.post("/accounts/", {"delete-password": PASSWORD, "delete-confirm": "on"})
    assert response.status_code == 302
    for folder in folders:
        assert not default_storage.exists(f"{folder}/{org.pk}/7/0.png"), folder
        assert default_storage.exists(f"{folder}/{shared.pk}/7/0.png"), folder
    assert default_storage.exists(f"generations/{org.pk}0/1/0.png")


@pytest.mark.django_db
def test_pages_carry_csrf_and_security_headers(client):
    page = client.get("/accounts/signup/")
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    assert page["X-Frame-Options"] == "DENY"
    assert page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin"
    assert "default-src 'self'" in page["Content-Security-Policy"]


# The console's pages count in words ("1 credit", "2 jobs"), per key and per day.


def verified_owner(slug: str, plan: str = "basic") -> tuple[User, Organization]:
    org = get_or_create_organization(slug, plan)
    user = User.objects.create_user(f"owner@{slug}.example", PASSWORD)
    user.email_verified_at = timezone.now()
    user.save()
    Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
    return user, org


def page_model() -> AIModel:
    return AIModel.objects.create(model_id="page-model", name="page-model", path="page-model")


def charged_job(org, model, key=None, *, cost=1, samples=1, status=Job.Status.SUCCESS, **extra):
    job = Job.objects.create(
        organization=org,
        api_key=key,
        model=model,
        status=status,
        params={"prompt": "a lighthouse", "samples": samples, "width": 64, "height": 64},
        cost=cost,
        **extra,
    )
    ledger.debit_for_job(job)
    # The day's running total, as its submit raises it (and finish() lowers it for a failure).
    if status not in quotas.NOT_COUNTED:
        quotas.count_images(job)
    return job


def key_row(page: str, key: ApiKey) -> str:
    row = page.split(f'data-key="{key.prefix}"')[1]
    return row.split("</tr>")[0]


@pytest.mark.django_db
def test_the_keys_page_shows_each_keys_jobs_images_and_credits_for_30_days(client):
    user, org = verified_owner("acme")
    ledger.grant(org, 1000, "test-grant")
    model = page_model()
    busy, _ = ApiKey.objects.issue(org, name="busy")
    single, _ = ApiKey.objects.issue(org, name="single")
    idle, _ = ApiKey.objects.issue(org, name="idle")
    charged_job(org, model, busy, cost=4, samples=2)
    charged_job(org, model, busy, cost=3, samples=3)
    failed = charged_job(org, model, busy, cost=5, samples=1, status=Job.Status.FAILED)
    ledger.refund_job(failed.pk)
    # Older than 30 days: not counted.
    old = charged_job(org, model, busy, cost=7, samples=1)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    CreditEntry.objects.filter(job=old).update(created_at=timezone.now() - timedelta(days=31))
    charged_job(org, model, single, cost=1, samples=1)
    # Another organization's key and jobs never show.
    _, globex = verified_owner("globex")
    ledger.grant(globex, 100, "globex-grant")
    theirs, _ = ApiKey.objects.issue(globex, name="theirs")
    charged_job(globex, model, theirs, cost=9, samples=4)

    client.force_login(user)
    page = client.get("/app/keys/").content.decode()
    busy_row = key_row(page, busy)
    assert 'data-testid="key-jobs">3 jobs<' in busy_row
    # The failed job's image never counts, and its credits came back.
    assert 'data-testid="key-images">5 images<' in busy_row
    assert 'data-testid="key-credits">7 credits<' in busy_row
    single_row = key_row(page, single)
    assert 'data-testid="key-jobs">1 job<' in single_row
    assert 'data-testid="key-images">1 image<' in single_row
    assert 'data-testid="key-credits">1 credit<' in single_row
    idle_row = key_row(page, idle)
    assert 'data-testid="key-jobs">0 jobs<' in idle_row
    assert 'data-testid="key-credits">0 credits<' in idle_row
    assert theirs.prefix not in page


@pytest.mark.django_db
def test_pages_count_in_words_singular_and_plural(client):
    user, org = verified_owner("acme", "free")
    ledger.set_balance(org, 1)
    ApiKey.objects.issue(org, name="only")
    client.force_login(user)
    overview = client.get("/app/").content.decode()
    assert 'data-testid="credits">1</span> credit</div>' in overview
    assert "100 credits a month" in overview
    assert 'data-testid="images-today">0 / 50</span> images' in overview
    assert ">1 key<" in overview
    billing = client.get("/app/billing/").content.decode()
    assert 'data-testid="credits">1</span> credit</div>' in billing
    assert "21-step image costs 1 credit." in billing
    usage = client.get("/app/usage/").content.decode()
    assert 'data-testid="images-total">0</span> images' in usage
    assert 'data-testid="credits-total">0</span> credits' in usage

    model = page_model()
    charged_job(org, model, cost=1, samples=1)
    usage = client.get("/app/usage/").content.decode()
    assert 'data-testid="images-total">1</span> image)' in usage
    assert 'data-testid="credits-total">1</span> credit)' in usage
    assert ": 1 image</title>" in usage
    assert ": 0 credits</title>" in usage


@pytest.mark.django_db
def test_the_usage_charts_label_both_axes(client):
    user, org = verified_owner("acme")
    client.force_login(user)
    page = client.get("/app/usage/").content.decode()
    today = timezone.now().date()
    credits_chart = page.split('data-testid="chart-credits"')[1].split("</svg>")[0]
    assert 'data-testid="y-title">credits<' in credits_chart
    assert 'data-testid="x-title">date (UTC)<' in credits_chart
    dates = re.findall(r'data-testid="x-label">([0-9-]+)<', credits_chart)
    assert dates[0] == (today - timedelta(days=29)).isoformat()
    assert dates[-1] == today.isoformat()
    images_chart = page.split('data-testid="chart-images"')[1].split("</svg>")[0]
    assert 'data-testid="y-title">images<' in images_chart


@pytest.mark.django_db
def test_the_overview_shows_thumbnails_of_recent_jobs(client):
    user, org = verified_owner("acme")
    model = page_model()
    done = Job.objects.create(
        organization=org, model=model, status=Job.Status.SUCCESS, params={"samples": 2}
    )
    for index in range(2):
        OutputImage.objects.create(
            job=done, index=index, path=done.output_path(index), seed=index, width=64, height=64
        )
    expired = Job.objects.create(
        organization=org,
        model=model,
        status=Job.Status.SUCCESS,
        params={"samples": 1},
        expired_at=timezone.now(),
    )
    OutputImage.objects.create(
        job=expired, index=0, path=expired.output_path(0), seed=1, width=64, height=64
    )
    client.force_login(user)
    page = client.get("/app/").content.decode()
    row = page.split(f'data-job="{done.pk}"')[1].split("</tr>")[0]
    links = re.findall(r'<img src="([^"]+)"', row)
    assert len(links) == 2
    assert links[0].startswith(f"/files/{done.output_path(0)}?expires=")
    assert "signature=" in links[0]
    # The signed link serves (or 404s for the missing file), never 403.
    assert client.get(links[0].replace("&amp;", "&")).status_code in (200, 404)
    expired_row = page.split(f'data-job="{expired.pk}"')[1].split("</tr>")[0]
    assert "<img" not in expired_row
    assert "expired" in expired_row
