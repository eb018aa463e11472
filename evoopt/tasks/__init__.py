"""Benchmark tasks for gradient and population optimizers alike (see :class:`Task`).

``get_task("digits")``, ``get_task("rastrigin", dim=30)``; :data:`TASKS` maps every
name to its factory (``evoopt list`` prints them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .base import Task, init_uniform_, params_hash
from .charlm import CharLM
from .digits import Digits, Digits01, QuantizedDigits, TernaryMLP, load_digits_split
from .functions import FUNCTIONS, FunctionTask, VectorModel
from .line import LineRegression

__all__ = [
    "FUNCTIONS",
    "TASKS",
    "CharLM",
    "Digits",
    "Digits01",
    "FunctionTask",
    "LineRegression",
    "QuantizedDigits",
    "Task",
    "TernaryMLP",
    "VectorModel",
    "get_task",
    "init_uniform_",
    "load_digits_split",
    "params_hash",
]

TASKS: dict[str, Callable[..., Task]] = {
    "line": LineRegression,
    "digits": Digits,
    "digits01": Digits01,
    "quantized": QuantizedDigits,
    "charlm": CharLM,
    **{name: functools.partial(FunctionTask, name) for name in FUNCTIONS},
}


def get_task(name: str | Task, **kwargs) -> Task:
    """Build a task by name (keyword arguments go to its constructor); a
    :class:`Task` instance is returned as it is. Unknown names raise ``ValueError``
    listing the valid ones."""
    if isinstance(name, Task):
        if kwargs:
            raise ValueError(f"Invalid kwargs: {sorted(kwargs)} (a Task instance takes no options)")
        return name
    if not isinstance(name, str) or name.lower() not in TASKS:
        raise ValueError(f"Unknown task {name!r} (expected one of: {', '.join(TASKS)})")
    try:
        return TASKS[name.lower()](**kwargs)
    except TypeError as e:
        raise ValueError(f"Invalid options for task {name!r}: {e}") from None
