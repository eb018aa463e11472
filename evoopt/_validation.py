"""Argument checks shared by every optimizer: errors name the argument, the value and
the constraint, in torch's style (``Invalid lr: -1.0 (expected > 0)``)."""

from __future__ import annotations

import math
import numbers


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``float(value)`` or raise ``ValueError`` if it is not a finite number > 0
    (>= 0 with ``allow_zero``)."""
    ok = _is_real(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Invalid {name}: {value!r} (expected a finite number {expected})")
    return float(value)


def check_range(name: str, value, low: float, high: float, *, low_open=False, high_open=False):
    """Return ``float(value)`` or raise if it is outside the interval low..high."""
    ok = _is_real(value) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"Invalid {name}: {value!r} (expected a number in {interval})")
    return float(value)


def check_int(name: str, value, *, minimum: int = 1, even: bool = False, why: str = "") -> int:
    """Return ``int(value)`` or raise if it is not an integer >= minimum (and even)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
    if ok and even and value % 2:
        raise ValueError(
            f"Invalid {name}: {value!r} (expected an even integer{', ' + why if why else ''})"
        )
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= {minimum})")
    return int(value)


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {sorted(choices)})")
    return value
