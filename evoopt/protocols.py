"""The protocols that optimizers and objectives meet across modules, declared once.

Each is a :class:`typing.Protocol` marked ``runtime_checkable``, so callers test for it
with ``isinstance`` (``issubclass`` for the method-only ones) instead of ``hasattr`` on a
name spelled in several places. ``isinstance`` checks that the members exist, not their
signatures: the docstrings are the contract.

Optimizers:

- :class:`KLAware` -- a step size driven by the measured KL divergence of the policy's
  last update (:class:`evoopt.gradient.KLAdaptive`): PPO and REINFORCE report it after
  every optimizer step, and ``rl`` does not anneal the learning rate of such an optimizer.
- :class:`SearchesPopulation` -- ``popsize`` and ``maximize``: what a checkpoint header
  records to tell whether a saved run fits (every :class:`evoopt.PopulationOptimizer`).
- :class:`Stoppable` -- ``stopped``: why the optimizer has stopped for good (CMA-ES after
  pycma's termination criteria); an empty value while it runs on.

Objectives evaluated on Ray actors (:class:`evoopt.distributed.RayEvaluator`), each
optional:

- :class:`RowObjective` -- ``evaluate_rows(rows, member_indices, generation)``;
- :class:`AcceptsStats` -- ``set_stats(state)``: install the driver's shared state;
- :class:`ReportsStats` -- ``get_stats()``: the statistics gathered while evaluating.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["AcceptsStats", "KLAware", "ReportsStats", "RowObjective", "SearchesPopulation",
           "Stoppable"]


@runtime_checkable
class KLAware(Protocol):
    """An optimizer whose learning rate follows a KL target."""

    def update_kl(self, kl: float) -> float:
        """Adapt the learning rate from the KL divergence ``kl`` between the policy before
        and after the last step; returns the new learning rate (of the first group)."""


@runtime_checkable
class SearchesPopulation(Protocol):
    """An optimizer that evaluates ``popsize`` members per step."""

    popsize: int
    maximize: bool


@runtime_checkable
class Stoppable(Protocol):
    """An optimizer that can stop for good before its budget is spent.

    ``stopped`` is a mapping (or a callable returning one) from the name of each
    termination criterion that fired to its value; empty (or None) while it runs on."""

    stopped: Any


@runtime_checkable
class RowObjective(Protocol):
    """An objective evaluated from a chunk of population rows."""

    def evaluate_rows(self, rows, member_indices, generation: int) -> Any:
        """``rows``: ``[m, D]``; ``member_indices``: ``[m]`` int64, each row's index in the
        population; returns ``[m]`` losses, or ``([m] losses, info)``."""


@runtime_checkable
class AcceptsStats(Protocol):
    """An objective that takes shared state (e.g. an observation normaliser) from the
    driver before it evaluates."""

    def set_stats(self, state: Any) -> None: ...


@runtime_checkable
class ReportsStats(Protocol):
    """An objective that reports the statistics it gathered while evaluating (a delta)."""

    def get_stats(self) -> Any: ...
