"""Account pages: sign up, log in and out, password reset, email change, account deletion."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, PasswordResetForm
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from accounts import login_limits, services, verification
from accounts.forms import DeleteAccountForm, EmailChangeForm, RateLimitedLoginForm, SignupForm
from accounts.models import ApiKey, Membership, Organization, User
from accounts.requests import UserRequest
from sdplatform import hosts

log = logging.getLogger(__name__)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """A new, unverified user and their organization on the free plan; logged in and emailed."""
    if request.user.is_authenticated:
        return redirect("app-overview")
    form = SignupForm(
        request.POST or None, request=request, initial={"email": request.GET.get("email", "")}
    )
    next_url = request.POST.get("next") or request.GET.get("next", "")
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    form.cleaned_data["email"], form.cleaned_data["password"]
                )
                org = services.create_organization(
                    form.cleaned_data["organization"], owner=user, free_credits=False
                )
        except IntegrityError:
            if not User.objects.filter(email=form.cleaned_data["email"]).exists():
                raise
            # The same form sent twice at once (a double click): the other one made the account.
            form.add_error("email", "An account with this email already exists; log in.")
            return render(request, "accounts/signup.html", {"form": form, "next": next_url})
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        # The sign-up's email counts as the first send: an instant "resend" waits its turn.
        verification.resend_wait(user)
        if verification.send_verification_email(user, request):
            messages.success(
                request,
                f"Welcome! {org.name} is on the {org.plan.name} plan. Check your email: we sent "
                f"a link to {user.email}. Follow it to get your free credits and create API keys.",
            )
        else:
            messages.error(request, "We could not send the verification email; send it again.")
        if next_url and url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            # Not redirect(): it would read a bare word ("a") as a URL pattern's name and fail.
            return HttpResponseRedirect(next_url)
        return redirect("verify-email")
    status = 429 if form.has_error(NON_FIELD_ERRORS, "rate_limited") else 200
    return render(request, "accounts/signup.html", {"form": form, "next": next_url}, status=status)


def check_email_page(request: UserRequest, status: int = 200) -> HttpResponse:
    """The "check your email" page an unverified user gets instead of keys, with a resend button."""
    return render(
        request,
        "accounts/verify_email.html",
        {
            "email": request.user.email,
            "had_free_credits": verification.had_free_credits(request.user.email),
            "hours": settings.PICTOR_EMAIL_VERIFICATION_HOURS,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def verify_email(request: UserRequest) -> HttpResponse:
    """Check your email (GET); send the link again, at most once a minute (POST)."""
    if request.user.email_verified:
        return redirect("app-keys")
    if request.method == "POST":
        wait = verification.resend_wait(request.user)
        if wait:
            messages.error(request, f"A link was sent moments ago; try again in {wait} seconds.")
            return check_email_page(request, status=429)
        if verification.send_verification_email(request.user, request):
            messages.success(request, f"A new link is on its way to {request.user.email}.")
        else:
            messages.error(request, "We could not send the email just now; try again later.")
        return redirect("verify-email")
    return check_email_page(request)


@require_http_methods(["GET"])
def confirm_email(request: HttpRequest, token: str) -> HttpResponse:
    """The emailed link: mark the email verified, grant the free credits once, allow keys."""
    try:
        user = verification.user_for_token(token)
    except verification.InvalidLink as exc:
        return render(
            request, "accounts/verify_email_failed.html", {"reason": str(exc)}, status=400
        )
    outcome = verification.mark_verified(user)
    for org, credits in outcome.granted:
        messages.success(
            request,
            f"Your email is verified. {org.name} is on the {org.plan.name} plan with "
            f"{credits} credits. Create an API key to start.",
        )
    for org in outcome.refused:
        messages.warning(
            request,
            f"Your email is verified. This address has already had its free credits once, so "
            f"{org.name} starts with none: buy credits or upgrade on the billing page.",
        )
    if not outcome.granted and not outcome.refused:
        messages.success(request, "Your email is verified.")
    if request.user.is_authenticated and request.user.pk == user.pk:
        return redirect("app-keys")
    return redirect("login")


class LoginView(auth_views.LoginView):
    form_class = RateLimitedLoginForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        return login_limits.answer_refused(form, super().form_invalid(form))


class LogoutView(auth_views.LogoutView):
    # A URL name: Django's resolve_url reverses it when the view redirects, as reverse_lazy did.
    next_page = "login"


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        # The link's scheme and host come from PICTOR_BASE_URL, not the request: a reset asked
        # for with a forged Host would otherwise mail the victim a link to the forger's site.
        base = urlsplit(hosts.base_url(self.request))
        self.extra_email_context = {
            "protocol": base.scheme,
            "domain": base.netloc,
            "site_name": base.netloc,
        }
        return super().form_valid(form)


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

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        messages.success(self.request, "Your password was changed.")
        return super().form_valid(form)


@login_required
@require_http_methods(["GET", "POST"])
def account(request: UserRequest) -> HttpResponse:
    """The user's own settings: email, password, deletion."""
    email_form = EmailChangeForm(request.user, prefix="email")
    delete_form = DeleteAccountForm(request.user, prefix="delete")
    if request.method == "POST" and "email-email" in request.POST:
        email_form = EmailChangeForm(request.user, request.POST, prefix="email")
        if email_form.is_valid():
            return change_email(request, email_form.cleaned_data["email"])
    elif request.method == "POST":
        delete_form = DeleteAccountForm(request.user, request.POST, prefix="delete")
        if delete_form.is_valid():
            try:
                delete_user(request.user)
            except OwnerNeeded as exc:
                delete_form.add_error(None, str(exc))
            else:
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
            "ownerless_orgs": organizations_left_without_owner(request.user),
        },
    )


