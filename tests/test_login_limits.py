"""Failed-login limits on the app's login page and the admin's (accounts/login_limits.py)."""

from __future__ import annotations

from time import monotonic

import pytest

from accounts.models import User
from billing import counters

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"
APP = "/accounts/login/"
ADMIN = "/admin/login/"
HOME = "203.0.113.7"
REFUSED = "Too many failed login attempts. Try again in"


@pytest.fixture
def clock(monkeypatch):
    """The counters' clock, at the start of a 15-minute (and so of a 5-minute) window."""

    class Clock:
        now = 1_800_000_000.0  # a multiple of 900

        def time(self) -> float:
            return self.now

        # The counters also time a Redis outage's back-off on this clock; leave it real.
        monotonic = staticmethod(monotonic)

    fake = Clock()
    monkeypatch.setattr(counters, "time", fake)
    return fake


@pytest.fixture
def ada(db):
    """A staff user, so the same account logs in on both pages."""
    return User.objects.create_superuser("ada@example.com", PASSWORD)


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.integration)])
def store(request, settings):
    """The counters in the database cache (the embedded default) or in Redis."""
    if request.param == "redis":
        from tests.integration.conftest import redis_db

        settings.CACHES = {
            "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_db()}
        }
    return request.param


def log_in(client, page, password, email="ada@example.com", address=HOME, **headers):
    return client.post(
        page, {"username": email, "password": password}, REMOTE_ADDR=address, **headers
    )


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_it_refuses_the_admin_login_after_five_wrong_passwords(client, ada, clock, store):
    answers = [log_in(client, ADMIN, f"guess-{n}") for n in range(25)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 20
    assert "Please enter the correct email address" in answers[4].content.decode()
    assert f"{REFUSED} 900 seconds." in answers[-1].content.decode()
    assert answers[-1]["Retry-After"] == "900"
    # Refused attempts are not tried: the right password waits too, and does not log in.
    assert log_in(client, ADMIN, PASSWORD).status_code == 429
    assert not logged_in(client)
    clock.now += 900
    assert log_in(client, ADMIN, PASSWORD).status_code == 302
    assert logged_in(client)


@pytest.mark.parametrize("page", [APP, ADMIN])
def test_it_lets_the_right_password_in_from_another_address(client, ada, clock, page):
    # However the email is typed, it is one account.
    emails = ["ada@example.com", "ADA@example.com", " Ada@Example.com", "ada@EXAMPLE.com"] * 3
    answers = [log_in(client, page, "wrong", email, "198.51.100.66") for email in emails]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 7
    assert log_in(client, page, PASSWORD).status_code == 302
    assert logged_in(client)


def test_it_clears_the_count_after_the_right_password(client, ada, clock, store):
    for _ in range(2):
        assert [log_in(client, APP, "wrong").status_code for _ in range(4)] == [200] * 4
        assert log_in(client, APP, PASSWORD).status_code == 302
        client.post("/accounts/logout/")
    # Counting starts again from zero: five more failures are needed for a refusal.
    answers = [log_in(client, APP, "wrong").status_code for _ in range(6)]
    assert answers == [200] * 5 + [429]


def test_it_counts_each_client_behind_a_trusted_proxy(client, ada, clock, settings):
    settings.PICTOR_TRUSTED_PROXY = True
    proxy = {"address": "10.0.0.2"}
    # The proxy appends the address it saw; the first entry is whatever the client sent.
    for n in range(20):
        forwarded = {"HTTP_X_FORWARDED_FOR": f"192.0.2.1, 198.51.100.{n}"}
        answer = log_in(client, APP, "wrong", email=f"user{n}@example.com", **proxy, **forwarded)
        assert answer.status_code == 200
    ada_home = {"HTTP_X_FORWARDED_FOR": "192.0.2.1, 203.0.113.50"}
    assert log_in(client, APP, PASSWORD, **proxy, **ada_home).status_code == 302
    client.post("/accounts/logout/")
    # One client trying many accounts is refused, and only that client.
    sprayer = {"HTTP_X_FORWARDED_FOR": "198.51.100.200"}
    answers = [
        log_in(client, APP, "wrong", email=f"user{n}@example.com", **proxy, **sprayer).status_code
        for n in range(21)
    ]
    assert answers == [200] * 20 + [429]
    assert log_in(client, APP, PASSWORD, **proxy, **sprayer).status_code == 429
    assert log_in(client, APP, PASSWORD, **proxy, **ada_home).status_code == 302


def test_it_ignores_a_forged_forwarded_for_without_a_trusted_proxy(client, ada, clock, settings):
    settings.PICTOR_TRUSTED_PROXY = False
    for n in range(20):
        forged = {"HTTP_X_FORWARDED_FOR": f"198.51.100.{n}"}
        answer = log_in(client, APP, "wrong", email=f"user{n}@example.com", **forged)
        assert answer.status_code == 200
    refused = log_in(client, APP, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.250")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "300"
    assert f"{REFUSED} 300 seconds." in refused.content.decode()
    assert not logged_in(client)
    assert log_in(client, APP, PASSWORD, address="192.0.2.80").status_code == 302


def test_it_counts_an_ipv6_client_by_its_64(client, ada, clock):
    for n in range(1, 6):
        assert log_in(client, APP, "wrong", address=f"2001:db8::{n}").status_code == 200
    assert log_in(client, APP, PASSWORD, address="2001:db8::ffff").status_code == 429
    assert log_in(client, APP, PASSWORD, address="2001:db8:0:1::1").status_code == 302
