"""What a comparison measured: a :class:`Run` per optimizer and seed, and the
:class:`Comparison` of all runs with its summaries, acceptance checks, terminal table,
CSV/JSON files and plots."""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..tasks import Task

__all__ = ["Check", "Comparison", "Run"]

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
    std = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "std": std,
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
            cells += [f"{r['evals']['mean']:.0f}", f"{r['wall_time']['mean']:.2f}",
                      ", ".join(notes)]
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
        off_default = (self.budget_seconds is not None
                       or self.budget_evals != self.default_budget_evals)
        if checks and off_default:
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
        stats = ("mean", "std", "min", "max")
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["optimizer", "family", "num_runs"]
                       + [f"{k}_{s}" for k in keys for s in stats])
            for r in self.summary():
                w.writerow([r["optimizer"], r["family"], r["num_runs"]] + [
                    repr(r.get(k, {}).get(s, math.nan)) for k in keys for s in stats])
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

