"""Running a comparison: every optimizer on every seed under one budget.

The run loop knows two things about an optimizer: how many evaluations a step needs at
least, and how many it spent. A *stepper* answers both and runs the step:

- :class:`PopulationSteps`: ``popsize`` evaluations per generation, counted by the
  optimizer (``opt.num_evals``), all members in one batched call;
- :class:`ClosureSteps`: a gradient optimizer, one evaluation per closure call; a call
  past the budget is refused (the step ends there);
- :class:`LineSearchSteps`: LBFGS, several closure calls per step: ``max_eval`` and
  ``max_iter`` are capped by what is left of the budget before each step, and when its
  line search asks for more than that anyway, the parameters of the last evaluated point
  are restored.

:func:`stepper_for` picks one; the loop (:func:`run_one`) is the same for all.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from ..checks import check_choice, check_int, check_positive
from ..population import PopulationOptimizer
from ..protocols import Stoppable
from ..tasks import Task, get_task, params_hash
from .reporting import Comparison, Run
from .specs import OptimizerSpec, parse_optimizer, resolve_hyperparameters

__all__ = ["ClosureSteps", "LineSearchSteps", "PopulationSteps", "compare", "run_one",
           "stepper_for", "stop_reasons"]


def stop_reasons(opt) -> dict[str, Any]:
    """Why ``opt`` has stopped for good (``opt.stopped``, e.g. CMA-ES after pycma's
    termination criteria) as plain values; empty while it runs on, and for optimizers
    without the attribute (torch's)."""
    if not isinstance(opt, Stoppable):
        return {}
    stopped = opt.stopped
    if callable(stopped):
        stopped = stopped()
    return {str(k): (v if isinstance(v, (int, float, str, bool)) else repr(v))
            for k, v in dict(stopped or {}).items()}


class Progress:
    """A tqdm bar over the total budget of all runs (evaluations, or seconds), or nothing."""

    def __init__(self, enabled: bool, total: float, unit: str):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                return
            self.bar = tqdm(total=total, unit=unit, file=sys.stderr, leave=False,
                            dynamic_ncols=True, mininterval=0.2)

    @property
    def n(self) -> float:
        return self.bar.n if self.bar is not None else 0

    def update(self, n: float) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------- steppers
class BudgetExhausted(Exception):
    """Raised by the counting closure when a step asks for more evaluations than are left."""


class PopulationSteps:
    """A population optimizer: one generation per step, ``popsize`` evaluations of the
    task's batched population objective. A NaN loss is ranked worst by the optimizer, so a
    run does not diverge."""

    checks_divergence = False

    def __init__(self, opt: PopulationOptimizer, task: Task, model: torch.nn.Module):
        self.opt = opt
        self.objective = task.population_objective(model)

    def min_evals(self) -> int:
        return self.opt.popsize  # read at every step: a restart may change it

    def step(self, left: int | None) -> tuple[Any, int, bool]:
        """One generation: ``(loss, evaluations spent, budget hit)``."""
        before = self.opt.num_evals
        loss = self.opt.step(self.objective)
        return loss, self.opt.num_evals - before, False


class ClosureSteps:
    """A gradient optimizer: each closure call is one evaluation (forward + backward) and
    is refused once the step's share of the budget (``left``) is spent."""

    checks_divergence = True

    def __init__(self, opt: torch.optim.Optimizer, task: Task, model: torch.nn.Module):
        self.opt = opt
        self.params = list(model.parameters())
        self.closure = task.closure(model, opt)
        self.count = 0  # closure calls so far
        self.left = math.inf  # calls left in this step

    def min_evals(self) -> int:
        return 1

    def _objective(self):
        if self.left <= 0:
            raise BudgetExhausted
        self.left -= 1
        self.count += 1
        self._before_call()
        return self.closure()

    def _before_call(self) -> None:
        """Called before each evaluation (a hook for :class:`LineSearchSteps`)."""

    def _restore(self) -> None:
        """Called when a step was cut short by the budget."""

    def step(self, left: int | None) -> tuple[Any, int, bool]:
        """One ``opt.step`` with at most ``left`` evaluations (None: no limit):
        ``(loss, evaluations spent, budget hit)``."""
        before = self.count
        if left is not None:
            self.left = left
        try:
            loss = self.opt.step(self._objective)
        except BudgetExhausted:
            self._restore()
            return torch.tensor(0.0), self.count - before, True
        return loss, self.count - before, False


class LineSearchSteps(ClosureSteps):
    """LBFGS: ``max_eval`` (and ``max_iter``) of each group are capped by what is left of
    the budget before every step, from the values it was built with. A line search
    (``line_search_fn="strong_wolfe"``) can still ask for more: that call is refused and
    the parameters of the last evaluated point are restored, where the run ends."""

    def __init__(self, opt: torch.optim.LBFGS, task: Task, model: torch.nn.Module):
        super().__init__(opt, task, model)
        self.caps = [(g["max_iter"], g["max_eval"]) for g in opt.param_groups]
        self.snapshot: list[torch.Tensor] = []

    def step(self, left: int | None) -> tuple[Any, int, bool]:
        if left is not None:
            for g, (max_iter, max_eval) in zip(self.opt.param_groups, self.caps):
                g["max_eval"] = max(1, min(max_eval, left))
                g["max_iter"] = max(1, min(max_iter, g["max_eval"]))
        return super().step(left)

    def _before_call(self) -> None:
        self.snapshot = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def _restore(self) -> None:
        for p, v in zip(self.params, self.snapshot):
            p.copy_(v)


def stepper_for(opt, task: Task, model: torch.nn.Module):
    """The stepper of ``opt``: by its kind, never by its registry name."""
    if isinstance(opt, PopulationOptimizer):
        return PopulationSteps(opt, task, model)
    if isinstance(opt, torch.optim.LBFGS):
        return LineSearchSteps(opt, task, model)
    return ClosureSteps(opt, task, model)


# ------------------------------------------------------------------------ one run
class _Curve:
    """Records the training loss and the metric of the model at about ``num_points``
    evenly spaced points of the budget (outside the timed region)."""

    def __init__(self, task: Task, model, run: Run, budget_evals, budget_seconds,
                 num_points: int):
        self.task, self.model, self.run = task, model, run
        self.every_evals = budget_evals / num_points if budget_evals else math.inf
        self.every_seconds = budget_seconds / num_points if budget_seconds else math.inf
        self.next_evals, self.next_seconds = self.every_evals, self.every_seconds

    def record(self) -> None:
        run, metric = self.run, self.task.metric
        with torch.no_grad():
            loss = float(self.task.loss(self.model))
        run.evals.append(run.num_evals)
        run.seconds.append(run.wall_time)
        run.losses.append(loss)
        run.metric_values.append(
            self.task.metrics(self.model).get(metric, math.nan) if metric else math.nan)

    def maybe_record(self) -> None:
        run = self.run
        if run.num_evals >= self.next_evals or run.wall_time >= self.next_seconds:
            self.record()
            while self.next_evals <= run.num_evals:
                self.next_evals += self.every_evals
            while self.next_seconds <= run.wall_time:
                self.next_seconds += self.every_seconds

    def finish(self) -> None:
        run = self.run
        if run.evals[-1] != run.num_evals or run.seconds[-1] != run.wall_time:
            self.record()
        run.final_loss = run.losses[-1]
        run.metrics = self.task.metrics(self.model)


def _start(task: Task, spec: OptimizerSpec, seed: int):
    """A fresh model and optimizer for one run, and its :class:`Run` record."""
    model = task.make_model(seed)
    with torch.no_grad():
        init_loss = float(task.loss(model))
    kw = resolve_hyperparameters(spec, task, model, seed)
    plain = (int, float, str, bool, type(None))
    run = Run(optimizer=spec.label, name=spec.name, family=spec.family, seed=seed,
              hyperparameters={k: (v if isinstance(v, plain) else repr(v)) for k, v in kw.items()},
              init_hash=params_hash(model), init_loss=init_loss)
    return model, spec.cls(model.parameters(), **kw), run


def run_one(task: Task, spec: OptimizerSpec, seed: int, budget_evals: int | None,
            budget_seconds: float | None, num_points: int, progress: Progress,
            by_time: bool) -> Run:
    """One optimizer on one seed until the budget is spent, the loss diverges (gradient
    optimizers) or the optimizer stops for good."""
    model, opt, run = _start(task, spec, seed)
    steps = stepper_for(opt, task, model)
    curve = _Curve(task, model, run, budget_evals, budget_seconds, num_points)
    curve.record()
    while True:
        if budget_evals is not None and run.num_evals + steps.min_evals() > budget_evals:
            break
        if budget_seconds is not None and run.wall_time >= budget_seconds:
            break
        left = None if budget_evals is None else budget_evals - run.num_evals
        t0 = time.perf_counter()
        loss, spent, budget_hit = steps.step(left)
        dt = time.perf_counter() - t0
        run.wall_time += dt
        run.num_evals += spent
        run.num_steps += 1
        progress.update(dt if by_time else spent)
        if budget_hit:
            break
        if steps.checks_divergence and not math.isfinite(float(torch.as_tensor(loss).detach())):
            run.status = "diverged"
            break
        run.stopped = stop_reasons(opt)  # e.g. CMA-ES after pycma's stop criteria
        if run.stopped:
            break
        curve.maybe_record()
    curve.finish()
    return run


# ---------------------------------------------------------------------- compare
def _check_constructors(task: Task, specs: list[OptimizerSpec], seed: int) -> None:
    """Build every optimizer once on a throwaway model, so that bad names or values of
    hyperparameters raise ``ValueError`` before any run starts."""
    for spec in specs:
        model = task.make_model(seed)
        kw = resolve_hyperparameters(spec, task, model, seed)
        what = f"{spec.cls.__name__}(model.parameters(), **{kw})"
        try:
            opt = spec.cls(model.parameters(), **kw)
        except TypeError as e:
            raise ValueError(f"Invalid optimizer {spec.label!r}: {what} failed: {e}") from None
        owned = {id(p) for g in getattr(opt, "param_groups", []) for p in g["params"]}
        if owned != {id(p) for p in model.parameters()}:  # e.g. a wrapper of another optimizer
            raise ValueError(
                f"Invalid optimizer {spec.label!r}: {what} does not optimize the model's "
                "parameters (a wrapper around another optimizer cannot run on its own)")


def _check_specs(optimizers: Iterable) -> list[OptimizerSpec]:
    specs = [parse_optimizer(o) for o in optimizers]
    if not specs:
        raise ValueError("Invalid optimizers: empty (expected at least one optimizer name)")
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"Invalid optimizers: {dupes} given more than once")
    return specs


