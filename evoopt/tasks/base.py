"""The :class:`Task` protocol: one benchmark problem that gradient optimizers and
population optimizers can both train on, with the same model initialisation per seed.

A task gives

- ``make_model(seed)``: a fresh ``nn.Module``; the same seed gives the same initial
  parameters (drawn from a private generator, never the global RNGs);
- ``loss(model)``: the training loss of the model as it is now (0-dim tensor, with a
  graph when gradients are enabled and the loss is differentiable);
- ``closure(model, opt)``: the torch-style zero-argument closure that
  ``opt.step(closure)`` expects (gradient optimizers, LBFGS included);
- ``population_objective(model)``: ``objective(pop) -> Tensor[P]``, the training loss
  of every member of a population in one batched call (``opt.step(objective)``); the
  default loops over the members with ``loss``, so a task needs only ``make_model`` and
  ``loss``;
- ``metrics(model)``: held-out numbers (e.g. ``test_accuracy``) as a dict of floats;
- ``differentiable``: whether the training loss has a useful gradient;
- ``default_budget_evals``: the evaluation budget ``compare`` uses when none is given.

**One evaluation** is one computation of the training loss on the whole training set
for one parameter vector: a closure call for a gradient method (forward and
backward), one member of a generation for a population method.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["Task", "build_uninitialized", "init_uniform_", "params_hash"]


def build_uninitialized(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` built on the meta device and moved to CPU memory without
    initialisation: module constructors (``nn.Linear``...) then draw nothing from the
    global RNG. Follow with :func:`init_uniform_`."""
    with torch.device("meta"):
        model = factory()
    return model.to_empty(device="cpu")


def init_uniform_(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter of ``model`` from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    (torch's default for ``nn.Linear``) with a private generator seeded by ``seed``.

    A parameter's ``fan_in`` is the size of its last dimension for matrices; biases use
    the fan-in of the weight that precedes them in ``model.parameters()``."""
    gen = torch.Generator().manual_seed(int(seed))
    fan_in = 1
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
            bound = 1.0 / fan_in**0.5
            p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) * (2 * bound) - bound)
    return model


def params_hash(model: nn.Module) -> str:
    """A short SHA-256 of the model's parameter values (to check identical inits)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Task:
    """Base class of the benchmark tasks; see the module docstring for the protocol.

    Class attributes a subclass sets:
        name: the registry name (``evoopt list`` prints it).
        differentiable: ``False`` when the training loss is piecewise constant (its
            gradient is zero almost everywhere).
        default_budget_evals: evaluations per run when ``compare`` gets no budget.
        metric: the key of :meth:`metrics` that ranks optimizers in the comparison
            (``None``: rank by final training loss); ``metric_higher_is_better``.
        hyperparameters: per-optimizer constructor arguments tuned for this task (the
            comparison's defaults; ``compare`` fills in generic ones for the rest).
        evaluation_unit: what one evaluation is, in words (the comparison prints it).
        acceptance: what the comparison checks and reports, e.g.
            ``{"gradient_min": 0.95, "population_min": 0.90}`` (the best optimizer of
            each family reaches that ``metric``) or ``{"population_beats_gradient": True}``.
    """

    name: str = "task"
    differentiable: bool = True
    default_budget_evals: int = 1000
    metric: str | None = None
    metric_higher_is_better: bool = True
    hyperparameters: ClassVar[dict[str, dict[str, Any]]] = {}
    acceptance: ClassVar[dict[str, Any]] = {}
    evaluation_unit: str = "the training loss of one parameter vector on the whole training set"

    # ----------------------------------------------------------------- protocol
    def make_model(self, seed: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, model: nn.Module) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def population_objective(self, model: nn.Module) -> Callable:
        """``objective(pop) -> Tensor[P]``: the training loss of every member.

        This default loads each member into ``model`` in turn and calls :meth:`loss` (P
        calls, then the model's parameters are put back); a task overrides it with one
        batched call (``vmap_objective``, a vectorised test function...)."""
        from ..population import ParamLayout

        layout = ParamLayout(list(model.parameters()))

        @torch.no_grad()
        def objective(pop) -> Tensor:
            saved = layout.flatten().clone()
            try:
                losses = []
                for row in pop.flat:
                    layout.load_(row)
                    losses.append(self.loss(model).detach().reshape(()))
            finally:
                layout.load_(saved)
            return torch.stack(losses)

        objective.is_population_objective = True
        return objective

    def metrics(self, model: nn.Module) -> dict[str, float]:
        return {}

    def closure(self, model: nn.Module, opt: torch.optim.Optimizer) -> Callable[[], Tensor]:
        """The zero-argument closure for ``opt.step``.

        With gradients enabled it back-propagates the loss. A loss without a graph (a
        0-1 error computed through ``argmax``) has a gradient that is zero almost
        everywhere; the closure then writes that zero gradient into every parameter's
        ``.grad`` explicitly, so Adam, SGD and LBFGS run (and make no progress) instead
        of crashing. Population optimizers call it under ``torch.no_grad()``.
        """

        def closure() -> Tensor:
            opt.zero_grad()
            loss = self.loss(model)
            if torch.is_grad_enabled():
                if loss.requires_grad:
                    loss.backward()
                else:
                    for p in model.parameters():
                        p.grad = torch.zeros_like(p)
            return loss

        return closure

    def describe(self) -> str:
        """One line for ``evoopt list``."""
        doc = (type(self).__doc__ or "").strip().splitlines()
        return doc[0] if doc else self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
