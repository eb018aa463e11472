r"""Schedulers for the search width ``sigma``, as ``torch.optim.lr_scheduler`` drives ``lr``.

Every evoopt population optimizer reads ``sigma`` from its param groups at each
generation, so a schedule is a few writes into the groups. These schedulers follow
torch's conventions: built on the optimizer, ``step()`` once per generation after
``opt.step()`` (or ``tell``), the group's starting value kept in the group as
``initial_sigma`` (like ``initial_lr``), ``get_last_sigma()``, and
``state_dict()`` / ``load_state_dict()`` for exact resume. They compose with any lr
scheduler on the same optimizer::

    opt = evoopt.OpenAIES(model.parameters(), lr=0.3, sigma=0.5)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    sigma_schedule = evoopt.schedulers.ExponentialSigma(opt, gamma=0.985)
    for _ in range(300):
        opt.step(objective)
        lr_schedule.step()
        sigma_schedule.step()

After ``t`` calls of ``step()`` each group's ``sigma`` is ``initial_sigma * factor(t)``:

- :class:`LambdaSigma`: ``factor(t) = fn(t)`` (any schedule; ``fn`` is not saved);
- :class:`StepSigma`: ``gamma ** (t // step_size)``;
- :class:`ExponentialSigma`: ``gamma ** t``;
- :class:`CosineAnnealingSigma`: ``sigma = eta_min + (initial_sigma - eta_min) *
  (1 + cos(pi * min(t, T_max) / T_max)) / 2`` (Loshchilov & Hutter 2017, SGDR, without
  restarts; it stays at ``eta_min`` after ``T_max``).

What a new ``sigma`` means depends on the algorithm: OpenAI-ES and ARS sample with it
directly; algorithms that adapt their width (PGPE, SNES, xNES, CEM, CMA-ES) rescale what
they learned by ``new / old`` (see each one's docstring), so a schedule multiplies the
adapted width. ``optimizer.current_sigma`` reports the width the next generation uses.

Resume: build the scheduler before ``opt.load_state_dict`` (it only adds
``initial_sigma`` where a group lacks it), then ``sched.load_state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer

from .checks import check_int, check_positive

__all__ = [
    "SigmaScheduler",
    "LambdaSigma",
    "StepSigma",
    "ExponentialSigma",
    "CosineAnnealingSigma",
]


class SigmaScheduler:
    """Base class: sets every group's ``sigma`` to ``self.get_sigma(initial_sigma, t)`` at
    each :meth:`step`, ``t`` being the number of steps taken (``last_epoch``)."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise ValueError(
                f"Invalid optimizer: {type(optimizer).__name__} (expected a torch.optim.Optimizer)"
            )
        for i, g in enumerate(optimizer.param_groups):
            if "sigma" not in g:
                raise ValueError(
                    f"Invalid optimizer: param group {i} of {type(optimizer).__name__} has no "
                    "'sigma' (expected an evoopt population optimizer)"
                )
            check_positive(f"sigma of param group {i}", g["sigma"])
            g.setdefault("initial_sigma", g["sigma"])
        self.optimizer = optimizer
        self.last_epoch = 0

    def get_sigma(self, initial: float, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        """Advance one generation and write the new ``sigma`` into every group."""
        t = self.last_epoch + 1
        for g in self.optimizer.param_groups:  # a group loaded from a checkpoint saved
            g.setdefault("initial_sigma", g["sigma"])  # without a scheduler starts from now
        new = [self.get_sigma(g["initial_sigma"], t) for g in self.optimizer.param_groups]
        for i, s in enumerate(new):  # all checked before any group changes
            check_positive(f"sigma of param group {i} at step {t}", s)
        for g, s in zip(self.optimizer.param_groups, new):
            g["sigma"] = float(s)
        self.last_epoch = t

    def get_last_sigma(self) -> list[float]:
        """The groups' ``sigma`` as last written (or as they were when built)."""
        return [g["sigma"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only (``torch.load(weights_only=True)`` reads them); the
        ``initial_sigma`` values live in the optimizer's param groups."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and not callable(v)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        name = type(self).__name__
        mine = self.state_dict()
        if not isinstance(state_dict, dict) or set(state_dict) != set(mine):
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"{name}.load_state_dict: expected the keys {sorted(mine)}, got {got}"
            )
        check_int(f"{name}.load_state_dict: last_epoch", state_dict["last_epoch"], minimum=0)
        self.__dict__.update(state_dict)


class LambdaSigma(SigmaScheduler):
    """``sigma = initial_sigma * fn(t)``, like ``LambdaLR`` (``fn`` is not saved in the
    state_dict: pass the same function when resuming)."""

    def __init__(self, optimizer: Optimizer, fn: Callable[[int], float]):
        if not callable(fn):
            raise ValueError(f"Invalid fn: {fn!r} (expected a callable t -> factor)")
        super().__init__(optimizer)
        self.fn = fn

    def get_sigma(self, initial: float, t: int) -> float:
        return initial * self.fn(t)


class StepSigma(SigmaScheduler):
    """``sigma = initial_sigma * gamma ** (t // step_size)``, like ``StepLR``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = check_int("step_size", step_size, minimum=1)
        self.gamma = check_positive("gamma", gamma)
        super().__init__(optimizer)

    def get_sigma(self, initial: float, t: int) -> float:
        return initial * self.gamma ** (t // self.step_size)


class ExponentialSigma(SigmaScheduler):
    """``sigma = initial_sigma * gamma ** t``, like ``ExponentialLR``."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.gamma = check_positive("gamma", gamma)
        super().__init__(optimizer)

    def get_sigma(self, initial: float, t: int) -> float:
        return initial * self.gamma**t


class CosineAnnealingSigma(SigmaScheduler):
    r"""``sigma = eta_min + (initial_sigma - eta_min) * (1 + cos(pi * min(t, T_max) /
    T_max)) / 2``, like ``CosineAnnealingLR`` (Loshchilov & Hutter 2017) without restarts.
    ``eta_min`` must be > 0: a search width of zero samples nothing but the center."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 1e-3):  # noqa: N803
        self.T_max = check_int("T_max", T_max, minimum=1)
        self.eta_min = check_positive("eta_min", eta_min)
        super().__init__(optimizer)

    def get_sigma(self, initial: float, t: int) -> float:
        t = min(t, self.T_max)
        cosine = (1 + math.cos(math.pi * t / self.T_max)) / 2
        return self.eta_min + (initial - self.eta_min) * cosine
