"""Sign-up against farming: email verification, free credits once per address, per-address and
per-network limits, and the optional Turnstile/hCaptcha challenge (a local siteverify server)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import mail, signing
from django.test import Client
from django.utils import timezone

from accounts import services, verification
from accounts.models import ApiKey, FreeCreditClaim, Invitation, Organization, User
from billing import counters, ledger
from billing.models import CreditEntry, Plan
from tests.helpers import make_tenant

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"
BASE = "https://pictor.example.com"


def sign_up(
    client: Client,
    email: str = "ada@example.com",
    organization: str = "Analytical Engines",
    **extra,
) -> Any:
    return client.post(
        "/accounts/signup/",
        {"email": email, "password": PASSWORD, "organization": organization, **extra},
    )


def link_in(message: Any) -> str:
    """The path of the verification link in an email, checked to be on the base URL."""
    link = re.search(r"(\S+/accounts/verify/\S+/)", message.body).group(1)
    assert link.startswith(f"{BASE}/accounts/verify/"), link
    return urlsplit(link).path


@pytest.fixture(autouse=True)
def base_url(settings: Any) -> None:
    settings.PICTOR_BASE_URL = BASE
    settings.ALLOWED_HOSTS = ["testserver", "evil.example"]


def test_it_refuses_the_fourth_sign_up_an_hour_from_one_address(client):
    answers = []
    for n in range(15):
        client.logout()
        response = sign_up(client, f"farm{n}@example.com", f"Farm {n}")
        answers.append(response.status_code)
    assert answers == [302] * 3 + [429] * 12
    assert "Too many sign-ups" in response.content.decode()
    assert User.objects.count() == Organization.objects.count() == 3
    # Another address is not held back by that one.
    other = Client(REMOTE_ADDR="198.51.100.7")
    assert sign_up(other, "someone@example.com", "Someone").status_code == 302


def test_it_refuses_the_eleventh_sign_up_a_day_from_one_network():
    answers = []
    for n in range(12):
        response = sign_up(Client(REMOTE_ADDR=f"203.0.113.{n + 1}"), f"n{n}@example.com", f"N {n}")
        answers.append(response.status_code)
    assert answers == [302] * 10 + [429] * 2
    assert User.objects.count() == 10
    # A mistyped form is not a sign-up and costs nothing.
    assert sign_up(Client(REMOTE_ADDR="192.0.2.1"), "bad-address", "X").status_code == 200
    assert sign_up(Client(REMOTE_ADDR="192.0.2.1"), "late@example.com", "Late").status_code == 302


def test_it_gives_no_key_and_no_credits_before_the_email_is_verified(client):
    response = sign_up(Client(HTTP_HOST="evil.example"), "ada@example.com")
    assert response.status_code == 302
    client.force_login(User.objects.get(email="ada@example.com"))
    user = User.objects.get(email="ada@example.com")
    org = Organization.objects.get(slug="analytical-engines")
    assert user.email_verified_at is None
    assert org.credit_balance == 0
    assert not CreditEntry.objects.filter(organization=org).exists()
    # The email: to the address, with a link on the base URL whatever Host the sign-up named.
    [message] = mail.outbox
    assert message.to == ["ada@example.com"]
    assert "evil.example" not in message.body
    link_in(message)
    # The pages say so; no key can be made.
    page = client.get("/app/keys/").content.decode()
    assert "Check your email" in page and "Send the link again" in page
    refused = client.post("/app/keys/", {"name": "laptop"})
    assert refused.status_code == 403
    assert "Verify your email" in refused.content.decode()
    assert not ApiKey.objects.filter(organization=org).exists()
    assert "Check your email" in client.get("/app/").content.decode()
    # Nor does the monthly grant reach it meanwhile.
    ledger.grant_monthly_credits()
    org.refresh_from_db()
    assert org.credit_balance == 0


def test_following_the_link_grants_the_free_credits_once_and_allows_keys(client):
    sign_up(client)
    assert client.get("/accounts/verify/").status_code == 200
    [message] = mail.outbox
    response = client.get(link_in(message), follow=True)
    assert response.redirect_chain[-1][0] == "/app/keys/"
    page = response.content.decode()
    assert "Your email is verified" in page and "with 100 credits" in page
    org = Organization.objects.get(slug="analytical-engines")
    assert org.credit_balance == 100
    assert CreditEntry.objects.filter(organization=org).count() == 1
    # Again, and from a browser that is not logged in: still verified, nothing granted twice.
    assert Client().get(link_in(message)).status_code == 302
    org.refresh_from_db()
    assert org.credit_balance == 100
    assert CreditEntry.objects.filter(organization=org).count() == 1
    created = client.post("/app/keys/", {"name": "laptop"}, follow=True).content.decode()
    key = re.search(r'data-testid="new-key">(pct_[^<]+)<', created).group(1)
    assert ApiKey.objects.for_raw_key(key).organization == org


def test_a_deleted_account_signed_up_again_with_the_same_email_gets_no_credits(client):
    sign_up(client)
    client.get(link_in(mail.outbox[0]))
    client.post("/accounts/", {"delete-password": PASSWORD, "delete-confirm": "on"})
    assert not User.objects.filter(email="ada@example.com").exists()
    # Only a digest is kept, never the address.
    [claim] = FreeCreditClaim.objects.all()
    assert "ada" not in claim.email_digest

    mail.outbox.clear()
    sign_up(client, "Ada@Example.com", "Second Try")
    assert "already had its free credits" in client.get("/accounts/verify/").content.decode()
    response = client.get(link_in(mail.outbox[0]), follow=True)
    assert "already had its free credits once" in response.content.decode()
    org = Organization.objects.get(slug="second-try")
    assert org.credit_balance == 0
    assert not CreditEntry.objects.filter(organization=org).exists()
    # Keys work all the same: the account is verified, it just has no free credits.
    assert client.post("/app/keys/", {"name": "laptop"}).status_code == 302
    assert ApiKey.objects.filter(organization=org).count() == 1
    # Nor do the free plan's monthly credits come later; a plan it pays for does.
    next_month = timezone.now().date() + timedelta(days=32)
    ledger.grant_monthly_credits(next_month)
    org.refresh_from_db()
    assert org.credit_balance == 0
    org.plan = Plan.objects.get(slug="basic")
    org.save(update_fields=["plan"])
    ledger.grant_monthly_credits(next_month)
    org.refresh_from_db()
    assert org.credit_balance == org.plan.monthly_credits


def test_a_plus_tag_of_an_address_that_had_credits_gets_none():
    first = Client()
    sign_up(first, "ada.lovelace@gmail.com", "First")
    first.get(link_in(mail.outbox[0]))
    second = Client()
    sign_up(second, "adalovelace+farm2@googlemail.com", "Second")
    second.get(link_in(mail.outbox[1]))
    assert Organization.objects.get(slug="first").credit_balance == 100
    assert Organization.objects.get(slug="second").credit_balance == 0


def test_an_address_with_a_domain_beyond_ascii_is_one_account_with_its_ascii_spelling():
    first = Client()
    assert sign_up(first, "Pay@Exämple.com", "First").status_code == 302
    assert User.objects.get().email == "pay@xn--exmple-cua.com"
    [message] = mail.outbox
    assert message.to == ["pay@xn--exmple-cua.com"]
    page = sign_up(Client(), "pay@xn--exmple-cua.com", "Second").content.decode()
    assert "An account with this email already exists" in page
    assert User.objects.count() == 1
    # Logging in takes the address as it was typed at sign-up, in either spelling and case.
    for typed in ("Pay@Exämple.com", "PAY@XN--EXMPLE-CUA.COM"):
        answer = Client().post("/accounts/login/", {"username": typed, "password": PASSWORD})
        assert answer.status_code == 302, typed


@pytest.mark.parametrize(
    ("email", "says"),
    [
        # Valid to Django's validator, but a label whose ASCII form passes 63 characters.
        ("user@" + "é" * 58 + ".com", "domain is not valid"),
        # 185 characters, whose ASCII spelling (xn--…) has 365.
        ("a@" + ".".join(["ééééé"] * 30) + ".com", "at most 254 characters"),
    ],
)
def test_an_address_that_cannot_be_stored_or_mailed_is_a_form_error(client, email, says):
    response = sign_up(client, email)
    assert response.status_code == 200
    assert says in response.content.decode()
    assert not User.objects.exists() and not Organization.objects.exists()
    assert mail.outbox == []


def taken_after_the_check(monkeypatch: Any, form_class: Any) -> None:
    """Another account takes the form's address right after the form checked it is free."""
    checked = form_class.clean_email

    def other_account_wins(form: Any) -> str:
        email = checked(form)
        User.objects.create_user(email, PASSWORD)
        return email

    monkeypatch.setattr(form_class, "clean_email", other_account_wins)


