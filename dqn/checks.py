"""ConfigError, and the range checks every schema's `check()` uses: each raises it with one
line naming the key, the value and what is allowed."""

from __future__ import annotations

import math
from typing import Any, Optional


class ConfigError(ValueError):
    """A user mistake in the configuration; its message is one line meant for the user."""



def fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is out of range: {allowed}")


def positive(key: str, value: Optional[float], optional: bool = False) -> None:
    """`value` must be a finite number > 0 (or None, if `optional`)."""
    if value is None and optional:
        return
    if value is None or not value > 0 or (isinstance(value, float) and math.isinf(value)):
        fail(key, value, "must be a positive number" + (" or null" if optional else ""))


def at_least(key: str, value: float, low: float) -> None:
    if not value >= low:
        fail(key, value, f"must be >= {low:g}")


def at_most(key: str, value: Optional[float], high: int, why: str) -> None:
    """`value` (None passes) must be <= `high`, a bound that `why` explains."""
    if value is not None and value > high:
        fail(key, value, f"must be <= {high:,} ({why})")


def within(key: str, value: float, low: float, high: float, open_low: bool = False) -> None:
    """`value` must lie in [low, high] (or (low, high] with `open_low`)."""
    inside = (low < value if open_low else low <= value) and value <= high
    if not inside:
        fail(key, value, f"must be in {'(' if open_low else '['}{low:g}, {high:g}]")


def choice(key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        fail(key, value, f"must be one of {', '.join(map(str, allowed))}")
