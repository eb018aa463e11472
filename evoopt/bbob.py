r"""``evoopt bbob``: any registered population optimizer on COCO's ``bbob`` suite.

COCO (Hansen, Auger, Ros, Mersmann, Tusar, Brockhoff 2021, "COCO: a platform for comparing
continuous optimizers in a black-box setting", Optimization Methods and Software 36(1)) defines
24 noiseless functions (Hansen, Finck, Ros, Auger 2009, "Real-parameter black-box optimization
benchmarking 2009: noiseless functions definitions", INRIA RR-6829) in five groups:

=====================  =========  ===================================================
group                  functions
=====================  =========  ===================================================
separable              f1-f5      sphere, ellipsoid, Rastrigin, Bueche-Rastrigin, slope
moderate               f6-f9      attractive sector, step ellipsoid, Rosenbrock x2
ill-conditioned        f10-f14    ellipsoid, discus, bent cigar, sharp ridge, diff. powers
multimodal             f15-f19    Rastrigin, Weierstrass, Schaffer x2, Griewank-Rosenbrock
weakly structured      f20-f24    Schwefel, Gallagher x2, Katsuura, Lunacek bi-Rastrigin
=====================  =========  ===================================================

Each problem (function f, dimension d, instance i) gets ``budget * d`` evaluations. An
optimizer that stops before the budget is spent (CMA-ES's ``opt.stopped``, pycma's
``es.stop()``) is restarted independently from a uniform point in ``[-4, 4]^d``, as COCO's
example experiments do; the first start is the problem's ``initial_solution``. A problem
ends when the budget is spent or its final target ``f - f_opt <= 1e-8`` is hit.

Every evaluation goes through a ``cocoex.Observer``, which writes COCO's standard data folder
(``<out>/<optimizer>/``: ``.info`` files and ``data_f*/`` logs) per optimizer, so that
``python -m cocopp <out>/*`` draws the usual ECDF plots. The printed summary counts, per
function group and optimizer, the (problem, target) pairs reached for COCO's 51 targets
``f - f_opt = 10^k``, ``k = 2, 1.8, ..., -8``, read from those logs (:func:`read_precisions`):
a target is reached when the best ``f - f_opt`` of the run is at most the target.

``pycma`` is the built-in reference: ``cma.CMAEvolutionStrategy`` driven directly by an
ask/tell loop (same start points, ``sigma0`` and restarts), not through evoopt.

Example (the first three functions, d = 2 and 5, budget 100 d, three optimizers)::

    evoopt bbob --optimizers cmaes,pycma,snes --dimensions 2,5 --functions 1-3 --budget 100
    python -m evoopt.bbob ...            # the same without the ``evoopt`` command

Needs the optional extra ``bbob`` (``coco-experiment`` and ``cocopp``).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .compare import OptimizerSpec, parse_optimizer
from .compare.running import Progress
from .population import PopulationOptimizer

__all__ = [
    "GROUPS", "TARGETS", "PYCMA", "BBOBResult", "ProblemRun", "benchmark", "read_precisions",
    "count_targets", "add_parser", "run", "main",
]

#: COCO's function groups of the bbob suite (Hansen et al. 2009).
GROUPS: dict[str, range] = {
    "separable": range(1, 6),
    "moderate": range(6, 10),
    "ill-conditioned": range(10, 15),
    "multimodal": range(15, 20),
    "weakly-structured": range(20, 25),
}
#: COCO's 51 targets on ``f - f_opt`` for the bbob ECDFs: 10^2, 10^1.8, ..., 10^-8.
TARGETS = 10.0 ** (np.arange(10, -41, -1) / 5)
#: the name of the built-in reference (pycma driven directly)
PYCMA = "pycma"
#: restarts start uniformly in [-RESTART_BOX, RESTART_BOX]^d (COCO's example experiments)
RESTART_BOX = 4.0


def _import_cocoex():
    try:
        import cocoex
    except ImportError as e:
        raise ImportError(
            f"evoopt bbob needs COCO's experiment package ({e}); install the extra: "
            "pip install 'evoopt[bbob]' (coco-experiment, cocopp)"
        ) from None
    return cocoex


# ------------------------------------------------------------------ the solvers
class _EvooptSolver:
    """One start of a registered population optimizer on a ``d``-dimensional problem."""

    def __init__(self, spec: OptimizerSpec, x0: np.ndarray, sigma0: float, seed: int):
        self.x = torch.tensor(x0, dtype=torch.float64)
        kwargs = {"sigma": sigma0, **spec.kwargs, "seed": seed}
        self.opt = spec.cls([self.x], **kwargs)

    def ask(self) -> np.ndarray:
        return self.opt.ask().flat.numpy()

    def tell(self, f: np.ndarray) -> None:
        with warnings.catch_warnings():  # a stop is expected here: the caller restarts;
            # non-finite f-values are counted in the run (ProblemRun.nonfinite)
            warnings.filterwarnings("ignore", r".* stopped at generation", RuntimeWarning)
            warnings.filterwarnings("ignore", r".* losses are NaN or infinite", RuntimeWarning)
            self.opt.tell(torch.from_numpy(f))

    @property
    def stopped(self) -> bool:
        return bool(self.opt.stopped)


class _PycmaSolver:
    """One start of pycma's ``CMAEvolutionStrategy`` (ask/tell, no evoopt in between)."""

    def __init__(self, spec: OptimizerSpec, x0: np.ndarray, sigma0: float, seed: int):
        import cma

        opts = {"verbose": -9, "verb_log": 0, "verb_disp": 0, **spec.kwargs, "seed": seed}
        self.es = cma.CMAEvolutionStrategy(x0, spec.kwargs.get("sigma", sigma0),
                                           {k: v for k, v in opts.items() if k != "sigma"})
        self.X: list | None = None

    def ask(self) -> np.ndarray:
        self.X = self.es.ask()
        return np.asarray(self.X)

    def tell(self, f: np.ndarray) -> None:
        self.es.tell(self.X, f.tolist())

    @property
    def stopped(self) -> bool:
        return bool(self.es.stop())