def test_a_sign_up_sent_twice_at_once_makes_one_account_and_says_so(client, monkeypatch):
    from accounts.forms import SignupForm

    # The other request of a double click creates the account right after this one's check.
    taken_after_the_check(monkeypatch, SignupForm)
    response = sign_up(client)
    assert response.status_code == 200
    assert "An account with this email already exists" in response.content.decode()
    assert User.objects.count() == 1 and not Organization.objects.exists()


def test_two_sign_ups_naming_one_organization_at_once_get_two_slugs(monkeypatch):
    make_tenant("analytical-engines")
    free = services.unused_slug
    answers = iter(["analytical-engines"])  # what the other sign-up saw free before it took it
    monkeypatch.setattr(services, "unused_slug", lambda name: next(answers, None) or free(name))
    assert sign_up(Client()).status_code == 302
    org = Organization.objects.get(memberships__user__email="ada@example.com")
    assert org.slug == "analytical-engines-2"


def test_an_email_change_racing_another_account_for_the_address_says_so(client, monkeypatch):
    from accounts.forms import EmailChangeForm

    sign_up(client)
    taken_after_the_check(monkeypatch, EmailChangeForm)
    page = client.post(
        "/accounts/", {"email-email": "new@example.com", "email-password": PASSWORD}, follow=True
    ).content.decode()
    assert "Another account uses this email." in page
    assert User.objects.filter(email="ada@example.com").exists()


