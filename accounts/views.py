"""Account pages: sign up, log in and out, password reset, email change, account deletion."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from accounts.forms import DeleteAccountForm, EmailChangeForm, RateLimitedLoginForm, SignupForm
from accounts.models import Organization, User

log = logging.getLogger(__name__)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """A new user and their organization on the free plan, with its credits; logged in."""
    if request.user.is_authenticated:
        return redirect("app-overview")
    form = SignupForm(request.POST or None, initial={"email": request.GET.get("email", "")})
    next_url = request.POST.get("next") or request.GET.get("next", "")
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = User.objects.create_user(
                form.cleaned_data["email"], form.cleaned_data["password"]
            )
            org = Organization.create_with_owner(form.cleaned_data["organization"], user)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(
            request,
            f"Welcome! {org.name} is on the {org.plan.name} plan with {org.credit_balance} "
            "credits. Create an API key to start.",
        )
        if next_url and url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return redirect(next_url)
        return redirect("app-keys")
    return render(request, "accounts/signup.html", {"form": form, "next": next_url})


class LoginView(auth_views.LoginView):
    form_class = RateLimitedLoginForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_invalid(self, form: RateLimitedLoginForm) -> HttpResponse:
        response = super().form_invalid(form)
        if any(e.code == "rate_limited" for e in form.non_field_errors().as_data()):
            response.status_code = 429
        return response


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("login")


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("password_reset_complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("account")

    def form_valid(self, form: object) -> HttpResponse:
        messages.success(self.request, "Your password was changed.")
        return super().form_valid(form)  # type: ignore[arg-type]


@login_required
@require_http_methods(["GET", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    """The user's own settings: email, password, deletion."""
    email_form = EmailChangeForm(request.user, prefix="email")
    delete_form = DeleteAccountForm(request.user, prefix="delete")
    if request.method == "POST" and "email-email" in request.POST:
        email_form = EmailChangeForm(request.user, request.POST, prefix="email")
        if email_form.is_valid():
            request.user.email = email_form.cleaned_data["email"]
            request.user.save(update_fields=["email"])
            messages.success(request, f"Your email is now {request.user.email}.")
            return redirect("account")
    elif request.method == "POST":
        delete_form = DeleteAccountForm(request.user, request.POST, prefix="delete")
        if delete_form.is_valid():
            delete_user(request.user)
            logout(request)
            messages.success(request, "Your account was deleted.")
            return HttpResponseRedirect(reverse("login"))
    return render(
        request,
        "accounts/account.html",
        {
            "email_form": email_form,
            "delete_form": delete_form,
            "sole_orgs": sole_member_organizations(request.user),
        },
    )


def sole_member_organizations(user: User) -> list[Organization]:
    """The organizations that would be left without anyone if `user` went."""
    # Counted before the filter on the user, which would otherwise count only their row.
    return list(
        Organization.objects.annotate(members=Count("memberships")).filter(
            memberships__user=user, members=1
        )
    )


def delete_user(user: User) -> None:
    """Delete the user, the organizations only they belong to, and those organizations' files."""
    orgs = sole_member_organizations(user)
    with transaction.atomic():
        for org in orgs:
            # Jobs first: a job PROTECTs its model, which may be the organization's own.
            org.jobs.all().delete()
            org.delete()
        user.delete()
    for org in orgs:
        for prefix in (f"generations/{org.pk}", f"inputs/{org.pk}"):
            delete_tree(prefix)


def delete_tree(prefix: str) -> None:
    """Delete every stored file under `prefix` (local folder or S3 prefix)."""
    try:
        folders, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotImplementedError):
        return
    for name in files:
        default_storage.delete(f"{prefix}/{name}")
    for folder in folders:
        delete_tree(f"{prefix}/{folder}")