@dataclass
class ProblemRun:
    """What one optimizer did on one problem (``f_best``: the best f-value it evaluated;
    ``nonfinite``: evaluations that returned inf or NaN, members beyond float range)."""

    problem_id: str
    function: int
    dimension: int
    instance: int
    evaluations: int
    restarts: int
    f_best: float
    seconds: float
    nonfinite: int = 0


def _seed(seed: int, problem_id: str, start: int) -> int:
    """A seed per (run seed, problem, start), the same for every optimizer; >= 1 (pycma
    takes 0 for "from the clock")."""
    return zlib.crc32(f"{seed}:{problem_id}:{start}".encode()) + 1


def _solver(spec: OptimizerSpec) -> type:
    return _PycmaSolver if spec.name == PYCMA else _EvooptSolver


def solve_problem(problem, spec: OptimizerSpec, budget: int, *, sigma0: float,
                  seed: int) -> ProblemRun:
    """Run ``spec`` on one (observed) cocoex problem for ``budget`` evaluations, with
    independent restarts from uniform points in ``[-4, 4]^d`` whenever it stops early or
    evaluates a generation with no finite f-value (it diverged: nothing to rank); stop at
    the final target. A generation cut by the budget or the target is not told."""
    make = _solver(spec)
    d, t0 = problem.dimension, time.perf_counter()
    rng = np.random.default_rng(_seed(seed, problem.id, -1))
    f_best, start, nonfinite = math.inf, 0, 0

    def done() -> bool:
        return problem.evaluations >= budget or bool(problem.final_target_hit)

    while not done():
        before = problem.evaluations
        x0 = (np.array(problem.initial_solution) if start == 0
              else rng.uniform(-RESTART_BOX, RESTART_BOX, d))
        solver = make(spec, x0, sigma0, _seed(seed, problem.id, start))
        while not done() and not solver.stopped:
            X, fs = solver.ask(), []
            for x in X:
                if done():
                    break
                fs.append(problem(np.asarray(x, dtype=np.float64)))
            f = np.asarray(fs, dtype=np.float64)
            finite = np.isfinite(f)
            nonfinite += int(len(f) - finite.sum())
            f_best = min([f_best, *f[finite].tolist()])
            if len(fs) < len(X) or not finite.any():
                break
            solver.tell(f)
        if problem.evaluations == before:  # a start that evaluates nothing would loop forever
            break
        start += 1
    return ProblemRun(problem.id, problem.id_function, d, problem.id_instance,
                      problem.evaluations, start - 1, f_best, time.perf_counter() - t0,
                      nonfinite)