def test_an_altered_or_expired_link_is_refused(client):
    sign_up(client)
    path = link_in(mail.outbox[0])
    token = path.rstrip("/").rsplit("/", 1)[1]
    altered = path.replace(token, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    response = client.get(altered)
    assert response.status_code == 400
    assert "not valid" in response.content.decode()

    # The same link as if it had been sent longer ago than the link lives.
    class SentLongAgo(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 49 * 3600)

    payload = signing.loads(token, salt=verification.SALT)
    old = SentLongAgo(salt=verification.SALT).sign_object(payload)
    response = client.get(f"/accounts/verify/{old}/")
    assert response.status_code == 400
    assert "expired" in response.content.decode()
    user = User.objects.get(email="ada@example.com")
    assert user.email_verified_at is None
    assert Organization.objects.get(slug="analytical-engines").credit_balance == 0
    # After an email change the old link verifies nothing.
    user.email = "new@example.com"
    user.save()
    assert client.get(path).status_code == 400


def test_the_link_can_be_sent_again_at_most_once_a_minute(client):
    sign_up(client)
    user = User.objects.get(email="ada@example.com")
    too_soon = client.post("/accounts/verify/")
    assert too_soon.status_code == 429
    assert "try again in" in too_soon.content.decode()
    assert len(mail.outbox) == 1
    counters.release(f"verify-resend:{user.pk}")  # the minute has passed
    assert client.post("/accounts/verify/").status_code == 302
    assert len(mail.outbox) == 2
    # Either link works.
    assert client.get(link_in(mail.outbox[0])).status_code == 302
    user.refresh_from_db()
    assert user.email_verified_at is not None


def test_joining_by_invitation_proves_the_email(client):
    inviter = make_tenant("acme", "basic")
    sign_up(client, "carol@example.com", "Carol Co")
    invitation = Invitation.objects.create(
        organization=inviter.org,
        email="carol@example.com",
        expires_at=timezone.now() + timedelta(days=7),
    )
    assert client.post(f"/accounts/invite/{invitation.token}/").status_code == 302
    assert User.objects.get(email="carol@example.com").email_verified_at is not None
    assert Organization.objects.get(slug="carol-co").credit_balance == 100
    assert client.post("/app/keys/", {"name": "laptop"}).status_code == 302


@pytest.mark.parametrize(
    ("next_url", "location"),
    [
        ("/accounts/invite/abc/", "/accounts/invite/abc/"),
        # A bare word is a relative path, not the name of one of the site's pages.
        ("a", "a"),
        ("https://evil.example.com/", "/accounts/verify/"),
        ("//evil.example.com/", "/accounts/verify/"),
    ],
)
def test_after_sign_up_it_goes_to_a_local_next_page_only(client, next_url, location):
    response = sign_up(client, next=next_url)
    assert response.status_code == 302
    assert response["Location"] == location
    assert User.objects.filter(email="ada@example.com").exists()


def test_an_unverified_owner_cannot_send_invitations(client):
    sign_up(client, "dora@example.com", "Dora Co")
    [verification_mail] = mail.outbox
    client.post("/app/team/invite/", {"email": "x@example.net", "role": "member"})
    assert not Invitation.objects.exists()
    assert len(mail.outbox) == 1
    # Once verified, the same invitation goes out.
    client.get(link_in(verification_mail))
    client.post("/app/team/invite/", {"email": "x@example.net", "role": "member"})
    assert Invitation.objects.filter(email="x@example.net").exists()
    assert mail.outbox[-1].to == ["x@example.net"]


def test_the_challenge_is_off_by_default(client, settings):
    assert settings.PICTOR_CHALLENGE_PROVIDER == ""
    page = client.get("/accounts/signup/")
    assert 'data-testid="challenge"' not in page.content.decode()
    assert "challenges.cloudflare.com" not in page["Content-Security-Policy"]
    assert "hcaptcha" not in page["Content-Security-Policy"]
    assert sign_up(client).status_code == 302


class SiteVerify(BaseHTTPRequestHandler):
    """A stand-in for the provider's siteverify: only "good-token" under "the-secret" passes."""

    seen: list[dict[str, list[str]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = parse_qs(self.rfile.read(length).decode())
        SiteVerify.seen.append(form)
        ok = form.get("secret") == ["the-secret"] and form.get("response") == ["good-token"]
        body = json.dumps({"success": ok, "error-codes": [] if ok else ["invalid-input-response"]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def siteverify() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SiteVerify)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    SiteVerify.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/siteverify"
    server.shutdown()
    server.server_close()


@pytest.fixture
def turnstile(settings: Any, siteverify: str) -> str:
    settings.PICTOR_CHALLENGE_PROVIDER = "turnstile"
    settings.PICTOR_CHALLENGE_SITE_KEY = "the-site-key"
    settings.PICTOR_CHALLENGE_SECRET_KEY = "the-secret"
    settings.PICTOR_CHALLENGE_VERIFY_URL = siteverify
    return siteverify


def test_with_the_challenge_on_a_missing_or_bad_token_is_refused(client, turnstile):
    page = client.get("/accounts/signup/")
    html = page.content.decode()
    assert 'class="cf-turnstile" data-sitekey="the-site-key"' in html
    assert 'src="https://challenges.cloudflare.com/turnstile/v0/api.js"' in html
    policy = dict(d.split(" ", 1) for d in page["Content-Security-Policy"].split("; "))
    assert "https://challenges.cloudflare.com" in policy["script-src"]
    assert "https://challenges.cloudflare.com" in policy["frame-src"]

    missing = sign_up(client)
    assert missing.status_code == 200
    assert "check that you are a person" in missing.content.decode()
    assert SiteVerify.seen == []  # nothing to ask the provider about
    bad = sign_up(client, **{"cf-turnstile-response": "forged"})
    assert bad.status_code == 200
    assert "check that you are a person failed" in bad.content.decode()
    assert SiteVerify.seen[-1]["response"] == ["forged"]
    assert not User.objects.exists()


def test_with_the_challenge_on_a_good_token_signs_up(client, turnstile):
    response = sign_up(client, **{"cf-turnstile-response": "good-token"})
    assert response.status_code == 302
    assert User.objects.filter(email="ada@example.com").exists()
    [asked] = SiteVerify.seen
    assert asked["secret"] == ["the-secret"]
    assert asked["remoteip"] == ["127.0.0.1"]


def test_an_unreachable_provider_is_a_form_error_not_a_500(client, turnstile, settings):
    settings.PICTOR_CHALLENGE_PROVIDER = "hcaptcha"
    settings.PICTOR_CHALLENGE_VERIFY_URL = "http://127.0.0.1:1/siteverify"  # nothing listens
    page = client.get("/accounts/signup/")
    assert 'class="h-captcha"' in page.content.decode()
    assert "https://*.hcaptcha.com" in page["Content-Security-Policy"]
    response = sign_up(client, **{"h-captcha-response": "good-token"})
    assert response.status_code == 200
    assert "could not be completed just now" in response.content.decode()
    assert not User.objects.exists()


def test_staff_find_an_address_that_had_free_credits_by_the_address_itself(client):
    sign_up(client)
    client.get(link_in(mail.outbox[0]))
    staff = User.objects.create_superuser("ops@example.com", PASSWORD)
    admin = Client()
    admin.force_login(staff)
    url = "/admin/accounts/freecreditclaim/"
    assert "1 free credit claim" in admin.get(url, {"q": "ADA+x@example.com"}).content.decode()
    assert "0 free credit claims" in admin.get(url, {"q": "bob@example.com"}).content.decode()


def test_an_organization_made_for_an_owner_has_them_as_owner_and_its_credits_at_once():
    """accounts/services.py: the one way an organization is made, here outside a sign-up."""
    owner = User.objects.create_user("grace@example.com", PASSWORD)
    org = services.create_organization("Analytical Engines", owner=owner)
    assert org.slug == "analytical-engines" and org.plan.slug == Plan.DEFAULT_SLUG
    assert [(m.user, m.role) for m in org.memberships.all()] == [(owner, "owner")]
    assert not org.free_credits_pending
    [grant] = CreditEntry.objects.filter(organization=org)
    assert grant.kind == "grant" and org.credit_balance == grant.amount == 100
    # A taken or reserved slug gets a number; no owner, no membership.
    again = services.create_organization("Analytical Engines")
    assert again.slug == "analytical-engines-2" and not again.memberships.exists()
    assert services.create_organization("Admin").slug == "admin-2"
