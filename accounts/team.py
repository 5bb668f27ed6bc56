"""The team page: members and roles, invitations by email link, removal."""

from __future__ import annotations

import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.forms import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts import verification
from accounts.models import (
    EMAIL_LENGTH,
    ApiKey,
    Invitation,
    Membership,
    User,
    canonical_email,
    same_address,
)
from accounts.requests import MemberRequest
from accounts.tenancy import MANAGER_ROLES, SESSION_KEY, member_required, require_manager
from sdplatform import hosts

INVITATION_DAYS = 7
log = logging.getLogger(__name__)
Role = Membership.Role


@member_required
@require_safe
def team(request: MemberRequest) -> HttpResponse:
    org = request.org
    return render(
        request,
        "app/team.html",
        {
            "org": org,
            "me": request.membership,
            "can_manage": request.membership.role in MANAGER_ROLES,
            "members": org.memberships.select_related("user").order_by("created_at", "pk"),
            "invitations": org.invitations.filter(
                accepted_at__isnull=True, expires_at__gt=timezone.now()
            ).order_by("-created_at"),
            "roles": Role.choices,
        },
    )


@member_required
@require_POST
def invite(request: MemberRequest) -> HttpResponse:
    """Email a link that lets the person with that address join (owners and admins only)."""
    require_manager(request)
    if not request.user.email_verified:
        # Otherwise a farmed, never-verified account could send Pictor's mail to anyone.
        messages.error(request, "Verify your email address before you invite anyone.")
        return redirect("app-team")
    org = request.org
    role = request.POST.get("role", Role.MEMBER)
    try:
        email = canonical_email(request.POST.get("email", ""))
        validate_email(email)
    except (ValidationError, ValueError):
        messages.error(request, "Give a valid email address.")
        return redirect("app-team")
    if len(email) > EMAIL_LENGTH:
        messages.error(request, f"An email address here has at most {EMAIL_LENGTH} characters.")
        return redirect("app-team")
    if role not in Role.values:
        messages.error(request, "Choose a role: owner, admin or member.")
        return redirect("app-team")
    me: Membership = request.membership
    if role == Role.OWNER and me.role != Role.OWNER:
        raise PermissionDenied("Only an owner can invite another owner.")
    if org.memberships.filter(user__email__iexact=email).exists():
        messages.error(request, f"{email} is already a member.")
        return redirect("app-team")
    invitation = Invitation.objects.create(
        organization=org,
        email=email,
        role=role,
        invited_by=request.user,
        expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    link = hosts.absolute(reverse("invitation", args=[invitation.token]), request)
    # A name from before line breaks were refused must not break the mail's headers.
    name = " ".join(org.name.split())
    try:
        send_mail(
            f"Join {name} on Pictor",
            f"{request.user.email} invites you to join {name} on Pictor as {role}.\n\n"
            f"Accept within {INVITATION_DAYS} days: {link}\n\n"
            "Log in (or sign up) with this email address to accept.",
            settings.DEFAULT_FROM_EMAIL,
            [email],
        )
    except (smtplib.SMTPException, OSError, ValueError) as exc:  # BadHeaderError is a ValueError
        # No invitation stays listed that nobody was told of.
        invitation.delete()
        log.warning("could not send an invitation of organization %s: %r", org.pk, exc)
        messages.error(request, f"The invitation could not be sent to {email}; try again later.")
        return redirect("app-team")
    messages.success(request, f"Invitation sent to {email}.")
    return redirect("app-team")


@member_required
@require_POST
def change_member(request: MemberRequest, membership_id: int) -> HttpResponse:
    """Change a member's role or remove them; an organization always keeps an owner."""
    require_manager(request)
    org = request.org
    action = request.POST.get("action")
    new_role = request.POST.get("role", "")
    with transaction.atomic():
        # Every membership of the organization, locked (in one order, as delete_user locks its
        # owners): two owners demoting or removing each other at once must not both count the
        # other as the owner that remains. Roles are read again under the lock.
        rows = Membership.objects.select_for_update().filter(organization=org).order_by("pk")
        locked = {row.pk: row for row in rows}
        target, me = locked.get(membership_id), locked.get(request.membership.pk)
        if target is None or me is None:
            raise Http404("No such member")
        if me.role not in MANAGER_ROLES:
            raise PermissionDenied("Only an owner or an admin of this organization can do that.")
        touches_owner = target.role == Role.OWNER or new_role == Role.OWNER
        if touches_owner and me.role != Role.OWNER:
            raise PermissionDenied("Only an owner can change or remove an owner.")
        owners = sum(row.role == Role.OWNER for row in locked.values())
        last_owner = target.role == Role.OWNER and owners == 1
        if action == "remove":
            if last_owner:
                messages.error(
                    request, "The last owner cannot be removed; make another owner first."
                )
                return redirect("app-team")
            # Their keys act for the organization, and they no longer may.
            revoked = ApiKey.objects.revoke_made_by(target.user, org)
            target.delete()
            keys = f"; the {revoked} API key{'s' if revoked != 1 else ''} they made revoked"
            messages.success(request, f"{target.user.email} was removed{keys if revoked else ''}.")
        elif action == "role" and new_role in Role.values:
            if last_owner and new_role != Role.OWNER:
                messages.error(
                    request, "The organization needs an owner; make another owner first."
                )
                return redirect("app-team")
            target.role = new_role
            target.save(update_fields=["role"])
            messages.success(request, f"{target.user.email} is now {new_role}.")
        else:
            messages.error(request, "Choose remove, or a role: owner, admin or member.")
    if target.user_id == request.user.pk and action == "remove":
        return redirect("app-overview")
    return redirect("app-team")


@member_required
@require_POST
def cancel_invitation(request: MemberRequest, invitation_id: int) -> HttpResponse:
    require_manager(request)
    org = request.org
    invitation = get_object_or_404(Invitation, pk=invitation_id, organization=org)
    invitation.delete()
    messages.success(request, f"The invitation to {invitation.email} was withdrawn.")
    return redirect("app-team")


@require_http_methods(["GET", "POST"])
def accept(request: HttpRequest, token: str) -> HttpResponse:
    """The emailed link: log in (or sign up) as the invited email, then join."""
    invitation = Invitation.objects.select_related("organization").filter(token=token).first()
    if invitation is None or not invitation.is_open:
        return render(request, "accounts/invitation.html", {"invitation": None}, status=404)
    if not request.user.is_authenticated:
        return render(
            request,
            "accounts/invitation.html",
            {
                "invitation": invitation,
                "has_account": User.objects.filter(email__iexact=invitation.email).exists(),
            },
        )
    if not same_address(request.user.email, invitation.email):
        return render(
            request, "accounts/invitation.html", {"invitation": invitation, "wrong_user": True}
        )
    if request.method == "POST":
        with transaction.atomic():
            Membership.objects.get_or_create(
                user=request.user,
                organization=invitation.organization,
                defaults={"role": invitation.role},
            )
            invitation.accepted_at = timezone.now()
            invitation.save(update_fields=["accepted_at"])
            # The invitation reached this address: that proves it as the sign-up link would.
            verified = verification.mark_verified(request.user)
        request.session[SESSION_KEY] = invitation.organization.slug
        messages.success(request, f"You joined {invitation.organization.name}.")
        for org, credits in verified.granted:
            messages.success(request, f"Your email is verified; {org.name} got {credits} credits.")
        return redirect("app-overview")
    return render(request, "accounts/invitation.html", {"invitation": invitation})