# ------------------------------------------------------------------ the logs
_INFO_HEAD = re.compile(r"funcId\s*=\s*(\d+),\s*DIM\s*=\s*(\d+)")


def read_precisions(folder: str | Path) -> dict[tuple[int, int, int], float]:
    """The best ``f - f_opt`` of every run in a COCO ``bbob`` data folder, keyed by
    ``(function, dimension, instance)``: the last record of each run in the ``.dat`` files
    (the target-triggered log, third column; runs in the order the ``.info`` files list)."""
    folder, out = Path(folder), {}
    for info in sorted(folder.glob("*.info")):
        lines = info.read_text().splitlines()
        for head, data in zip(lines[0::3], lines[2::3]):
            fun, dim = (int(v) for v in _INFO_HEAD.search(head).groups())
            dat_name, *runs = [s.strip() for s in data.split(",")]
            instances = [int(r.split(":")[0]) for r in runs]
            finals = _last_records((folder / dat_name).read_text())
            if len(finals) != len(instances):
                raise ValueError(f"{folder / dat_name}: {len(finals)} runs logged, "
                                 f"{info.name} lists {len(instances)}")
            out.update({(fun, dim, i): v for i, v in zip(instances, finals)})
    return out


def _last_records(text: str) -> list[float]:
    """The third column of the last data line of each run (a run starts with a '%' line)."""
    finals: list[float] = []
    last = None
    for line in text.splitlines():
        if line.startswith("%"):
            if last is not None:
                finals.append(last)
            last = None
        elif line.strip():
            last = float(line.split()[2])
    if last is not None:
        finals.append(last)
    return finals


def count_targets(precisions: dict[tuple[int, int, int], float]) -> dict[str, tuple[int, int]]:
    """Per function group (those with at least one run): ``(reached, total)`` (problem,
    target) pairs over :data:`TARGETS` (reached: best ``f - f_opt <= target``), and ``"all"``."""
    counts: dict[str, tuple[int, int]] = {}
    for group, funs in [*GROUPS.items(), ("all", range(1, 25))]:
        best = [v for (f, _, _), v in precisions.items() if f in funs]
        if best:
            reached = int(sum((TARGETS >= v).sum() for v in best))
            counts[group] = (reached, len(best) * len(TARGETS))
    return counts


# ------------------------------------------------------------------ the benchmark
@dataclass
class BBOBResult:
    """Per optimizer label: its COCO data folder, its runs and the target counts."""

    folders: dict[str, Path] = field(default_factory=dict)
    runs: dict[str, list[ProblemRun]] = field(default_factory=dict)
    precisions: dict[str, dict[tuple[int, int, int], float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, dict[str, tuple[int, int]]]:
        """Per optimizer label, :func:`count_targets` of its logs."""
        return {label: count_targets(p) for label, p in self.precisions.items()}

    def table(self) -> str:
        """Targets reached per function group (percent of (problem, target) pairs, and the
        count), the problems solved to 1e-8, the evaluations and the wall time."""
        all_counts = self.counts
        groups = [g for g in [*GROUPS, "all"] if any(g in c for c in all_counts.values())]
        width = max([9, *(len(k) for k in all_counts)])
        head = f"{'optimizer':<{width}}" + "".join(f"{g:>19}" for g in groups)
        lines = [head + f"{'solved':>9}{'evals':>11}{'time':>9}"]
        for label, counts in all_counts.items():
            cells = []
            for g in groups:
                r, t = counts.get(g, (0, 0))
                cells.append(f"{100 * r / t:6.1f}% {r:>5}/{t:<5}" if t else f"{'-':>19}")
            runs = self.runs[label]
            solved = sum(v <= TARGETS[-1] for v in self.precisions[label].values())
            evals = sum(r.evaluations for r in runs)
            lines.append(f"{label:<{width}}" + "".join(f"{c:>19}" for c in cells)
                         + f"{solved:>4}/{len(runs):<4}{evals:>11}{self.seconds[label]:>8.1f}s")
        for label in all_counts:
            bad = sum(r.nonfinite for r in self.runs[label])
            if bad:
                lines.append(f"{label}: {bad} evaluations returned inf or NaN (members beyond "
                             "float range; ranked worst, a start with none finite restarted)")
        return "\n".join(lines)


def _folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)