def _check_seeds(seeds: Iterable[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"Invalid seeds: {seeds!r} (expected a non-empty list of integers >= 0)")
    return seeds


def _run_all(task, specs, seeds, budget, *, bar, on_error, callback, run_kwargs) -> list[Run]:
    """Every spec on every seed, in that order; ``budget`` is one run's share of the bar."""
    runs = []
    for spec in specs:
        for seed in seeds:
            bar.describe(f"{spec.label} seed {seed}")
            start = bar.n
            try:
                run = run_one(task, spec, seed, progress=bar, **run_kwargs)
            except Exception as e:
                if on_error == "raise":
                    raise
                run = Run(optimizer=spec.label, name=spec.name, family=spec.family, seed=seed,
                          hyperparameters=dict(spec.kwargs), init_hash="", init_loss=math.nan,
                          status="failed",
                          error=f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            if bar.bar is not None:  # jump to the end of this run's share of the budget
                bar.update(start + budget - bar.n)
            runs.append(run)
            if callback is not None:
                callback(run)
    return runs


def compare(
    task: str | Task,
    optimizers: Iterable = ("adam", "sgd"),
    seeds: Iterable[int] = (0,),
    budget_evals: int | None = None,
    budget_seconds: float | None = None,
    *,
    num_points: int = 50,
    out_dir: str | Path | None = None,
    plot: bool = True,
    progress: bool | None = None,
    on_error: str = "record",
    callback: Callable[[Run], None] | None = None,
    num_threads: int | None = None,
) -> Comparison:
    """Run every optimizer on every seed of ``task`` under the same budget.

    Args:
        task: a :class:`~evoopt.tasks.Task` or a task name (``"digits"``, ``"rastrigin"``...).
        optimizers: names (``"adam"``, ``"pgpe:lr=0.2"``, aliases such as
            ``"sgd-momentum"``), ``(name, kwargs)`` tuples or :class:`OptimizerSpec` s.
        seeds: one run per optimizer per seed; the seed fixes the initial parameters
            (the same for every optimizer) and the population optimizers' generator.
        budget_evals: evaluations per run (see :mod:`evoopt.compare` for the accounting).
        budget_seconds: wall time per run spent in ``opt.step``. With neither budget,
            ``task.default_budget_evals`` is used.
        num_points: curve points recorded per run (plus the start and the end).
        out_dir: if given, :meth:`Comparison.save` writes the files there.
        plot: write the PNG plots when saving (needs matplotlib).
        progress: show a tqdm bar on stderr (default: when stderr is a terminal).
        on_error: ``"record"`` keeps going when a run raises (the run is marked
            ``failed`` with the traceback); ``"raise"`` re-raises. Bad hyperparameters
            always raise ``ValueError`` before the first run: every optimizer is built
            once on a throwaway model first.
        callback: called with each finished :class:`Run`.
        num_threads: run with ``torch.set_num_threads(num_threads)`` and restore the
            previous value afterwards (``None``: leave it). One thread is usually fastest
            for these small models, and much faster on a busy machine.
    """
    task = get_task(task)
    specs = _check_specs(optimizers)
    seeds = _check_seeds(seeds)
    if budget_evals is not None:
        budget_evals = check_int("budget_evals", budget_evals)
    if budget_seconds is not None:
        budget_seconds = check_positive("budget_seconds", budget_seconds)
    if budget_evals is None and budget_seconds is None:
        budget_evals = task.default_budget_evals
    check_int("num_points", num_points)
    check_choice("on_error", on_error, ("record", "raise"))
    if num_threads is not None:
        check_int("num_threads", num_threads)
    _check_constructors(task, specs, seeds[0])
    by_time = budget_evals is None
    budget = budget_seconds if by_time else budget_evals
    bar = Progress(sys.stderr.isatty() if progress is None else bool(progress),
                    len(specs) * len(seeds) * budget, "s" if by_time else "eval")
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        runs = _run_all(task, specs, seeds, budget, bar=bar, on_error=on_error,
                        callback=callback,
                        run_kwargs=dict(budget_evals=budget_evals, budget_seconds=budget_seconds,
                                        num_points=num_points, by_time=by_time))
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
    result = Comparison(
        task=task.name, metric=task.metric, higher_is_better=task.metric_higher_is_better,
        budget_evals=budget_evals, budget_seconds=budget_seconds, seeds=seeds,
        optimizers=[s.label for s in specs], acceptance=dict(task.acceptance), runs=runs,
        total_seconds=time.perf_counter() - t0, evaluation_unit=task.evaluation_unit,
        default_budget_evals=task.default_budget_evals)
    if out_dir is not None:
        result.save(out_dir, plot=plot)
    return result
