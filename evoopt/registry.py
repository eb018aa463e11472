"""The table of optimizers by name: the CLI, ``compare`` and the tests read it.

Population optimizers register themselves with :func:`register`; torch's gradient
optimizers are listed under their usual lower-case names so that one name space
covers both families (``evoopt list`` prints it).
"""

from __future__ import annotations

import torch

__all__ = ["OPTIMIZERS", "register", "population_optimizers", "get_optimizer"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "lbfgs": torch.optim.LBFGS,
}


def register(name: str):
    """Class decorator: add an optimizer to :data:`OPTIMIZERS` under ``name``."""

    def deco(cls):
        if name in OPTIMIZERS and OPTIMIZERS[name] is not cls:
            raise ValueError(f"optimizer name {name!r} is already registered to {OPTIMIZERS[name]}")
        OPTIMIZERS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def population_optimizers() -> dict[str, type]:
    """The registered optimizers that are :class:`~evoopt.PopulationOptimizer` subclasses."""
    from .population import PopulationOptimizer

    return {k: v for k, v in OPTIMIZERS.items() if issubclass(v, PopulationOptimizer)}


def get_optimizer(name: str) -> type[torch.optim.Optimizer]:
    """Look up an optimizer class by name; the error lists the valid names."""
    try:
        return OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown optimizer {name!r} (expected one of: {', '.join(sorted(OPTIMIZERS))})"
        ) from None