def benchmark(optimizers, *, dimensions=(2, 5), functions=range(1, 25), instances=(1, 2, 3),
              budget: int = 100, out: str | Path = "runs/bbob", seed: int = 0,
              sigma0: float = 2.0, progress: bool | None = None) -> BBOBResult:
    """Run each optimizer (a name, ``"name:key=value"`` spec or ``(name, kwargs)``; the name
    ``"pycma"`` is pycma itself) on the bbob problems (``functions`` x ``dimensions`` x
    ``instances``), ``budget * d`` evaluations each. Writes COCO's data folders into
    ``out`` (one per optimizer) and returns the counts read back from them."""
    cocoex = _import_cocoex()
    specs = [_parse_spec(s) for s in optimizers]
    dims, funs, insts = _check_selection(dimensions, functions, instances)
    budget = _check_budget(budget)
    selection = (f"dimensions: {','.join(map(str, dims))} function_indices: "
                 f"{','.join(map(str, funs))} instance_indices: {','.join(map(str, insts))}")
    total = len(specs) * len(dims) * len(funs) * len(insts)
    bar = Progress(sys.stderr.isatty() if progress is None else progress, total, "problem")
    result = BBOBResult()
    try:
        for spec in specs:
            name = _folder_name(spec.label)
            observer = cocoex.Observer("bbob", f"outer_folder: {Path(out)} result_folder: "
                                       f"{name} algorithm_name: {name}")
            _solver(spec)(spec, np.zeros(2), sigma0, 1)  # one-off imports: not in the time
            runs, t0 = [], time.perf_counter()
            for problem in cocoex.Suite("bbob", "", selection):
                bar.describe(f"{spec.label} {problem.id}")
                problem.observe_with(observer)
                try:
                    runs.append(solve_problem(problem, spec, budget * problem.dimension,
                                              sigma0=sigma0, seed=seed))
                finally:
                    problem.free()  # the bbob logger writes its files here
                bar.update(1)
            result.seconds[spec.label] = time.perf_counter() - t0
            result.folders[spec.label] = Path(observer.result_folder)
            result.runs[spec.label] = runs
            result.precisions[spec.label] = read_precisions(observer.result_folder)
    finally:
        bar.close()
    return result


def _parse_spec(spec) -> OptimizerSpec:
    if isinstance(spec, str) and spec.split(":")[0].strip().lower() == PYCMA:
        # the kwargs are pycma options (popsize=, CMA_diagonal=, ...) and sigma
        sub = parse_optimizer("cmaes" + spec.strip()[len(PYCMA):])
        return OptimizerSpec(label=spec.strip(), name=PYCMA, kwargs=sub.kwargs)
    parsed = parse_optimizer(spec)
    if not issubclass(parsed.cls, PopulationOptimizer):
        raise ValueError(
            f"Invalid optimizer {parsed.label!r}: {parsed.name} is a gradient optimizer; bbob "
            "is black-box (expected a population optimizer, see `evoopt list`, or 'pycma')"
        )
    return parsed


def _check_selection(dimensions, functions, instances):
    allowed = {"dimensions": (2, 3, 5, 10, 20, 40), "functions": range(1, 25),
               "instances": range(1, 16)}
    out = []
    for name, values in zip(allowed, (dimensions, functions, instances)):
        values = sorted(set(values))
        bad = [v for v in values if not isinstance(v, (int, np.integer)) or v not in allowed[name]]
        if not values or bad:
            ok = allowed[name]
            what = (f"{ok.start}..{ok.stop - 1}" if isinstance(ok, range)
                    else ", ".join(map(str, ok)))
            raise ValueError(f"Invalid {name}: {bad or values!r} (expected values in {what})")
        out.append([int(v) for v in values])
    return out


