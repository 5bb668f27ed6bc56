"""Brute-force limits on logging in, shared by the app's login page and the admin's.

Only failures count, in fixed windows of billing/counters.py (shared by every web process):

- per account and address together: 5 failures in 15 minutes. It stops guessing one account's
  password from one place, and a stranger cannot use it to lock out the account's owner, whose
  own address keeps its own count. A success clears it.
- per address across accounts: 20 failures in 5 minutes, so one address cannot try a password on
  many accounts.

There is no per-account ceiling across addresses: any ceiling that refuses the right password
lets anyone with a few addresses lock a known user out. Against guesses spread over many
addresses the defence is the password validators' length rules.

The address is sdplatform.hosts.client_ip (X-Forwarded-For only behind PICTOR_TRUSTED_PROXY).
An IPv6 client counts by its /64, since one host is routinely handed a whole /64 to pick from.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse

from accounts.models import comparable_email
from billing import counters
from sdplatform import hosts

log = logging.getLogger(__name__)

ACCOUNT_FAILURES = 5
ACCOUNT_WINDOW_SECONDS = 15 * 60
ADDRESS_FAILURES = 20
ADDRESS_WINDOW_SECONDS = 5 * 60

REFUSED_MESSAGE = "Too many failed login attempts. Try again in %(seconds)d seconds."


def place(request: HttpRequest | None) -> str:
    """Where an attempt comes from, as the limits count it: an IPv4 address or an IPv6 /64."""
    address = hosts.client_ip(request)
    return hosts.client_network(request) if ":" in address else address


def _account_key(username: str, where: str) -> str:
    # A digest keeps the key short (RateCounter keys are 200 characters, emails up to 254) and
    # the same for "Ada@Example.com " and "ada@example.com", which log in as one account.
    # And "ada@exämple.com" the same as its ASCII form.
    account = comparable_email(username).encode("utf-8", "surrogatepass")
    return f"login:account:{hashlib.sha256(account).hexdigest()[:32]}:{where}"


def _address_key(where: str) -> str:
    return f"login:address:{where}"


def _limits(username: str, where: str) -> list[tuple[str, int, int]]:
    return [
        (_account_key(username, where), ACCOUNT_FAILURES, ACCOUNT_WINDOW_SECONDS),
        (_address_key(where), ADDRESS_FAILURES, ADDRESS_WINDOW_SECONDS),
    ]


def refused_for(username: str, where: str) -> int:
    """Seconds until `username` may try again from `where`; 0 when it may try now."""
    wait = 0
    for key, limit, window in _limits(username, where):
        hit = counters.peek(key, window)
        if hit.count >= limit:
            wait = max(wait, math.ceil(hit.resets_in), 1)
    return wait


def record_failure(username: str, where: str) -> None:
    """Count a wrong password (or refused account) for `username` from `where`."""
    for key, limit, window in _limits(username, where):
        hit = counters.hit(key, window)
        if hit.count == limit:
            log.warning(
                "login: %d failures from %s (%s); refused for %d s",
                limit,
                where,
                key.split(":")[1],
                math.ceil(hit.resets_in),
            )


def record_success(username: str, where: str) -> None:
    """Clear the account-and-address count after a right password."""
    counters.forget(_account_key(username, where), ACCOUNT_WINDOW_SECONDS)


if TYPE_CHECKING:
    # What the mixin is always mixed into, so `super().clean()` has a type to check against.
    _LoginForm = AuthenticationForm
else:
    _LoginForm = object


class LoginLimitMixin(_LoginForm):
    """A login form that refuses attempts beyond the limits and counts the ones that fail."""

    # Seconds the caller must wait, when this form refused the attempt (views answer 429).
    retry_after: int = 0

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if not (username and password):
            return super().clean()
        where = place(self.request)
        wait = refused_for(username, where)
        if wait:
            self.retry_after = wait
            raise forms.ValidationError(
                REFUSED_MESSAGE, code="rate_limited", params={"seconds": wait}
            )
        try:
            data = super().clean()
        except forms.ValidationError:
            record_failure(username, where)
            raise
        record_success(username, where)
        return data


class LimitedAdminLoginForm(LoginLimitMixin, AdminAuthenticationForm):
    """The admin's login form (staff log in with their email) under the same limits."""


def answer_refused(form: AuthenticationForm | None, response: HttpResponse) -> HttpResponse:
    """Turn a login page answer into a 429 with Retry-After when its form refused the attempt."""
    wait = getattr(form, "retry_after", 0)
    if wait:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response
