"""Side-by-side runs of gradient and population optimizers on one :class:`~evoopt.tasks.Task`.

``compare(task, optimizers, seeds)`` trains every optimizer on every seed, each run on
its own fresh model from ``task.make_model(seed)`` -- so all optimizers start from the
same parameters and see the same data for a given seed -- under the same budget, and
returns a :class:`Comparison` holding every curve; :meth:`Comparison.save` writes CSV,
JSON and PNG plots, :meth:`Comparison.table` the terminal summary.

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

from __future__ import annotations

import ast
import csv
import inspect
import json
import math
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .population import PopulationOptimizer
from .registry import OPTIMIZERS
from .tasks import Task, get_task, params_hash

__all__ = [
    "ALIASES",
    "GENERIC_HYPERPARAMETERS",
    "Comparison",
    "OptimizerSpec",
    "Run",
    "compare",
    "check_kwargs",
    "parse_optimizer",
    "resolve_hyperparameters",
    "stop_reasons",
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


def _parse_value(text: str):
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
            kwargs[key] = _parse_value(value)
        label = spec if items else base
    else:
        raise ValueError(
            f"Invalid optimizer: {spec!r} (expected a name such as 'adam', 'name:key=value', "
            "a (name, kwargs) tuple or an OptimizerSpec)")
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
    parameters), e.g. ``{"diagonal": lambda D: D > 200}``, except for arguments whose default is
    itself callable (an inner ``optimizer`` class or factory), which get the callable."""
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

    kw = {k: (v(D) if callable(v) and not isinstance(v, type) and not takes_callable(k) else v)
          for k, v in kw.items()}
    if "seed" in params and "seed" not in kw:
        kw["seed"] = int(seed)
    check_kwargs(f"hyperparameters for {spec.label!r}", spec.cls, kw)
    return kw


def stop_reasons(opt) -> dict[str, Any]:
    """Why ``opt`` has stopped for good (``opt.stopped``, e.g. CMA-ES after pycma's
    termination criteria) as plain values; empty while it runs on, and for optimizers
    without the attribute (torch's)."""
    stopped = getattr(opt, "stopped", None)
    if callable(stopped):
        stopped = stopped()
    return {str(k): (v if isinstance(v, (int, float, str, bool)) else repr(v))
            for k, v in dict(stopped or {}).items()}


def check_kwargs(what: str, fn, kwargs, *, taken: Iterable[str] = ("self", "params")) -> None:
    """Raise ``ValueError`` naming the keys of ``kwargs`` that the callable ``fn`` (a class:
    its constructor) does not accept, and listing those it does (less ``taken``: the
    arguments the caller passes itself)."""
    params = inspect.signature(fn.__init__ if isinstance(fn, type) else fn).parameters
    taken = set(taken)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params or k in taken]
    if unknown:
        valid = [k for k, p in params.items() if k not in taken and p.kind is not p.VAR_POSITIONAL]
        raise ValueError(f"Invalid {what}: {unknown} (expected some of: {', '.join(valid)})")


# ------------------------------------------------------------------------ results
@dataclass
class Run:
    """One optimizer on one seed: its curve and its final numbers."""

    optimizer: str
    name: str
    family: str
    seed: int
    hyperparameters: dict[str, Any]
    init_hash: str
    init_loss: float
    evals: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    metric_values: list[float] = field(default_factory=list)
    final_loss: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)
    num_evals: int = 0
    num_steps: int = 0
    wall_time: float = 0.0
    status: str = "ok"  # "ok", "diverged" (non-finite loss) or "failed" (an exception)
    error: str | None = None
    #: why the optimizer stopped for good before the budget was spent (``opt.stopped``, e.g.
    #: CMA-ES's termination criteria), empty otherwise
    stopped: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """One acceptance check of the task (``Task.acceptance``) and whether it passed."""

    description: str
    passed: bool


def _stats(values: Sequence[float]) -> dict[str, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals)}