def change_email(request: UserRequest, email: str) -> HttpResponse:
    """Take the new address, unverified until its emailed link is followed (as at sign-up)."""
    user = request.user
    changed = email != user.email
    old = (user.email, user.email_verified_at)
    user.email = email
    if changed:
        # Verified was about the old address; keys and invitations wait for the new one's link.
        user.email_verified_at = None
    try:
        with transaction.atomic():
            user.save(update_fields=["email", "email_verified_at"])
    except IntegrityError:
        # Another account took the address between the form's check and this save.
        user.email, user.email_verified_at = old
        messages.error(request, "Another account uses this email.")
        return redirect("account")
    messages.success(request, f"Your email is now {user.email}.")
    if changed:
        if verification.send_verification_email(user, request):
            messages.success(request, f"Follow the link we sent to {user.email} to verify it.")
        else:
            messages.error(request, "We could not send the verification email; send it again.")
    return redirect("account")


class OwnerNeeded(Exception):
    """Deleting the account would leave organizations with members but without an owner."""

    def __init__(self, orgs: list[Organization]) -> None:
        names = ", ".join(org.name for org in orgs)
        super().__init__(
            f"You are the only owner of {names}, which other people belong to. Make one of them "
            "an owner on the team page (or remove them) before you delete your account."
        )
        self.orgs = orgs


def sole_member_organizations(user: User) -> list[Organization]:
    """The organizations that would be left without anyone if `user` went."""
    # Counted before the filter on the user, which would otherwise count only their row.
    return list(
        Organization.objects.annotate(members=Count("memberships")).filter(
            memberships__user=user, members=1
        )
    )


def organizations_left_without_owner(user: User) -> list[Organization]:
    """The organizations with other members whose only owner is `user`."""
    owner = Membership.Role.OWNER
    owned = Membership.objects.filter(user=user, role=owner).values("organization")
    return list(
        Organization.objects.filter(pk__in=owned)
        .annotate(
            owners=Count("memberships", filter=Q(memberships__role=owner)),
            members=Count("memberships"),
        )
        .filter(owners=1, members__gt=1)
        .order_by("name")
    )


# The storage folders that hold one organization's files, each under `<folder>/<org id>/`: job
# outputs, stored input images, own models' files and own models' sample images.
TENANT_FOLDERS = ("generations", "inputs", "models", "samples")


def delete_user(user: User) -> None:
    """Delete the user, the organizations only they belong to, and those organizations' files.

    Raises OwnerNeeded, deleting nothing, where an organization would keep members but no owner.
    """
    orgs = sole_member_organizations(user)
    doomed = [org.pk for org in orgs]  # read first: delete() sets each instance's pk to None
    with transaction.atomic():
        # The owners' rows, which the team page locks too (accounts/team.py, in the same
        # order), so a role changed at the same moment is seen here.
        list(
            Membership.objects.select_for_update()
            .filter(organization__memberships__user=user, role=Membership.Role.OWNER)
            .order_by("pk")
        )
        ownerless = organizations_left_without_owner(user)
        if ownerless:
            raise OwnerNeeded(ownerless)
        # Keys they made for organizations that stay: nobody would be left to answer for them.
        ApiKey.objects.revoke_made_by(user)
        for org in orgs:
            # Jobs first: a job PROTECTs its model, which may be the organization's own.
            org.jobs.all().delete()
            org.delete()
        user.delete()
    for org_id in doomed:
        for folder in TENANT_FOLDERS:
            delete_tree(f"{folder}/{org_id}")


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
