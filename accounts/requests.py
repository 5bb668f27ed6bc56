"""Typed views of the requests Pictor's views receive, for annotations only.

Django and DRF type `request.user` as "a user or AnonymousUser" and `request.auth` as anything,
and know nothing of what our own code attaches (`request.org`). A view behind an API key or
behind `member_required` knows more; annotating its request with one of these classes says so
once, instead of a `# type: ignore` at every use.

At run time each name is the framework's own class (no wrapper, no behaviour): views keep
receiving the request objects Django and DRF build, and `isinstance` checks keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from django.http import HttpRequest
from rest_framework.request import Request

if TYPE_CHECKING:
    from accounts.models import ApiKey, Membership, Organization, User


class Caller(Protocol):
    """Who an authenticated API request acts for: accounts.auth's ApiKeyUser, AnonymousKeyUser
    or MemberUser. All three name the organization that is charged."""

    is_authenticated: bool
    is_staff: bool

    @property
    def organization(self) -> Organization: ...


if TYPE_CHECKING:

    class OrgRequest(Request):
        """A DRF request that passed one of accounts.auth's authentication classes.

        `user` is the caller (never AnonymousUser: the views require authentication) and `auth`
        the API key it used: None for the anonymous public key and for a logged-in member
        using the API from Pictor's pages.
        """

        # DRF types both wider (any user or AnonymousUser; any token): narrowing is the point.
        # The one ignore here replaces one at every `request.user.organization` in the views.
        user: Caller  # type: ignore[assignment]  # narrower than DRF's user-or-AnonymousUser
        auth: ApiKey | None

    class KeyRequest(OrgRequest):
        """A request to a view with only ApiKeyAuthentication (the default in settings): there
        is always a key. Dan's views (anonymous key) and the pages' API views (session) may have
        none, so they take OrgRequest."""

        auth: ApiKey

    class UserRequest(HttpRequest):
        """A page request that passed login_required: a logged-in user, maybe in no
        organization yet."""

        user: User

    class MemberRequest(UserRequest):
        """A page request that passed accounts.tenancy.member_required: a logged-in user acting
        for one of their organizations (the decorator sets `membership` and `org`)."""

        membership: Membership
        org: Organization

else:
    OrgRequest = KeyRequest = Request
    UserRequest = MemberRequest = HttpRequest

__all__ = ["Caller", "KeyRequest", "MemberRequest", "OrgRequest", "UserRequest"]