@dataclass
class Comparison:
    """Everything one :func:`compare` call measured. ``runs`` in (optimizer, seed) order."""

    task: str
    metric: str | None
    higher_is_better: bool
    budget_evals: int | None
    budget_seconds: float | None
    seeds: list[int]
    optimizers: list[str]
    acceptance: dict[str, Any]
    runs: list[Run]
    total_seconds: float = 0.0
    evaluation_unit: str = Task.evaluation_unit
    default_budget_evals: int | None = None

    # ------------------------------------------------------------- summaries
    def runs_of(self, label: str) -> list[Run]:
        return [r for r in self.runs if r.optimizer == label]

    def summary(self) -> list[dict[str, Any]]:
        """One row per optimizer: mean / std / min / max over seeds of the final loss,
        the metric, the evaluations and the wall time."""
        rows = []
        for label in self.optimizers:
            runs = self.runs_of(label)
            row = {
                "optimizer": label,
                "family": runs[0].family if runs else "",
                "num_runs": len(runs),
                "num_failed": sum(r.status == "failed" for r in runs),
                "num_diverged": sum(r.status == "diverged" for r in runs),
                "num_stopped": sum(bool(r.stopped) for r in runs),
                "final_loss": _stats([r.final_loss for r in runs]),
                "evals": _stats([r.num_evals for r in runs]),
                "wall_time": _stats([r.wall_time for r in runs]),
            }
            if self.metric:
                row["metric"] = _stats([r.metrics.get(self.metric, math.nan) for r in runs])
            rows.append(row)
        return rows

    def _score(self, row) -> tuple[float, float]:
        """Smaller is better: the mean metric (or the mean final loss), then the mean final
        loss to break ties; NaN ranks last."""
        loss = row["final_loss"]["mean"]
        loss = math.inf if math.isnan(loss) else loss
        if not self.metric:
            return loss, loss
        v = row["metric"]["mean"]
        v = -v if self.higher_is_better else v
        return (math.inf if math.isnan(v) else v), loss

    def best(self, family: str | None = None) -> str | None:
        """The label of the best optimizer by mean metric (or mean final loss); equal
        metrics are ranked by mean final loss (then by order of the list)."""
        rows = [r for r in self.summary() if family is None or r["family"] == family]
        rows = [r for r in rows if math.isfinite(self._score(r)[0])]
        return min(rows, key=self._score)["optimizer"] if rows else None

    def checks(self) -> list[Check]:
        """The task's acceptance checks (``Task.acceptance``) on the mean metric.

        The gradient reference is ``adam`` when it ran, else the best gradient optimizer;
        the population side is the best population optimizer."""
        acc = self.acceptance
        if not acc or not self.metric:
            return []
        rows = {r["optimizer"]: r for r in self.summary()}
        grads = [k for k, r in rows.items() if r["family"] == "gradient"]
        ref = "adam" if "adam" in grads else self.best("gradient")
        pop = self.best("population")
        m, out = self.metric, []
        better = (lambda a, b: a > b) if self.higher_is_better else (lambda a, b: a < b)
        geq = ">=" if self.higher_is_better else "<="

        def val(label):
            return rows[label]["metric"]["mean"]

        if "gradient_min" in acc and ref:
            t = acc["gradient_min"]
            out.append(Check(f"{ref}: {m} {val(ref):.4g} {geq} {t}",
                             val(ref) >= t if self.higher_is_better else val(ref) <= t))
        if "population_min" in acc and pop:
            t = acc["population_min"]
            out.append(Check(f"best population optimizer {pop}: {m} {val(pop):.4g} {geq} {t}",
                             val(pop) >= t if self.higher_is_better else val(pop) <= t))
        if acc.get("population_beats_gradient") and ref and pop:
            out.append(Check(f"best population optimizer {pop} ({m} {val(pop):.4g}) beats "
                             f"{ref} ({val(ref):.4g})", better(val(pop), val(ref))))
        return out

    # ------------------------------------------------------------------ table
    def table(self) -> str:
        """The terminal summary over seeds: mean ± std of the final training loss, mean ± std
        [min, max] of the metric, mean evaluations and wall time; ``*`` marks the best."""
        rows = self.summary()
        best = self.best()
        budget = []
        if self.budget_evals is not None:
            budget.append(f"{self.budget_evals} evaluations")
        if self.budget_seconds is not None:
            budget.append(f"{self.budget_seconds:g} s")
        head = (f"task {self.task}: {len(self.seeds)} seed(s) {self.seeds}, budget per run: "
                f"{' or '.join(budget)} (1 evaluation = {self.evaluation_unit})")

        def fmt(s, digits=4, span=True):
            if math.isnan(s["mean"]):
                return "nan"
            txt = f"{s['mean']:.{digits}g}"
            if len(self.seeds) > 1:
                txt += f" ± {s['std']:.2g}"
                if span:
                    txt += f" [{s['min']:.{digits}g}, {s['max']:.{digits}g}]"
            return txt

        cols = ["", "optimizer", "family", "final train loss"]
        if self.metric:
            cols.append(self.metric + (" ↑" if self.higher_is_better else " ↓"))
        cols += ["evals", "time s", "notes"]
        lines = []
        for r in rows:
            notes = []
            if r["num_failed"]:
                notes.append(f"{r['num_failed']} failed")
            if r["num_diverged"]:
                notes.append(f"{r['num_diverged']} diverged")
            if r["num_stopped"]:
                notes.append(f"{r['num_stopped']} stopped early")
            cells = ["*" if r["optimizer"] == best else "", r["optimizer"], r["family"],
                     fmt(r["final_loss"], 3, span=False)]
            if self.metric:
                cells.append(fmt(r["metric"]))
            cells += [f"{r['evals']['mean']:.0f}", f"{r['wall_time']['mean']:.2f}", ", ".join(notes)]
            lines.append(cells)
        widths = [max(len(c[i]) for c in [cols] + lines) for i in range(len(cols))]
        out = [head, ""]
        for cells in [cols] + lines:
            out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        out.insert(3, "  ".join("-" * w for w in widths))
        if best:
            by = f"mean {self.metric}" if self.metric else "mean final train loss"
            out.append(f"* best: {best} (by {by}); time s = wall time inside opt.step per run")
        checks = self.checks()
        if checks and (self.budget_seconds is not None or self.budget_evals != self.default_budget_evals):
            out.append(f"(the checks' targets are set for the task's default budget of "
                       f"{self.default_budget_evals} evaluations)")
        for c in checks:
            out.append(f"check: {c.description}: {'PASS' if c.passed else 'FAIL'}")
        for r in self.runs:
            if r.stopped:
                why = ", ".join(f"{k}={v}" for k, v in r.stopped.items())
                out.append(f"stopped early: {r.optimizer} seed {r.seed} after {r.num_evals} "
                           f"evaluations: the optimizer stopped for good ({why})")
        errors = [r for r in self.runs if r.error]
        for r in errors:
            out.append(f"error: {r.optimizer} seed {r.seed}: {r.error.strip().splitlines()[-1]}")
        return "\n".join(out)

    # ------------------------------------------------------------------- files
    def to_json(self, path) -> Path:
        path = Path(path)
        data = asdict(self)
        data["summary"] = self.summary()
        data["checks"] = [asdict(c) for c in self.checks()]
        path.write_text(json.dumps(data, indent=1, default=str, allow_nan=True))
        return path

    def to_csv(self, path) -> Path:
        """Every curve point, one row each (long format)."""
        path = Path(path)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["task", "optimizer", "family", "seed", "evals", "seconds", "train_loss",
                        self.metric or "metric"])
            for r in self.runs:
                for e, s, loss, m in zip(r.evals, r.seconds, r.losses, r.metric_values):
                    w.writerow([self.task, r.optimizer, r.family, r.seed, e, f"{s:.6f}",
                                repr(loss), repr(m)])
        return path

    def summary_csv(self, path) -> Path:
        path = Path(path)
        keys = ["final_loss", "metric", "evals", "wall_time"]
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["optimizer", "family", "num_runs"] + [f"{k}_{s}" for k in keys
                                                              for s in ("mean", "std", "min", "max")])
            for r in self.summary():
                w.writerow([r["optimizer"], r["family"], r["num_runs"]] + [
                    repr(r.get(k, {}).get(s, math.nan)) for k in keys
                    for s in ("mean", "std", "min", "max")])
        return path

    def plot(self, out_dir) -> list[Path]:
        """``loss_vs_evals.png`` and ``loss_vs_time.png`` (one thin line per run, one
        colour per optimizer). Needs matplotlib (``pip install 'evoopt[plot]'``)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("plotting needs matplotlib: pip install 'evoopt[plot]' "
                              "(or pass plot=False / --no-plot)") from e
        out_dir = Path(out_dir)
        paths = []
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for xkey, xlabel, fname in (("evals", "evaluations", "loss_vs_evals.png"),
                                    ("seconds", "wall time in opt.step [s]", "loss_vs_time.png")):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            positive = True
            for i, label in enumerate(self.optimizers):
                for j, r in enumerate(self.runs_of(label)):
                    ys = r.losses
                    positive &= all(y > 0 for y in ys if math.isfinite(y))
                    ax.plot(getattr(r, xkey), ys, color=colors[i % len(colors)], lw=1.2,
                            alpha=0.85, label=label if j == 0 else None,
                            ls="-" if r.family == "gradient" else "--")
            if positive:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("training loss")
            ax.set_title(f"{self.task}: training loss (dashed: population optimizers)")
            ax.legend(fontsize=8, ncol=2)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            p = out_dir / fname
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths.append(p)
        return paths

    def save(self, out_dir, plot: bool = True) -> dict[str, Path]:
        """Write ``curves.csv``, ``summary.csv``, ``results.json``, ``table.txt`` and (with
        ``plot``) the PNGs into ``out_dir`` (created). Returns the paths by kind. Without
        matplotlib the PNGs are skipped with a ``RuntimeWarning`` saying how to get them."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"csv": self.to_csv(out_dir / "curves.csv"),
                 "summary_csv": self.summary_csv(out_dir / "summary.csv"),
                 "json": self.to_json(out_dir / "results.json")}
        (out_dir / "table.txt").write_text(self.table() + "\n")
        paths["table"] = out_dir / "table.txt"
        if plot:
            try:
                for p in self.plot(out_dir):
                    paths[p.stem] = p
            except ImportError as e:  # the numbers are saved; only the pictures are missing
                warnings.warn(str(e), RuntimeWarning, stacklevel=2)
        return paths


