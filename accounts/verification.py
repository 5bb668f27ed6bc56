"""Email verification at sign-up: the signed link, and what following it unlocks.

A self-service sign-up starts unverified: its organization has no credits and no API key can be
made. The emailed link (signed, expiring, built from the configured base URL) marks the email
verified and grants the plan's free credits, once per address: each address that had them is
kept as an HMAC digest (FreeCreditClaim), so deleting the account and signing up again with the
same address, or a "+tag" of it, gets none.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
from dataclasses import dataclass, field

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import FreeCreditClaim, Membership, Organization, User, comparable_email
from billing import counters, ledger
from sdplatform import hosts

log = logging.getLogger(__name__)

SALT = "accounts.verification.email"
# Resending the link: once a minute, and a few times a day, per user.
RESEND_INTERVAL_SECONDS = 60
RESENDS_PER_DAY = 10
# Mailboxes that ignore dots in the local part, and the domains they answer for.
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


class InvalidLink(Exception):
    """The verification link was altered, has expired, or no longer matches the account."""


def normalized_email(email: str) -> str:
    """The mailbox an address reaches: lowercase, no "+tag", no dots at Gmail."""
    # A domain beyond ASCII reaches its ASCII form's mailbox.
    local, _, domain = comparable_email(email).rpartition("@")
    # Providers deliver "name+anything@" to "name@" (Gmail, Outlook, Fastmail, Proton, ...).
    local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        local, domain = local.replace(".", ""), DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


def email_digest(email: str) -> str:
    """HMAC-SHA256 of the normalized address under PICTOR_EMAIL_HMAC_SECRET."""
    secret = settings.PICTOR_EMAIL_HMAC_SECRET.encode()
    return hmac.new(secret, normalized_email(email).encode(), hashlib.sha256).hexdigest()


def had_free_credits(email: str) -> bool:
    """True when this address (normalized) has already been granted free credits."""
    return FreeCreditClaim.objects.filter(email_digest=email_digest(email)).exists()


def claim_free_credits(email: str) -> bool:
    """Record that the address has its free credits; False when it already had them."""
    try:
        with transaction.atomic():
            FreeCreditClaim.objects.create(email_digest=email_digest(email))
    except IntegrityError:
        return False
    return True


def _fingerprint(user: User) -> str:
    # Ties the link to the address it was sent to: after an email change it verifies nothing.
    return salted_hmac(SALT, f"{user.pk}:{user.email.lower()}").hexdigest()[:20]


def make_token(user: User) -> str:
    """A signed, timestamped token naming the user and the address the link goes to."""
    return signing.dumps([user.pk, _fingerprint(user)], salt=SALT)


def user_for_token(token: str) -> User:
    """The user a link's token names; raises InvalidLink when altered, expired or stale."""
    max_age = settings.PICTOR_EMAIL_VERIFICATION_HOURS * 3600
    try:
        user_id, fingerprint = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired:
        raise InvalidLink("This link has expired; send yourself a new one.") from None
    except (signing.BadSignature, TypeError, ValueError):
        raise InvalidLink("This link is not valid; use the newest one we sent.") from None
    user = User.objects.filter(pk=user_id).first() if isinstance(user_id, int) else None
    if user is None or not hmac.compare_digest(
        str(fingerprint).encode(), _fingerprint(user).encode()
    ):
        raise InvalidLink("This link is not valid for this account any more.")
    return user


def verification_link(user: User, request: HttpRequest | None = None) -> str:
    """The absolute link to put in the email (PICTOR_BASE_URL, never the request's Host)."""
    return hosts.absolute(reverse("verify-email-confirm", args=[make_token(user)]), request)


def send_verification_email(user: User, request: HttpRequest | None = None) -> bool:
    """Email the link; False when the mail server refused it (the user can resend)."""
    hours = settings.PICTOR_EMAIL_VERIFICATION_HOURS
    try:
        send_mail(
            "Verify your email for Pictor",
            "Follow this link to verify your email address. Then your organization gets its "
            f"free credits and you can create API keys.\n\n{verification_link(user, request)}"
            f"\n\nThe link works for {hours} hours. If you did not sign up for Pictor, ignore "
            "this email.",
            settings.DEFAULT_FROM_EMAIL,
            [user.email],
        )
    except (smtplib.SMTPException, OSError, ValueError):  # ValueError: an address no mail takes
        log.exception("could not send the verification email to user %s", user.pk)
        return False
    return True


def resend_wait(user: User) -> int:
    """Seconds before another link may be sent to `user` (0: now, and the send is counted)."""
    wait = counters.claim(f"verify-resend:{user.pk}", RESEND_INTERVAL_SECONDS)
    if wait:
        return max(1, int(wait))
    day = counters.hit(f"verify-resend-day:{user.pk}", 86400)
    if day.count > RESENDS_PER_DAY:
        return max(1, int(day.resets_in))
    return 0


@dataclass
class Verified:
    """What following the link did: the organizations granted credits, and those refused."""

    granted: list[tuple[Organization, int]] = field(default_factory=list)
    refused: list[Organization] = field(default_factory=list)


def mark_verified(user: User) -> Verified:
    """Mark the email verified and grant the sign-up organization's free credits, once."""
    outcome = Verified()
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if locked.email_verified_at is None:
            locked.email_verified_at = timezone.now()
            locked.save(update_fields=["email_verified_at"])
        user.email_verified_at = locked.email_verified_at
        pending = Organization.objects.select_for_update().filter(
            memberships__user=locked,
            memberships__role=Membership.Role.OWNER,
            free_credits_pending=True,
        )
        for org in pending.select_related("plan").order_by("pk"):
            org.free_credits_pending = False
            org.save(update_fields=["free_credits_pending"])
            if org.plan.monthly_credits <= 0:
                continue
            if claim_free_credits(locked.email):
                ledger.grant_monthly(org)
                outcome.granted.append((org, org.plan.monthly_credits))
            else:
                org.free_credits_refused = True
                org.save(update_fields=["free_credits_refused"])
                outcome.refused.append(org)
    return outcome
