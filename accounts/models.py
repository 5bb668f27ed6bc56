"""Users, organizations (the tenants), memberships and API keys."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, ClassVar, cast

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import connection, models
from django.utils import timezone

from sdplatform.rows import Selected, fixed_cursor

if TYPE_CHECKING:
    from billing.models import Plan

KEY_PREFIX = "pct_"
# "pct_" plus eight characters: enough to find the row, far too little to guess the key.
KEY_LOOKUP_LENGTH = len(KEY_PREFIX) + 8
KEY_NAME_LENGTH = 100
# An email column's width (Django's EmailField default); validate_email alone takes up to 320.
EMAIL_LENGTH = 254
ORGANIZATION_NAME_LENGTH = 200
# last_used_at is a hint for humans; writing it on every request would cost a row lock each time.
LAST_USED_RESOLUTION = 60
WEBHOOK_SECRET_PREFIX = "whsec_"


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: "whsec_" and base64 of 24 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def canonical_email(address: str) -> str:
    """The one spelling of an address that Pictor stores: lower case, its domain in ASCII.

    "Ann@Exämple.com" and "ann@xn--exmple-cua.com" reach one mailbox, and mail is sent to the
    ASCII form anyway. Raises ValueError for a domain that has no ASCII form (a label too long).
    """
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("The email address's domain is not valid.") from None
    return f"{local}@{domain}"


def comparable_email(address: str) -> str:
    """canonical_email, or the address lower-cased where its domain has no ASCII form: a key
    to compare or count addresses by, whatever was typed."""
    try:
        return canonical_email(address)
    except ValueError:
        return address.strip().lower()


def same_address(first: str, second: str) -> bool:
    """Whether two spellings of email addresses reach one mailbox (canonical_email)."""
    return comparable_email(first) == comparable_email(second)


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def get_by_natural_key(self, username: str | None) -> User:
        """The user logging in as `username`, however its letters' case was typed."""
        address = str(username or "").strip()
        spellings = {address.lower(), comparable_email(address)}
        # Addresses are stored lower-cased (accounts made before the ASCII domain kept theirs).
        user = self.filter(email__in=spellings).order_by("pk").first()
        if user is None:
            raise self.model.DoesNotExist("No user with this email address")
        return user

    def _create(self, email: str, password: str | None, **extra: object) -> User:
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=canonical_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        """A regular user."""
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        """A staff superuser for the admin and ops pages (an operator vouches for the email)."""
        extra["is_staff"] = True
        extra["is_superuser"] = True
        extra.setdefault("email_verified_at", timezone.now())
        return self._create(email, password, **extra)


class User(AbstractUser):
    """A person; logs in with an email address."""

    # Django's documented way to drop AbstractUser's username column (email replaces it); the
    # stubs type the attribute as the field's str, so removing it is an error to them.
    username = None  # type: ignore[assignment]  # removes the inherited field, by design
    email = models.EmailField("email address", max_length=EMAIL_LENGTH, unique=True)
    # Set by the emailed sign-up link (accounts/verification.py) or an accepted invitation.
    # Until then the user creates no API key and their sign-up organization has no credits.
    email_verified_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the user proved the email address is theirs; empty: not yet",
    )

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    # An email-keyed manager: Django's own UserManager (the stubs' type here) wants a username.
    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]  # email-keyed

    def __str__(self) -> str:
        return self.email

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


# Slugs people cannot take by naming their organization so: Dan's public key acts for
# "anonymous" (generation/api/dan/).
RESERVED_SLUGS = ("anonymous", "admin", "ops", "api", "app")


