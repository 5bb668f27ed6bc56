"""Forms of the account pages: sign up, log in (rate limited), email change, deletion."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import authenticate, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest

from accounts.models import User
from billing import counters

# Login attempts allowed per window, per address and per email (successful ones count too).
LOGIN_WINDOW_SECONDS = 300
LOGIN_ATTEMPTS_PER_IP = 20
LOGIN_ATTEMPTS_PER_EMAIL = 5


def client_ip(request: HttpRequest | None) -> str:
    """The caller's address as Django sees it (the proxy must set REMOTE_ADDR right)."""
    return (request.META.get("REMOTE_ADDR") if request is not None else "") or "unknown"


class SignupForm(forms.Form):
    email = forms.EmailField(max_length=254)
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    organization = forms.CharField(
        label="Organization name", max_length=200, help_text="Your team or company; rename later."
    )

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists; log in.")
        return email

    def clean_organization(self) -> str:
        name = self.cleaned_data["organization"].strip()
        if not any(ch.isalnum() for ch in name):
            raise forms.ValidationError("Use at least one letter or digit.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("password") and data.get("email"):
            try:
                password_validation.validate_password(data["password"], User(email=data["email"]))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


class RateLimitedLoginForm(AuthenticationForm):
    """Django's login form, refusing more than a few attempts per address and per email."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "rate_limited": "Too many login attempts. Try again in %(seconds)d seconds.",
    }

    def clean(self) -> dict[str, Any]:
        email = (self.data.get("username") or "").strip().lower()
        for key, limit in (
            (f"login:ip:{client_ip(self.request)}", LOGIN_ATTEMPTS_PER_IP),
            (f"login:email:{email}", LOGIN_ATTEMPTS_PER_EMAIL),
        ):
            hit = counters.hit(key, LOGIN_WINDOW_SECONDS)
            if hit.count > limit:
                raise forms.ValidationError(
                    self.error_messages["rate_limited"],
                    code="rate_limited",
                    params={"seconds": max(1, int(hit.resets_in))},
                )
        return super().clean()


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
    email = forms.EmailField(label="New email", max_length=254)

    field_order = ["email", "password"]

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.user.pk).exists():
            raise forms.ValidationError("Another account uses this email.")
        return email


class DeleteAccountForm(PasswordConfirmForm):
    confirm = forms.BooleanField(
        label="Delete my account, and the organizations where I am the only member",
        required=True,
    )
