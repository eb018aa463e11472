"""Who runs in a comparison: optimizer specs (``"pgpe:lr=0.2:popsize=64"``), aliases and
the constructor arguments of one run (generic defaults, the task's table, the user's)."""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checks import check_kwargs
from ..population import PopulationOptimizer
from ..registry import OPTIMIZERS
from ..tasks import Task

__all__ = [
    "ALIASES",
    "GENERIC_HYPERPARAMETERS",
    "OptimizerSpec",
    "check_kwargs",
    "parse_optimizer",
    "parse_value",
    "resolve_hyperparameters",
]


#: Names that stand for a registered optimizer with fixed extra arguments.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd-momentum": ("sgd", {"momentum": 0.9}),
    "sgd-nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
}

#: Constructor arguments used on every task unless the task or the user says otherwise.
#: (torch's SGD has no default lr; the others use the algorithms' own defaults.)
GENERIC_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.01},
}


# ----------------------------------------------------------------- optimizer specs
@dataclass(frozen=True)
class OptimizerSpec:
    """One contestant: ``label`` (shown in tables), the registry ``name`` and the
    constructor arguments given by the user (task defaults are added at run time)."""

    label: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def cls(self) -> type:
        return OPTIMIZERS[self.name]

    @property
    def family(self) -> str:
        return "population" if issubclass(self.cls, PopulationOptimizer) else "gradient"


def parse_value(text: str):
    """A Python literal (``"0.2"`` -> 0.2, ``"True"``, ``"'sgd'"``, ``"(1, 2)"``), else the
    text itself (``"adam"``): the values of ``name:key=value`` specs."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_optimizer(spec) -> OptimizerSpec:
    """An :class:`OptimizerSpec` from ``"adam"``, ``"pgpe:lr=0.2:popsize=64"``,
    ``("adam", {"lr": 1e-3})`` or an :class:`OptimizerSpec`.

    Aliases (:data:`ALIASES`, e.g. ``"sgd-momentum"``) expand to a registered name with
    fixed arguments. Unknown names raise ``ValueError`` listing the valid ones.
    """
    if isinstance(spec, OptimizerSpec):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict):
        label, kwargs = spec[0], dict(spec[1])
        if not isinstance(label, str):
            raise ValueError(f"Invalid optimizer: {spec!r} (expected (name, kwargs))")
        base = label
    elif isinstance(spec, str):
        base, *items = [s.strip() for s in spec.split(":")]
        kwargs = {}
        for item in items:
            key, eq, value = item.partition("=")
            if not eq or not key.isidentifier():
                raise ValueError(
                    f"Invalid optimizer spec {spec!r}: {item!r} is not key=value "
                    "(expected e.g. 'pgpe:lr=0.2:popsize=64')")
            kwargs[key] = parse_value(value)
        label = spec if items else base
    else:
        raise ValueError(
            f"Invalid optimizer: {spec!r} (expected a name such as 'adam', "
            "'name:key=value', a (name, kwargs) tuple or an OptimizerSpec)")
    key = base.lower()
    if key in ALIASES:
        name, fixed = ALIASES[key]
        kwargs = {**fixed, **kwargs}
    elif key in OPTIMIZERS:
        name = key
    else:
        valid = sorted(set(OPTIMIZERS) | set(ALIASES))
        raise ValueError(f"Unknown optimizer {base!r} (expected one of: {', '.join(valid)})")
    return OptimizerSpec(label=label, name=name, kwargs=kwargs)


def resolve_hyperparameters(spec: OptimizerSpec, task: Task, model: torch.nn.Module,
                            seed: int) -> dict[str, Any]:
    """The constructor arguments of one run: generic defaults, then the task's table
    (looked up by alias first, then by registry name), then the user's, then ``seed``
    for optimizers that take one. A value may be a callable of ``D`` (number of
    parameters), e.g. ``{"diagonal": lambda D: D > 200}``, except for arguments whose
    default is itself callable (an inner ``optimizer`` class or factory), which get the
    callable."""
    base = spec.label.split(":")[0].lower()
    table = task.hyperparameters
    kw = dict(GENERIC_HYPERPARAMETERS.get(spec.name, {}))
    kw.update(table.get(spec.name, {}))
    if base != spec.name:
        kw.update(table.get(base, {}))
    kw.update(spec.kwargs)
    D = sum(p.numel() for p in model.parameters())
    params = inspect.signature(spec.cls.__init__).parameters

    def takes_callable(k) -> bool:  # e.g. optimizer=torch.optim.Adam: a factory, not f(D)
        return k in params and callable(params[k].default)

    def value(k, v):
        return v(D) if callable(v) and not isinstance(v, type) and not takes_callable(k) else v

    kw = {k: value(k, v) for k, v in kw.items()}
    if "seed" in params and "seed" not in kw:
        kw["seed"] = int(seed)
    check_kwargs(f"hyperparameters for {spec.label!r}", spec.cls, kw)
    return kw