# ------------------------------------------------------------------------ running
class _Progress:
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

    def update(self, n: float) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _BudgetExhausted(Exception):
    """Raised by the counting closure when a step asks for more evaluations than are left."""


def _lbfgs_cap(opt: torch.optim.Optimizer, remaining: int, caps: list) -> None:
    """Cap LBFGS's evaluations per step by what is left of the budget."""
    for g, (max_iter, max_eval) in zip(opt.param_groups, caps):
        g["max_eval"] = max(1, min(max_eval, remaining))
        g["max_iter"] = max(1, min(max_iter, g["max_eval"]))


def _run_one(task: Task, spec: OptimizerSpec, seed: int, budget_evals: int | None,
             budget_seconds: float | None, num_points: int, progress: _Progress,
             by_time: bool) -> Run:
    model = task.make_model(seed)
    with torch.no_grad():
        init_loss = float(task.loss(model))
    kw = resolve_hyperparameters(spec, task, model, seed)
    run = Run(optimizer=spec.label, name=spec.name, family=spec.family, seed=seed,
              hyperparameters={k: (v if isinstance(v, (int, float, str, bool, type(None)))
                                   else repr(v)) for k, v in kw.items()},
              init_hash=params_hash(model), init_loss=init_loss)
    opt = spec.cls(model.parameters(), **kw)
    population = isinstance(opt, PopulationOptimizer)
    is_lbfgs = isinstance(opt, torch.optim.LBFGS)
    caps = [(g["max_iter"], g["max_eval"]) for g in opt.param_groups] if is_lbfgs else []
    params = list(model.parameters())
    calls = {"count": 0, "left": math.inf}  # closure calls so far; calls left in this step
    snapshot: list[torch.Tensor] = []
    if population:
        objective = task.population_objective(model)
    else:
        closure = task.closure(model, opt)

        def objective():
            # A line search (LBFGS with strong_wolfe) can ask for more evaluations than
            # max_eval allows: refuse them; the run ends at the last evaluated point.
            if calls["left"] <= 0:
                raise _BudgetExhausted
            calls["left"] -= 1
            calls["count"] += 1
            if is_lbfgs:
                snapshot[:] = [p.detach().clone() for p in params]
            return closure()

    metric = task.metric

    def record():
        with torch.no_grad():
            loss = float(task.loss(model))
        run.evals.append(run.num_evals)
        run.seconds.append(run.wall_time)
        run.losses.append(loss)
        run.metric_values.append(task.metrics(model).get(metric, math.nan) if metric else math.nan)

    record()
    every_evals = budget_evals / num_points if budget_evals else math.inf
    every_seconds = budget_seconds / num_points if budget_seconds else math.inf
    next_evals, next_seconds = every_evals, every_seconds
    while True:
        if budget_evals is not None:
            need = opt.popsize if population else 1
            if run.num_evals + need > budget_evals:
                break
        if budget_seconds is not None and run.wall_time >= budget_seconds:
            break
        if is_lbfgs and budget_evals is not None:
            _lbfgs_cap(opt, budget_evals - run.num_evals, caps)
        before = opt.num_evals if population else calls["count"]
        if budget_evals is not None:
            calls["left"] = budget_evals - run.num_evals
        t0 = time.perf_counter()
        try:
            loss = opt.step(objective)
        except _BudgetExhausted:
            with torch.no_grad():
                for p, v in zip(params, snapshot):
                    p.copy_(v)
            loss = torch.tensor(0.0)
            budget_evals_hit = True
        else:
            budget_evals_hit = False
        dt = time.perf_counter() - t0
        spent = (opt.num_evals if population else calls["count"]) - before
        run.wall_time += dt
        run.num_evals += spent
        run.num_steps += 1
        progress.update(dt if by_time else spent)
        if budget_evals_hit:
            break
        if not population and not math.isfinite(float(torch.as_tensor(loss).detach())):
            run.status = "diverged"
            break
        run.stopped = stop_reasons(opt)  # e.g. CMA-ES after pycma's stop criteria
        if run.stopped:
            break
        if run.num_evals >= next_evals or run.wall_time >= next_seconds:
            record()
            while next_evals <= run.num_evals:
                next_evals += every_evals
            while next_seconds <= run.wall_time:
                next_seconds += every_seconds
    if run.evals[-1] != run.num_evals or run.seconds[-1] != run.wall_time:
        record()
    run.final_loss = run.losses[-1]
    run.metrics = task.metrics(model)
    return run


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
        budget_evals: evaluations per run (see the module docstring for the accounting).
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
    specs = [parse_optimizer(o) for o in optimizers]
    if not specs:
        raise ValueError("Invalid optimizers: empty (expected at least one optimizer name)")
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"Invalid optimizers: {dupes} given more than once")
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"Invalid seeds: {seeds!r} (expected a non-empty list of integers >= 0)")
    if budget_evals is not None and (not isinstance(budget_evals, int)
                                     or isinstance(budget_evals, bool) or budget_evals < 1):
        raise ValueError(f"Invalid budget_evals: {budget_evals!r} (expected an integer >= 1)")
    if budget_seconds is not None:
        ok = isinstance(budget_seconds, (int, float)) and not isinstance(budget_seconds, bool)
        if not ok or not math.isfinite(budget_seconds) or budget_seconds <= 0:
            raise ValueError(f"Invalid budget_seconds: {budget_seconds!r} (expected a finite number > 0)")
        budget_seconds = float(budget_seconds)
    if budget_evals is None and budget_seconds is None:
        budget_evals = task.default_budget_evals
    if not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"Invalid num_points: {num_points!r} (expected an integer >= 1)")
    if on_error not in ("record", "raise"):
        raise ValueError(f"Invalid on_error: {on_error!r} (expected 'record' or 'raise')")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"Invalid num_threads: {num_threads!r} (expected an integer >= 1)")
    _check_constructors(task, specs, seeds[0])
    if progress is None:
        progress = sys.stderr.isatty()
    by_time = budget_evals is None
    total = len(specs) * len(seeds) * (budget_seconds if by_time else budget_evals)
    bar = _Progress(bool(progress), total, "s" if by_time else "eval")
    runs = []
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        for spec in specs:
            for seed in seeds:
                bar.describe(f"{spec.label} seed {seed}")
                start = bar.bar.n if bar.bar is not None else 0
                try:
                    run = _run_one(task, spec, seed, budget_evals, budget_seconds, num_points,
                                   bar, by_time)
                except Exception as e:
                    if on_error == "raise":
                        raise
                    run = Run(optimizer=spec.label, name=spec.name, family=spec.family, seed=seed,
                              hyperparameters=dict(spec.kwargs), init_hash="", init_loss=math.nan,
                              status="failed",
                              error=f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
                if bar.bar is not None:  # jump to the end of this run's share of the budget
                    bar.update(start + (budget_seconds if by_time else budget_evals) - bar.bar.n)
                runs.append(run)
                if callback is not None:
                    callback(run)
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
    result = Comparison(
        task=task.name, metric=task.metric, higher_is_better=task.metric_higher_is_better,
        budget_evals=budget_evals, budget_seconds=budget_seconds, seeds=seeds,
        optimizers=labels, acceptance=dict(task.acceptance), runs=runs,
        total_seconds=time.perf_counter() - t0, evaluation_unit=task.evaluation_unit,
        default_budget_evals=task.default_budget_evals)
    if out_dir is not None:
        result.save(out_dir, plot=plot)
    return result
