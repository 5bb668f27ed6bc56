"""Counting words on the pages: `{% load credits %}`, `{{ n|credits }}`, `{{ n|counted:"job" }}`.

`credits` also shows the money the credits are worth when PICTOR_CREDIT_PRICE is set.
"""

from __future__ import annotations

from django import template

from billing.prices import credits_worth

register = template.Library()


@register.filter
def counted(value: object, word: str) -> str:
    """The number with the word, as in "1 job", "2 jobs", "0 images": plural unless it is one."""
    try:
        n = int(str(value))
    except ValueError:
        return f"{value} {word}s"
    return f"{n} {word}" if n in (1, -1) else f"{n} {word}s"


@register.filter
def credits(value: object) -> str:
    """The credits counted, as in "1 credit", and their money with a price set: "(≈ $1.20)"."""
    text = counted(value, "credit")
    try:
        worth = credits_worth(int(str(value)))
    except ValueError:
        return text
    return f"{text} (≈ {worth})" if worth else text


@register.filter
def credit_price(value: object) -> str:
    """What a number of credits costs, as in "≈ $1.20"; "" without a credit price."""
    try:
        worth = credits_worth(int(str(value)))
    except ValueError:
        return ""
    return f"≈ {worth}" if worth else ""
