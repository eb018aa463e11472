"""Public argument checks, shared by every optimizer, task and the ``rl`` package.

Each check returns the value (converted: ``float``, ``int``) or raises ``ValueError``
naming the argument, the value and the constraint, in torch's style::

    >>> check_positive("lr", -1.0)
    Traceback (most recent call last):
    ...
    ValueError: Invalid lr: -1.0 (expected a finite number > 0)

- :func:`check_positive` -- a finite number > 0 (>= 0 with ``allow_zero``);
- :func:`check_range` -- a finite number in ``[low, high]`` (either end open);
- :func:`check_int` -- an integer >= ``minimum`` (optionally even); ``bool`` is refused;
- :func:`check_choice` -- one of a set of values;
- :func:`check_kwargs` -- keyword arguments that a callable (or a class's constructor)
  accepts, e.g. the options of an optimizer named on a command line.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Iterable

__all__ = [
    "check_choice", "check_int", "check_kwargs", "check_lr_sigma", "check_positive", "check_range",
]


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


def check_lr_sigma(group: dict, *, initial: bool) -> None:
    """A param group's ``lr`` > 0 as given (``initial``), >= 0 once running (a schedule may
    anneal it to 0), and ``sigma`` > 0: the check of most population optimizers."""
    check_positive("lr", group["lr"], allow_zero=not initial)
    check_positive("sigma", group["sigma"])


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


def check_choice(name: str, value, choices):
    """Return ``value`` or raise if it is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {sorted(choices)})")
    return value


def check_kwargs(what: str, fn, kwargs, *, taken: Iterable[str] = ("self", "params")) -> None:
    """Raise ``ValueError`` naming the keys of ``kwargs`` that the callable ``fn`` (a class:
    its constructor) does not accept, and listing those it does (less ``taken``: the
    arguments the caller passes itself). A callable with ``**kwargs`` accepts anything."""
    params = inspect.signature(fn.__init__ if isinstance(fn, type) else fn).parameters
    taken = set(taken)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params or k in taken]
    if unknown:
        valid = [k for k, p in params.items() if k not in taken and p.kind is not p.VAR_POSITIONAL]
        raise ValueError(f"Invalid {what}: {unknown} (expected some of: {', '.join(valid)})")
