"""Forms of the account pages: sign up, log in (rate limited), email change, deletion."""

from __future__ import annotations

import math
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import authenticate, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest

from accounts import challenge
from accounts.login_limits import LoginLimitMixin
from accounts.models import EMAIL_LENGTH, ORGANIZATION_NAME_LENGTH, User, canonical_email
from accounts.services import has_control_characters
from billing import counters
from sdplatform.hosts import client_ip, client_network

# Sign-ups are counted per client address in hourly windows and per network in daily ones.
SIGNUP_ADDRESS_WINDOW = 3600
SIGNUP_NETWORK_WINDOW = 86400


def clean_organization_name(value: str) -> str:
    """An organization's name as typed, stripped; ValidationError says what is wrong with it."""
    name = value.strip()
    if not 1 <= len(name) <= ORGANIZATION_NAME_LENGTH:
        raise forms.ValidationError(f"The name must be 1 to {ORGANIZATION_NAME_LENGTH} characters.")
    # A line break would end up in mail headers (an invitation's subject names the organization);
    # NUL and lone surrogates cannot be stored.
    if has_control_characters(name):
        raise forms.ValidationError(
            "The name cannot hold line breaks, tabs or other control characters."
        )
    return name


def clean_address(address: str) -> str:
    """An email field's value as stored (accounts.models.canonical_email), or the form's error."""
    try:
        email = canonical_email(address)
    except ValueError as exc:
        raise forms.ValidationError(str(exc)) from None
    # Lower case can lengthen an address ("İ" is two characters lower-cased), and so can ASCII.
    if len(email) > EMAIL_LENGTH:
        raise forms.ValidationError(f"An email address has at most {EMAIL_LENGTH} characters.")
    return email


class SignupForm(forms.Form):
    """A new account: checked, then the challenge (when on), then the per-address limits."""

    email = forms.EmailField(max_length=EMAIL_LENGTH)
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    organization = forms.CharField(
        label="Organization name",
        max_length=ORGANIZATION_NAME_LENGTH,
        help_text="Your team or company; rename later.",
    )

    def clean_email(self) -> str:
        email = clean_address(self.cleaned_data["email"])
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists; log in.")
        return email

    def clean_organization(self) -> str:
        name = clean_organization_name(self.cleaned_data["organization"])
        if not any(ch.isalnum() for ch in name):
            raise forms.ValidationError("Use at least one letter or digit.")
        return name

    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        self.challenge = challenge.widget()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("password") and data.get("email"):
            try:
                password_validation.validate_password(data["password"], User(email=data["email"]))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        # Only a sign-up that would succeed is checked and counted, so a mistyped form costs
        # neither a siteverify call nor one of the address's few sign-ups.
        if not self.errors:
            try:
                challenge.verify(self.data, client_ip(self.request))
            except challenge.ChallengeFailed as exc:
                raise forms.ValidationError(str(exc), code="challenge") from None
            self._count_signup()
        return data

    def _count_signup(self) -> None:
        """Refuse past PICTOR_SIGNUPS_PER_ADDRESS an hour or PICTOR_SIGNUPS_PER_NETWORK a day."""
        limits = (
            (
                f"signup:address:{client_ip(self.request)}",
                SIGNUP_ADDRESS_WINDOW,
                settings.PICTOR_SIGNUPS_PER_ADDRESS,
            ),
            (
                f"signup:network:{client_network(self.request)}",
                SIGNUP_NETWORK_WINDOW,
                settings.PICTOR_SIGNUPS_PER_NETWORK,
            ),
        )
        for key, window, limit in limits:
            if limit <= 0:
                continue
            hit = counters.hit(key, window)
            if hit.count > limit:
                minutes = max(1, math.ceil(hit.resets_in / 60))
                raise forms.ValidationError(
                    "Too many sign-ups from your network. Try again in %(minutes)d minutes.",
                    code="rate_limited",
                    params={"minutes": minutes},
                )


class RateLimitedLoginForm(LoginLimitMixin, AuthenticationForm):
    """Django's login form under the failed-login limits of accounts/login_limits.py."""


class PasswordConfirmForm(forms.Form):
    """Asks for the current password before a change that locks the user out if abused."""

    password = forms.CharField(
        label="Current password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, user: User, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if authenticate(username=self.user.email, password=password) is None:
            raise forms.ValidationError("The password is not right.")
        return password


class EmailChangeForm(PasswordConfirmForm):
    email = forms.EmailField(label="New email", max_length=EMAIL_LENGTH)

    field_order = ["email", "password"]

    def clean_email(self) -> str:
        email = clean_address(self.cleaned_data["email"])
        if User.objects.filter(email__iexact=email).exclude(pk=self.user.pk).exists():
            raise forms.ValidationError("Another account uses this email.")
        return email


class DeleteAccountForm(PasswordConfirmForm):
    confirm = forms.BooleanField(
        label="Delete my account, and the organizations where I am the only member",
        required=True,
    )
