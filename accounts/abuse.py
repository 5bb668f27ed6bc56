"""Abuse rules: blocked prompt terms, strikes against an organization, and suspension."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from accounts.models import ApiKey, Organization, Strike

# Content a hosted image API refuses outright: sexual content involving minors. The list is
# short on purpose: every term must be unambiguous, because a match costs the tenant a strike.
# Operators add their own terms with PICTOR_BLOCKED_TERMS.
BUILTIN_BLOCKED_TERMS = (
    "child porn",
    "child pornography",
    "csam",
    "jailbait",
    "loli",
    "lolicon",
    "shota",
    "shotacon",
    "pedo",
    "pedophile",
    "pedophilia",
    "paedophile",
    "underage nude",
    "underage naked",
    "underage sex",
    "nude child",
    "naked child",
    "child nude",
    "child naked",
    "preteen nude",
    "preteen naked",
)

BLOCKED_MESSAGE = "The prompt contains blocked content."

# Digits and symbols people put in place of letters to slip a word past a filter. "1" stands
# for "i" as often as for "l", so a prompt is read both ways.
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET_I = str.maketrans({**_LEET, "1": "i"})
_LEET_L = str.maketrans({**_LEET, "1": "l"})
_SEPARATORS = re.compile(r"[\W_]+")


def normalize(text: str, *, one_as_l: bool = False) -> str:
    """Lower-case words separated by single spaces, with accents and leetspeak undone."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return _SEPARATORS.sub(" ", plain.translate(_LEET_L if one_as_l else _LEET_I)).strip()


def blocked_terms() -> tuple[str, ...]:
    """The built-in terms plus PICTOR_BLOCKED_TERMS, normalised."""
    extra: Iterable[str] = settings.PICTOR_BLOCKED_TERMS
    return normalized_terms(tuple(extra))


@functools.lru_cache(maxsize=8)
def normalized_terms(extra: tuple[str, ...]) -> tuple[str, ...]:
    """The built-in terms plus `extra`, normalised once per list, not on every submit."""
    terms = (normalize(term) for term in (*BUILTIN_BLOCKED_TERMS, *extra))
    return tuple(dict.fromkeys(term for term in terms if term))


@functools.lru_cache(maxsize=8)
def _pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    # Whole words only ("shota" must not catch "shotgun"); the words of a phrase may also be run
    # together or split by any punctuation ("child_porn", "childporn"). Longest first, so the
    # reported term is the most specific one.
    alternatives = (
        r"\s?".join(re.escape(word) for word in term.split())
        for term in sorted(terms, key=len, reverse=True)
    )
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


def find_blocked_term(prompt: str) -> str | None:
    """The blocked term `prompt` contains (normalised), or None."""
    terms = blocked_terms()
    if not terms or not prompt:
        return None
    pattern = _pattern(terms)
    for text in (normalize(prompt), normalize(prompt, one_as_l=True)):
        if match := pattern.search(text):
            return match.group(0)
    return None


def check_prompt(
    organization: Organization,
    api_key: ApiKey | None,
    prompt: str,
    negative_prompt: str = "",
) -> None:
    """Refuse a prompt with blocked content (400), adding a strike; suspend at the strike limit."""
    # The negative prompt is not checked: people list blocked words there to keep them out.
    term = find_blocked_term(prompt)
    if term is None:
        return
    add_strike(organization, api_key, reason=f"Blocked term {term!r} in the prompt", prompt=prompt)
    # Raised after the strike's transaction has committed: failing the request must not undo it.
    raise ValidationError({"prompt": [BLOCKED_MESSAGE]})


def add_strike(
    organization: Organization, api_key: ApiKey | None, *, reason: str, prompt: str = ""
) -> Strike:
    """Record a strike and count it; suspend the organization when it reaches the limit."""
    with transaction.atomic():
        strike = Strike.objects.create(
            organization=organization, api_key=api_key, reason=reason, prompt=prompt
        )
        # F() so concurrent strikes all count; the UPDATE locks the row until commit, so the
        # count read back below already includes every strike committed before this one.
        Organization.objects.filter(pk=organization.pk).update(strikes=F("strikes") + 1)
        organization.strikes = (
            Organization.objects.filter(pk=organization.pk).values_list("strikes", flat=True).get()
        )
        if organization.strikes >= settings.PICTOR_STRIKE_LIMIT:
            suspend(organization, f"{organization.strikes} blocked-content strikes")
    return strike


def suspend(organization: Organization, reason: str) -> None:
    """Suspend the organization: every key of it answers 403 until staff lift it."""
    now = timezone.now()
    # Only the first suspension is recorded, so its time and reason stay what staff first saw.
    updated = Organization.objects.filter(pk=organization.pk, suspended_at__isnull=True).update(
        suspended_at=now, suspension_reason=reason[:500]
    )
    if updated:
        organization.suspended_at = now
        organization.suspension_reason = reason[:500]
    else:
        organization.refresh_from_db(fields=["suspended_at", "suspension_reason"])


def lift_suspension(organization: Organization) -> None:
    """Lift a suspension and forgive the strikes; the Strike rows stay as history."""
    Organization.objects.filter(pk=organization.pk).update(
        strikes=0, suspended_at=None, suspension_reason=""
    )
    organization.strikes = 0
    organization.suspended_at = None
    organization.suspension_reason = ""
