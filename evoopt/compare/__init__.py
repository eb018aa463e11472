"""Side-by-side runs of gradient and population optimizers on one :class:`~evoopt.tasks.Task`.

``compare(task, optimizers, seeds)`` trains every optimizer on every seed, each run on
its own fresh model from ``task.make_model(seed)`` -- so all optimizers start from the
same parameters and see the same data for a given seed -- under the same budget, and
returns a :class:`Comparison` holding every curve; :meth:`Comparison.save` writes CSV,
JSON and PNG plots, :meth:`Comparison.table` the terminal summary.

One module per job: :mod:`~evoopt.compare.specs` (who runs: optimizer specs, aliases, the
hyperparameters of one run), :mod:`~evoopt.compare.running` (the run loop and the
budgets, one stepper per kind of optimizer) and :mod:`~evoopt.compare.reporting`
(:class:`Run`, :class:`Comparison`: summaries, table, CSV/JSON, plots).

Evaluation accounting (one *evaluation* = the training loss of one parameter vector on
the whole training set):

- a gradient optimizer spends one evaluation per closure call (forward + backward);
  LBFGS is charged for every internal closure call of its line search and its
  ``max_eval`` is capped by what is left of the budget, so it never overspends;
- a population optimizer spends ``popsize`` evaluations per generation (one per member,
  evaluated in one batched call); a generation that does not fit in what is left of
  the budget is not started, so a run gets ``floor(budget / popsize)`` generations.

A wall-time budget (``budget_seconds``) counts the time spent inside ``opt.step`` only;
it is checked between steps, so a run can overrun by at most one step. With both
budgets a run stops at whichever comes first.

The curves are measured outside the budget and outside the timed region: at about
``num_points`` points per run, the training loss of the model's current parameters (the
distribution's center for a population optimizer) and the task's metric are recorded,
so every optimizer is measured the same way. Final numbers are those of the model at
the end of the run.
"""

from .reporting import Check, Comparison, Run
from .running import compare, stop_reasons
from .specs import (
    ALIASES,
    GENERIC_HYPERPARAMETERS,
    OptimizerSpec,
    check_kwargs,
    parse_optimizer,
    parse_value,
    resolve_hyperparameters,
)

__all__ = [
    "ALIASES",
    "GENERIC_HYPERPARAMETERS",
    "Check",
    "Comparison",
    "OptimizerSpec",
    "Run",
    "compare",
    "check_kwargs",
    "parse_optimizer",
    "parse_value",
    "resolve_hyperparameters",
    "stop_reasons",
]
