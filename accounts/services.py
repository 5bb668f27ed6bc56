"""Actions on accounts: a new organization, its owner and its first credits.

Models hold data and services hold actions (docs/architecture.md): creating an organization
writes rows of three models and a credit-ledger entry, so it lives here and not on
`Organization`, which keeps accounts/models.py free of any import of billing's ledger.
Every organization is created by `create_organization()`: the sign-up, the anonymous key's
tenant, `manage.py apikey create` and the tests' tenants all get the same rows in the same order.
"""

from __future__ import annotations

import re
import unicodedata

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from accounts.models import RESERVED_SLUGS, Membership, Organization, User
from billing import ledger
from billing.models import Plan

# A slug made from a name is cut to this length, leaving room for a "-2" suffix in the column.
SLUG_BASE_LENGTH = 80
# Sign-ups at the same moment may pick one free slug; each later one tries the next free one.
SLUG_ATTEMPTS = 5
# A slug named by an operator, as given: what slugify() makes of a name and validate_slug takes.
SLUG = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*")


def check_slug(slug: str) -> str:
    """`slug` when an organization may have it as given; ValueError says what a slug holds."""
    limit = Organization._meta.get_field("slug").max_length or 0
    if len(slug) <= limit and SLUG.fullmatch(slug):
        return slug
    raise ValueError(
        f"{slug!r} is not an organization slug: a slug is 1 to {limit} lowercase letters and "
        "digits, with single hyphens or underscores between them"
    )


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a control character (a line break, a tab, NUL) or a lone surrogate."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def unused_slug(name: str) -> str:
    """A slug made from `name` that no organization has and none may take: acme, acme-2, …"""
    base = slugify(name)[:SLUG_BASE_LENGTH] or "org"
    slug, n = base, 1
    while slug in RESERVED_SLUGS or Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def create_organization(
    name: str,
    *,
    slug: str | None = None,
    plan: Plan | None = None,
    owner: User | None = None,
    free_credits: bool = True,
) -> Organization:
    """A new organization on `plan` (default: the free plan), with `owner` as its owner if given.

    `slug` is taken as given (a clash raises IntegrityError); without it one is made from `name`.
    The plan's monthly credits are granted at once, or, with `free_credits=False` (a self-service
    sign-up), once the owner's email is verified (accounts/verification.py: mark_verified()).
    """
    for attempt in range(SLUG_ATTEMPTS):
        chosen = slug or unused_slug(name)
        try:
            with transaction.atomic():
                org = Organization.objects.create(
                    name=name,
                    slug=chosen,
                    plan=plan or Plan.objects.get(slug=Plan.DEFAULT_SLUG),
                    free_credits_pending=not free_credits,
                )
                if owner is not None:
                    Membership.objects.create(
                        user=owner, organization=org, role=Membership.Role.OWNER
                    )
                if free_credits:
                    ledger.grant_monthly(org)
            break
        except IntegrityError:
            # Two sign-ups named alike at once both found the slug free: the later takes the next.
            retry = slug is None and attempt + 1 < SLUG_ATTEMPTS
            if not retry or not Organization.objects.filter(slug=chosen).exists():
                raise
    org.refresh_from_db(fields=["credit_balance"])
    return org


def get_or_create_organization(slug: str, plan_slug: str | None = None) -> Organization:
    """The organization with this slug, created on the given (default: free) plan if new.

    For tenants named by an operator or the settings (the anonymous key's, `manage.py apikey`),
    not for sign-ups: the slug is used as is, reserved or not, and must be one (check_slug's
    ValueError otherwise). An existing organization named with another plan is moved to it and
    granted the new plan's credits at once.
    """
    check_slug(slug)
    org = Organization.objects.filter(slug=slug).first()
    if org is None:
        plan = Plan.objects.get(slug=plan_slug or Plan.DEFAULT_SLUG)
        return create_organization(slug, slug=slug, plan=plan)
    if plan_slug and org.plan.slug != plan_slug:
        ledger.change_plan(org, Plan.objects.get(slug=plan_slug))
        org.refresh_from_db(fields=["credit_balance"])
    return org
