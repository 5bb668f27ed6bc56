"""Tiny typed readers for settings that come from the environment."""

from __future__ import annotations

import os


def envstr(name: str, default: str = "") -> str:
    """The variable as a string, or `default` when unset or empty."""
    return os.environ.get(name) or default


def envbool(name: str, default: bool) -> bool:
    """The variable read as a yes/no switch."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    """The variable as an integer, or `default` when unset."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def envfloat(name: str, default: float) -> float:
    """The variable as a float, or `default` when unset."""
    value = os.environ.get(name, "").strip()
    return float(value) if value else default