def _check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"Invalid budget: {budget!r} (expected an integer >= 1, evaluations "
                         "per problem as a multiple of the dimension)")
    return int(budget)


# ------------------------------------------------------------------ archive
def archive_note() -> str:
    """Whether cocopp's archived reference algorithms can be used offline, and how."""
    try:
        import platformdirs

        cache = Path(platformdirs.user_cache_dir("cocopp")) / "das" / "da" / "bbob"
    except ImportError:
        cache = None
    if cache is not None and any(cache.glob("*.txt")):
        return (f"cocopp's bbob archive is cached in {cache}: compare with it by adding archived "
                "algorithms to the cocopp call, e.g. bbob/2009/BIPOP-CMA-ES")
    return ("cocopp's archived reference algorithms are not available offline here (no cached "
            "bbob archive, and the archive is downloaded on first use): no comparison with them "
            "was made; pycma is the built-in reference")


# ------------------------------------------------------------------ command line
def _int_list(text: str) -> list[int]:
    """``"1,2,5"``, ``"1-24"`` or a mix ``"1-5,10"``."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            a, dash, b = part.partition("-")
            out.extend(range(int(a), int(b) + 1) if dash else [int(a)])
    except ValueError:
        out = []
    if not out:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r} (expected integers: '1,2,5', a range '1-24' or a mix)")
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bbob`` to the ``evoopt`` command's subparsers."""
    p = subparsers.add_parser(
        "bbob", help="run optimizers on COCO's bbob suite (needs evoopt[bbob])",
        description="Run population optimizers on COCO's bbob suite, write COCO's data folders "
        "(for `python -m cocopp`) and print the targets reached per function group.")
    p.add_argument("--optimizers", default="cmaes,pycma", metavar="A,B,...",
                   help="registered population optimizers, options after colons "
                        "(snes:popsize=20), and 'pycma' (pycma itself; default: cmaes,pycma)")
    p.add_argument("--dimensions", type=_int_list, default=[2, 5], metavar="2,5",
                   help="of 2,3,5,10,20,40 (default: 2,5)")
    p.add_argument("--functions", type=_int_list, default=list(range(1, 25)), metavar="1-24",
                   help="bbob function numbers (default: 1-24)")
    p.add_argument("--instances", type=_int_list, default=[1, 2, 3], metavar="1-3",
                   help="instance numbers (default: 1-3)")
    p.add_argument("--budget", type=int, default=100, metavar="K",
                   help="evaluations per problem: K times the dimension (default: 100)")
    p.add_argument("--sigma0", type=float, default=2.0,
                   help="initial search width, for every optimizer not given sigma= (default 2, "
                        "a fifth of the [-5, 5] domain, as COCO's examples)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    p.add_argument("--out", default="runs/bbob", metavar="DIR",
                   help="COCO data folders go into DIR/<optimizer> (default: runs/bbob)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """``evoopt bbob``: run, print the summary table and the cocopp command; exit code."""
    from .cliargs import UsageError

    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    try:
        result = benchmark(names, dimensions=args.dimensions, functions=args.functions,
                           instances=args.instances, budget=args.budget, out=args.out,
                           seed=args.seed, sigma0=args.sigma0, progress=args.progress)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except ImportError as e:
        print(f"evoopt bbob: {e}", file=sys.stderr)
        return 1
    print(f"bbob, d = {args.dimensions}, f{args.functions[0]}-f{args.functions[-1]} "
          f"({len(args.functions)}), instances {args.instances}, budget {args.budget} * d; "
          f"targets 10^2..10^-8 reached (percent of problem x target pairs):")
    print(result.table())
    folders = " ".join(str(f) for f in result.folders.values())
    print(f"\nCOCO data: {folders}\nECDF plots: python -m cocopp {folders}\n{archive_note()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m evoopt.bbob ...``: the ``evoopt bbob`` command without the CLI module."""
    from .cliargs import UsageError

    parser = argparse.ArgumentParser(prog="evoopt")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bbob", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except UsageError as e:
        print(f"evoopt bbob: error: {e}", file=sys.stderr)
        return 2


register = add_parser  # the name evoopt.cli's SUBCOMMANDS modules provide


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