class Organization(models.Model):
    """The tenant: owns keys, jobs, credits and a plan.

    Created by accounts/services.py: create_organization(), which also grants its first credits.
    """

    name = models.CharField(max_length=ORGANIZATION_NAME_LENGTH)
    slug = models.SlugField(max_length=100, unique=True)
    plan = models.ForeignKey("billing.Plan", on_delete=models.PROTECT, related_name="organizations")
    created_at = models.DateTimeField(default=timezone.now)
    webhook_secret = models.CharField(
        max_length=100,
        default=new_webhook_secret,
        help_text="Signs this organization's job webhooks (Standard Webhooks)",
    )
    # The running total of the credit ledger (billing.CreditEntry); only billing/ledger.py
    # changes it, in the same transaction as the entry, so it always equals the ledger's sum.
    credit_balance = models.PositiveIntegerField(default=0)
    strikes = models.PositiveSmallIntegerField(
        default=0, help_text="Blocked-content strikes since the last lift"
    )
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspension_reason = models.CharField(max_length=500, blank=True)
    # A self-service sign-up's credits wait for its owner's verified email (and go to each
    # address once); the monthly grant skips the organization meanwhile.
    free_credits_pending = models.BooleanField(
        default=False,
        help_text="Created at sign-up; its plan's credits wait for the owner's verified email",
    )
    # The owner's address had free credits before (a deleted account signed up again): the
    # default plan's monthly credits never come back to it; a paid or granted plan's do.
    free_credits_refused = models.BooleanField(
        default=False,
        help_text="Its owner's address already had free credits: no default-plan credits",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credit_balance__gte=0),
                name="accounts_organization_credit_balance_not_negative",
            )
        ]

    def __str__(self) -> str:
        return self.slug

    def rotate_webhook_secret(self) -> str:
        """Replace the webhook signing secret; returns the new one."""
        self.webhook_secret = new_webhook_secret()
        self.save(update_fields=["webhook_secret"])
        return self.webhook_secret


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "organization"], name="accounts_membership_unique_user_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


def key_digest(raw_key: str) -> str:
    """HMAC-SHA256 of a raw key under the server's key secret."""
    secret = settings.API_KEY_HMAC_SECRET.encode()
    return hmac.new(secret, raw_key.encode(), hashlib.sha256).hexdigest()


