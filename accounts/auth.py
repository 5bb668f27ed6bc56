"""API key authentication: the key in the JSON body, a `key` header, Bearer or Basic."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError
from django.http import HttpRequest
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.models import ApiKey, Membership, Organization
from accounts.services import get_or_create_organization
from accounts.tenancy import MANAGER_ROLES, current_membership

if TYPE_CHECKING:
    from accounts.requests import OrgRequest

# Dan's documented public key. It means "the anonymous tenant", and only where a view opts in
# (AnonymousKeyAuthentication) while PICTOR_ANONYMOUS_KEY_ENABLED is on.
ANONYMOUS_KEY = "sk-" + "0" * 48
ANONYMOUS_SLUG = "anonymous"


@dataclass
class ApiKeyUser:
    """The caller behind a valid key; views read `.organization`."""

    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    @property
    def organization(self) -> Organization:
        return self.api_key.organization


def raw_key_from(request: Request) -> str | None:
    """The key as sent: body `key`, then `key`/`Key` header, then `Authorization` Bearer/Basic."""
    if request.method not in ("GET", "HEAD", "DELETE") and reads_body(request):
        data = request.data
        if isinstance(data, dict) and isinstance(data.get("key"), str) and data["key"]:
            return data["key"].strip()
    header = request.headers.get("key")
    if header:
        return header.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if scheme.lower() == "basic" and token.strip():
        # AUTOMATIC1111 clients send `--api-auth user:password`: the key is the password.
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, _, password = decoded.partition(":")
        return password.strip() or None
    return None


def reads_body(request: Request) -> bool:
    """Whether the view parses this body: one with a Content-Type, or any where a parser takes all.

    A body with no Content-Type (`requests.post(url, data=...)`) is read by the views whose
    parser takes any type, so its key counts there as it does with a Content-Type.
    """
    return bool(request.content_type) or any(
        parser.media_type == "*/*" for parser in request.parsers or ()
    )


class AccountSuspended(exceptions.PermissionDenied):
    """Every key of a suspended organization answers this until staff lift the suspension."""

    default_detail = "Account suspended"
    default_code = "account_suspended"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    # Typed as wide as AnonymousKeyAuthentication's override (the public key: no ApiKey row);
    # this class itself always answers an ApiKeyUser and its key.
    def authenticate(
        self, request: Request
    ) -> tuple[ApiKeyUser | AnonymousKeyUser, ApiKey | None] | None:
        raw = raw_key_from(request)
        if raw is None:
            return None
        key = ApiKey.objects.for_raw_key(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid Api Key")
        if key.organization.suspended_at is not None:
            raise AccountSuspended()
        key.touch()
        return ApiKeyUser(key), key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when no key was sent at all.
        return 'Bearer realm="api"'


@dataclass
class AnonymousKeyUser:
    """A caller with the public anonymous key: the shared "anonymous" tenant, without a key row."""

    organization: Organization

    is_authenticated = True
    is_anonymous = False
    is_staff = False


def anonymous_organization() -> Organization:
    """The tenant behind the anonymous key, created on PICTOR_ANONYMOUS_PLAN on first use."""
    org = Organization.objects.select_related("plan").filter(slug=ANONYMOUS_SLUG).first()
    if org is None or org.plan.slug != settings.PICTOR_ANONYMOUS_PLAN:
        try:
            # Creates it with the plan's monthly credits, or moves it to a newly set plan.
            org = get_or_create_organization(ANONYMOUS_SLUG, settings.PICTOR_ANONYMOUS_PLAN)
        except IntegrityError:
            # Two first requests at once: the other one created it.
            org = Organization.objects.select_related("plan").get(slug=ANONYMOUS_SLUG)
    if org.memberships.exists():
        # Someone's own organization got the slug first: the public key must never act for it.
        raise exceptions.AuthenticationFailed("Invalid Api Key")
    return org


class AnonymousKeyAuthentication(ApiKeyAuthentication):
    """API keys, plus the public anonymous key while PICTOR_ANONYMOUS_KEY_ENABLED is on.

    Only the Dan views use this class, so every other format answers the public key 401. The
    anonymous tenant is an ordinary organization: its plan's rate, daily and credit limits
    hold for all anonymous callers together. Its jobs have no api_key.
    """

    def authenticate(
        self, request: Request
    ) -> tuple[ApiKeyUser | AnonymousKeyUser, ApiKey | None] | None:
        if not settings.PICTOR_ANONYMOUS_KEY_ENABLED or raw_key_from(request) != ANONYMOUS_KEY:
            return super().authenticate(request)
        org = anonymous_organization()
        if org.suspended_at is not None:
            raise AccountSuspended()
        return AnonymousKeyUser(org), None


@dataclass
class MemberUser:
    """A logged-in member using the API from Pictor's own pages (the playground)."""

    user: object
    organization: Organization

    is_authenticated = True
    is_anonymous = False
    is_staff = False


class MemberSessionAuthentication(authentication.SessionAuthentication):
    """Session login plus CSRF, acting for the organization the page acts for."""

    def authenticate(self, request: Request) -> tuple[MemberUser, None] | None:
        found = super().authenticate(request)
        if found is None:
            return None
        # Django's request already carries the session user (AuthenticationMiddleware).
        django_request: HttpRequest = request._request
        membership = current_membership(django_request)
        if membership is None:
            raise exceptions.PermissionDenied("You are not a member of any organization.")
        if membership.organization.suspended_at is not None:
            raise AccountSuspended()
        return MemberUser(found[0], membership.organization), None


# --- who an API request acts as --------------------------------------------------------------


def acting_user_id(request: OrgRequest) -> int | None:
    """The member an API request acts as: the logged-in one, or the one who made its key.

    None for a key made on the command line (it has no maker) and for the anonymous key: those
    act for the organization as a whole. A key acts with its maker's role, so a plain member
    cannot do through a key what the pages refuse them (docs/architecture.md).
    """
    if isinstance(request.user, MemberUser):
        return getattr(request.user.user, "pk", None)
    return request.auth.created_by_id if request.auth is not None else None


def acts_as_manager(request: OrgRequest) -> bool:
    """Whether the request may do what the pages leave to owners and admins."""
    maker = acting_user_id(request)
    if maker is None:
        return True
    role = (
        Membership.objects.filter(user_id=maker, organization=request.user.organization)
        .values_list("role", flat=True)
        .first()
    )
    return role in MANAGER_ROLES


def require_manager(request: OrgRequest, doing: str) -> None:
    """Refuse `doing` unless the request acts as an owner or an admin."""
    if not acts_as_manager(request):
        raise exceptions.PermissionDenied(
            f"Only an owner or an admin of the organization can {doing}, in person or through"
            " a key they made."
        )


def require_manager_or_submitter(request: OrgRequest, key_id: int | None, doing: str) -> None:
    """Refuse `doing` to a job unless the request acts as an owner or an admin, or as the
    member who made the key `key_id` that submitted the job."""
    maker = acting_user_id(request)
    if maker is None or acts_as_manager(request):
        return
    if key_id is not None and ApiKey.objects.filter(pk=key_id, created_by_id=maker).exists():
        return
    raise exceptions.PermissionDenied(
        f"Only an owner or an admin of the organization, or the member whose key submitted the"
        f" job, can {doing}."
    )
