"""What credits are worth in money, for the pages: PICTOR_CREDIT_PRICE in PICTOR_CURRENCY.

Only a display: credits stay the unit every limit and the ledger count in, and Stripe's own
prices decide what a payment costs. Unset PICTOR_CREDIT_PRICE shows no money at all.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

# Symbols written before the amount; any other currency is written after it by its code.
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "KRW": "₩"}
# ISO 4217 currencies without minor units: amounts are shown in whole units.
NO_MINOR_UNITS = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV"}
    | {"XAF", "XOF", "XPF"}
)


def money(amount: Decimal, currency: str) -> str:
    """`amount` written for people: "$1.20", "1,234.50 CHF", "¥120"; "< $0.01" for a crumb."""
    unit = Decimal(1) if currency in NO_MINOR_UNITS else Decimal("0.01")
    rounded = amount.quantize(unit, rounding=ROUND_HALF_UP)
    prefix = ""
    if amount > 0 and rounded == 0:
        rounded, prefix = unit, "< "
    text = f"{rounded:,}"
    symbol = SYMBOLS.get(currency)
    return f"{prefix}{symbol}{text}" if symbol else f"{prefix}{text} {currency}"


def credits_worth(credits: int) -> str:
    """What `credits` cost at PICTOR_CREDIT_PRICE ("$1.20"), or "" when no price is set."""
    price: Decimal | None = settings.PICTOR_CREDIT_PRICE
    if price is None:
        return ""
    return money(Decimal(credits) * price, settings.PICTOR_CURRENCY)