class ApiKeyManager(models.Manager["ApiKey"]):
    def issue(
        self, organization: Organization, name: str = "", created_by: User | None = None
    ) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the raw key, which is never stored."""
        raw = KEY_PREFIX + secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")
        key = self.create(
            organization=organization,
            name=name,
            created_by=created_by,
            prefix=raw[:KEY_LOOKUP_LENGTH],
            digest=key_digest(raw),
        )
        return key, raw

    def revoke_made_by(self, user: User, organization: Organization | None = None) -> int:
        """Revoke the live keys `user` made (for `organization` only, when given); how many."""
        keys = self.filter(created_by=user, revoked_at__isnull=True)
        if organization is not None:
            keys = keys.filter(organization=organization)
        return keys.update(revoked_at=timezone.now())

    def for_raw_key(self, raw: str) -> ApiKey | None:
        """The live key matching `raw`, compared in constant time, or None."""
        if not raw.startswith(KEY_PREFIX) or len(raw) < KEY_LOOKUP_LENGTH + 8 or len(raw) > 200:
            return None
        if not (raw.isascii() and raw.isprintable()):
            # Keys are plain ASCII; a NUL would reach the prefix lookup (PostgreSQL refuses it)
            # and an unpaired surrogate the HMAC (it cannot be encoded): both a 500, not a 401.
            return None
        digest = key_digest(raw)
        key, organization, plan, sql = live_key_query()
        with fixed_cursor() as cursor:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(sql, [raw[:KEY_LOOKUP_LENGTH], now])
            rows = cursor.fetchall()
        for row in rows:
            found = key.instance(row)
            if hmac.compare_digest(found.digest, digest):
                found.organization = organization.instance(row)
                found.organization.plan = plan.instance(row)
                return found
        return None


@functools.cache
def live_key_query() -> tuple[Selected[ApiKey], Selected[Organization], Selected[Plan], str]:
    """`ApiKey.objects.select_related("organization__plan")` and for_raw_key's filter, as one SQL.

    Every API request looks its key up; the ORM's building of this statement cost five times
    PostgreSQL's answer (sdplatform/rows.py). Built on first use, when the plan's model is loaded.
    """
    key = Selected(ApiKey, "k")
    organization = Selected(Organization, "o", after=key)
    plan_model = cast("type[Plan]", Organization._meta.get_field("plan").related_model)
    plan = Selected(plan_model, "p", after=organization)
    tables = {model: model._meta.db_table for model in (ApiKey, Organization, plan_model)}
    sql = (
        f"SELECT {key.sql}, {organization.sql}, {plan.sql} FROM {tables[ApiKey]} k"
        f" JOIN {tables[Organization]} o ON o.id = k.organization_id"
        f" JOIN {tables[plan_model]} p ON p.id = o.plan_id"
        " WHERE k.prefix = %s AND k.revoked_at IS NULL"
        " AND (k.expires_at IS NULL OR k.expires_at > %s)"
    )
    return key, organization, plan, sql


class ApiKey(models.Model):
    """A tenant's API key, stored as a lookup prefix plus an HMAC digest."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=KEY_NAME_LENGTH, blank=True)
    # Who made it on the keys page: a member may revoke their own keys, managers any key.
    created_by = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who created it on the keys page; empty: an operator's command or the admin",
    )
    prefix = models.CharField(max_length=KEY_LOOKUP_LENGTH)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires")
    # AUTOMATIC1111 clients pick a model with POST /sdapi/v1/options; webui keeps it server-wide,
    # Pictor per key, so one tenant's choice never changes another's images.
    default_model = models.ForeignKey(
        "generation.AIModel",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=(
            "The checkpoint this key's AUTOMATIC1111 requests use when they name none "
            "(set by POST /sdapi/v1/options); empty: the server default"
        ),
    )

    objects = ApiKeyManager()

    class Meta:
        indexes = [
            # ApiKey.objects.for_raw_key(): WHERE prefix = %s AND revoked_at IS NULL
            # AND (expires_at IS NULL OR expires_at > now); the prefix alone leaves one row or so.
            models.Index(fields=["prefix"], name="accounts_apikey_prefix_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.organization.slug})"

    def touch(self) -> None:
        """Record use, at most once a minute."""
        now = timezone.now()
        if self.last_used_at and (now - self.last_used_at).total_seconds() < LAST_USED_RESOLUTION:
            return
        ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now

    def revoke(self) -> None:
        """Stop this key from authenticating, for good."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class Strike(models.Model):
    """One refused prompt held against an organization (the abuse rules count them)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="strike_log"
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="strikes"
    )
    reason = models.CharField(max_length=500)
    prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # the admin's strike list per organization: WHERE organization_id=%s ORDER BY created_at
            models.Index(fields=["organization", "-created_at"], name="accounts_strike_org_idx"),
        ]

    def __str__(self) -> str:
        return f"strike on {self.organization} ({self.reason})"


def new_invitation_token() -> str:
    return secrets.token_urlsafe(32)


class Invitation(models.Model):
    """An emailed link that makes its holder (with that email) a member of the organization."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField(max_length=EMAIL_LENGTH)
    role = models.CharField(
        max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER
    )
    token = models.CharField(max_length=100, unique=True, default=new_invitation_token)
    invited_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.email} → {self.organization.slug}"

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.expires_at > timezone.now()


class FreeCreditClaim(models.Model):
    """An email address that has had its free sign-up credits, kept as a keyed digest.

    Rows outlive the account (no foreign key): a deleted account signed up again with the same
    address gets no second grant, and no plain address of a deleted user is kept.
    """

    email_digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # accounts/verification.py claim_free_credits(): one grant per address, also
            # under two verifications at once (the second INSERT fails).
            models.UniqueConstraint(
                fields=["email_digest"], name="accounts_freecreditclaim_unique_digest"
            )
        ]

    def __str__(self) -> str:
        return f"free credits claimed by {self.email_digest[:12]}…"
