"""Tiny typed readers for settings that come from the environment.

A value that is set but cannot be read is refused at start-up (ImproperlyConfigured naming the
variable) rather than silently taken as a default: `DEBUG=ture` must not quietly mean "off".
"""

from __future__ import annotations

import os
from typing import overload

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def envstr(name: str, default: str = "") -> str:
    """The variable as a string, or `default` when unset or empty."""
    return os.environ.get(name) or default


def envbool(name: str, default: bool) -> bool:
    """The variable read as a yes/no switch (any case), or `default` when unset or empty."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of {', '.join(TRUE_WORDS)} (on) or {', '.join(FALSE_WORDS)} (off), "
        f"not {os.environ[name]!r}"
    )


@overload
def envint(name: str, default: int) -> int: ...
@overload
def envint(name: str, default: None) -> int | None: ...


def envint(name: str, default: int | None) -> int | None:
    """The variable as an integer, or `default` when unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def envfloat(name: str, default: float) -> float:
    """The variable as a float, or `default` when unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
