"""What every ``evoopt`` subcommand shares: :class:`UsageError` and the argparse value
types. :mod:`evoopt.cli` and the subcommands other packages register (``rl.cli``) import
this module, never each other.

A value type raises ``argparse.ArgumentTypeError`` naming the value and what was
expected; argparse turns it into a usage error (exit code 2).
"""

from __future__ import annotations

import argparse

__all__ = ["UsageError", "non_negative_int", "positive_float", "positive_int", "seed_list"]


class UsageError(Exception):
    """A bad command line: reported with the command's name, exit code 2."""


def _int(text: str, expected: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (expected {expected})") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (expected {expected})")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int(text, "an integer >= 1", 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a seed)."""
    return _int(text, "an integer >= 0", 0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r} (expected a number > 0)") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r} (expected a finite number > 0)")
    return value


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` or a range ``"0-4"`` (inclusive)."""
    try:
        if "-" in text and "," not in text:
            a, b = (int(x) for x in text.split("-", 1))
            seeds = list(range(a, b + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r} (expected integers >= 0: '0,1,2' or a range '0-4')")
    return seeds
