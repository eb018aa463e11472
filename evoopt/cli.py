"""The ``evoopt`` command.

``evoopt compare``   side-by-side runs of gradient and population optimizers on a task
                     (no arguments: a quick built-in comparison on the digits task,
                     10 optimizers x 2 seeds x 3000 evaluations, about a minute on 2 cores);
``evoopt list``      the optimizers and tasks by name;
``evoopt bench``     the scripts in ``bench/`` (or a short built-in micro-benchmark);
``evoopt train`` / ``evoopt evaluate``  Gymnasium training, provided by the ``rl``
                     package: each module of :data:`SUBCOMMANDS` is imported lazily and
                     adds its subcommands (``register(subparsers)``); it imports the
                     shared pieces from :mod:`evoopt.cliargs`, never this module.

Exit codes: 0 success, 1 runtime failure (a run raised, a benchmark failed),
2 usage error (unknown name, bad value); errors list the valid names.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .cliargs import UsageError, positive_float, positive_int, seed_list

__all__ = ["DEFAULT_OPTIMIZERS", "UsageError", "build_parser", "main"]

#: What ``evoopt compare`` runs without ``--optimizers`` (those registered are used).
DEFAULT_OPTIMIZERS = ("adam", "sgd", "sgd-momentum", "rmsprop",
                      "pgpe", "openai_es", "snes", "cem", "cmaes", "ars")
DEFAULT_TASK = "digits"

#: Modules that add subcommands (``register(subparsers)``), imported when the command line
#: is parsed, with the subcommands they provide (offered with an install hint when the
#: module cannot be imported).
SUBCOMMANDS: dict[str, tuple[str, ...]] = {
    "rl.cli": ("train", "evaluate"),
    "evoopt.bbob": ("bbob",),  # COCO's bbob suite; cocoex is imported when a run starts
}


def _split_list(text: str) -> list[str]:
    """Split ``a,b:k=v,c`` at commas that start a new optimizer (a comma followed by a
    ``key=value`` continues the previous one: ``pgpe:lr=0.1,popsize=50`` is one spec)."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if out and "=" in part and ":" not in part and ":" in out[-1]:
            out[-1] += ":" + part
        else:
            out.append(part)
    return out


# ------------------------------------------------------------------------ commands
def _parse_task(text: str):
    from .compare import parse_value
    from .tasks import get_task

    name, *items = text.split(":")
    kwargs = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"invalid task {text!r}: {item!r} is not key=value "
                             "(e.g. 'rastrigin:dim=30')")
        kwargs[key.strip()] = parse_value(value.strip())
    try:
        return get_task(name.strip(), **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_compare(args) -> int:
    import torch

    from . import OPTIMIZERS
    from .compare import ALIASES, compare, parse_optimizer

    task = _parse_task(args.task)
    if args.optimizers:
        names = _split_list(args.optimizers)
        if not names:
            raise UsageError("--optimizers is empty (expected names such as adam,pgpe)")
    else:
        # the registered ones: a checkout without some algorithm still runs the rest
        names = [n for n in DEFAULT_OPTIMIZERS if n in OPTIMIZERS or n in ALIASES]
    try:
        specs = [parse_optimizer(n) for n in names]
    except ValueError as e:
        raise UsageError(str(e)) from None
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1])
    budget_evals, budget_seconds = args.budget_evals, args.budget_seconds
    if budget_evals is None and budget_seconds is None:
        budget_evals = task.default_budget_evals
        if args.quick:
            budget_evals = max(1, budget_evals // 5)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{task.name}"
    _check_writable(out)  # before the runs, not after them
    print(f"evoopt compare: task {task.name}, optimizers {', '.join(s.label for s in specs)}, "
          f"seeds {seeds}, {args.threads or torch.get_num_threads()} thread(s)", flush=True)
    t0 = time.perf_counter()
    try:
        result = compare(task, specs, seeds, budget_evals=budget_evals,
                         budget_seconds=budget_seconds, progress=args.progress, plot=False,
                         num_threads=args.threads)
    except ValueError as e:  # bad hyperparameters for an optimizer: a usage error
        raise UsageError(str(e)) from None
    print()
    print(result.table(), flush=True)  # first: a file that cannot be written loses nothing
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            paths = result.save(out, plot=not args.no_plot)
    except OSError as e:
        print(f"evoopt compare: failed to write the results into {out}/ ({e}); the table above "
              "is all that is left of this comparison", file=sys.stderr)
        return 1
    plot_note = "".join(f" (no plots: {w.message})" for w in caught
                        if "matplotlib" in str(w.message))
    print(f"\nwall time {time.perf_counter() - t0:.1f} s; results in {out}/ "
          f"({', '.join(sorted(p.name for p in paths.values()))}){plot_note}")
    failed = [r for r in result.runs if r.status == "failed"]
    return 1 if failed else 0


def _check_writable(out: Path) -> None:
    """Create ``out`` and write a file there, or raise a UsageError saying why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".evoopt-write-check-"):
            pass
    except OSError as e:
        raise UsageError(f"--out {str(out)!r} cannot be written ({e.strerror or e}); "
                         "nothing was run (expected a folder you can write into)") from None


def cmd_list(args) -> int:
    from . import OPTIMIZERS
    from .compare import ALIASES
    from .population import PopulationOptimizer
    from .tasks import TASKS

    pop = {k: v for k, v in OPTIMIZERS.items() if issubclass(v, PopulationOptimizer)}
    grad = {k: v for k, v in OPTIMIZERS.items() if k not in pop}
    width = max(len(k) for k in list(OPTIMIZERS) + list(ALIASES) + list(TASKS)) + 2
    print("population optimizers:")
    for k, v in sorted(pop.items()):
        print(f"  {k:<{width}}{v.__module__}.{v.__qualname__}")
    print("gradient optimizers:")
    for k, v in sorted(grad.items()):
        print(f"  {k:<{width}}{v.__module__}.{v.__qualname__}")
    for k, (name, kw) in ALIASES.items():
        print(f"  {k:<{width}}{name} with {', '.join(f'{a}={b}' for a, b in kw.items())}")
    print("tasks:")
    for k, factory in TASKS.items():
        print(f"  {k:<{width}}{factory().describe()}")
    return 0


def _bench_dir(arg: str | None) -> Path | None:
    here = Path(__file__).resolve().parent.parent / "bench"
    candidates = [Path(arg)] if arg else [Path("bench"), here]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.py")):
            return c
    if arg:
        raise UsageError(f"--dir {arg!r}: no bench/*.py scripts there")
    return None


def cmd_bench(args) -> int:
    bench = _bench_dir(args.dir)
    if bench is None or args.builtin:
        return _microbench()
    scripts = sorted(p for p in bench.glob("*.py") if not p.name.startswith("_"))
    if args.names:
        by_name = {p.stem: p for p in scripts}
        unknown = [n for n in args.names if n not in by_name]
        if unknown:
            raise UsageError(f"unknown benchmark(s) {unknown} "
                             f"(expected some of: {', '.join(by_name)})")
        scripts = [by_name[n] for n in args.names]
    status = 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    for p in scripts:
        print(f"== {p.name}", flush=True)
        rc = subprocess.call([sys.executable, str(p)], env=env)
        if rc != 0:
            print(f"== {p.name} failed with exit code {rc}", flush=True)
            status = 1
    return status


def _timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def _microbench() -> int:
    """Built-in micro-benchmark (1 thread): one batched vmap call vs a per-member loop on
    the digits MLP, and each population optimizer's ask+tell overhead at D=1000."""
    import torch

    from . import OPTIMIZERS
    from .evaluation import loop_objective, vmap_objective
    from .population import ParamLayout, Population, PopulationOptimizer
    from .tasks import Digits

    torch.set_num_threads(1)
    task = Digits()
    model = task.make_model(0)
    x, y = task.data[0][:256], task.data[1][:256]
    from torch.nn.functional import cross_entropy


    lay = ParamLayout(list(model.parameters()))
    flat = lay.flatten().repeat(64, 1) + 0.01 * torch.randn(64, lay.num_params,
                                                            generator=torch.Generator().manual_seed(0))
    pop = Population(flat, lay)
    t_vmap = _timeit(lambda: vmap_objective(model, cross_entropy, x, y)(pop), 5)
    t_loop = _timeit(lambda: loop_objective(model, cross_entropy, x, y)(pop), 5)
    print(f"digits MLP (D={lay.num_params}), P=64, 256 rows: vmap {t_vmap * 1e3:.1f} ms, "
          f"loop {t_loop * 1e3:.1f} ms, loop/vmap = {t_loop / t_vmap:.2f}x")
    print("ask+tell per generation, D=1000, popsize 50 (sphere, losses given):")
    for name, cls in sorted(OPTIMIZERS.items()):
        if not issubclass(cls, PopulationOptimizer) or name in ("xnes",):
            continue
        try:
            p = torch.nn.Parameter(torch.zeros(1000))
            extra = {"diagonal": True} if "diagonal" in inspect.signature(cls).parameters else {}
            opt = cls([p], popsize=50, seed=0, **extra)

            def gen(opt=opt):
                q = opt.ask()
                opt.tell((q.flat ** 2).sum(1))

            label = name + (" (diagonal)" if extra else "")
            print(f"  {label:<18}{_timeit(gen, 20) * 1e3:8.2f} ms")
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"  {name:<18}failed: {type(e).__name__}: {e}")
    return 0


def _rl_missing(exc: ImportError):
    def fn(args) -> int:
        print(f"evoopt {args.command}: the rl package is not available ({exc}); "
              "install the RL extras: pip install 'evoopt[rl]'", file=sys.stderr)
        return 1

    return fn


def _register_subcommands(sub) -> None:
    """Let every module of :data:`SUBCOMMANDS` add its subcommands; one that cannot be
    imported (``rl`` without gymnasium) leaves commands that say how to install it."""
    for module, names in SUBCOMMANDS.items():
        try:  # lazy: gymnasium is imported only for train/evaluate
            register = importlib.import_module(module).register
        except ImportError as e:
            for name in names:
                p = sub.add_parser(name, help=f"{name} on Gymnasium (needs the rl package)")
                p.set_defaults(func=_rl_missing(e))
        else:
            register(sub)


# -------------------------------------------------------------------------- parser
def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return "unknown"
    try:
        return version("evoopt")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="evoopt", description="Evolution strategies and gradient optimizers side by side.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compare", help="run optimizers side by side on a task and print a table",
                       description="Run optimizers side by side on a task under equal budgets; "
                       "without arguments, a quick comparison on the digits task (about a minute).")
    p.add_argument("--task", default=DEFAULT_TASK,
                   help="task name, options after colons, e.g. rastrigin:dim=30 (default: digits; "
                        "see `evoopt list`)")
    p.add_argument("--optimizers", metavar="A,B,...",
                   help="comma-separated names, hyperparameters after colons, e.g. "
                        f"adam:lr=0.01,pgpe:popsize=50 (default: {','.join(DEFAULT_OPTIMIZERS)})")
    p.add_argument("--seeds", type=seed_list, metavar="0,1,2",
                   help="seeds, or a range 0-4 (default: 0,1; with --quick: 0)")
    p.add_argument("--budget-evals", type=positive_int, metavar="N",
                   help="evaluations per run (default: the task's; 1 evaluation = the training "
                        "loss of one parameter vector on the whole training set)")
    p.add_argument("--budget-seconds", type=positive_float, metavar="S",
                   help="wall time per run inside opt.step")
    p.add_argument("--out", metavar="DIR", help="output directory (default: runs/compare-<task>)")
    p.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    p.add_argument("--quick", action="store_true",
                   help="one seed and a fifth of the task's default budget (a smoke run)")
    p.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="torch threads (default: 1, fastest for these small models)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("list", help="list optimizers and tasks")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("bench", help="run the benchmarks in bench/ (or a built-in micro-benchmark)")
    p.add_argument("names", nargs="*", help="benchmark script names without .py (default: all)")
    p.add_argument("--dir", help="directory of benchmark scripts (default: ./bench)")
    p.add_argument("--builtin", action="store_true", help="run the built-in micro-benchmark")
    p.set_defaults(func=cmd_bench)
    return parser, sub


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser, sub = build_parser()
    _register_subcommands(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code or 0)
    args.argv = argv  # for messages that repeat the command line (how to resume)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"evoopt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evoopt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's edge: report and exit 1
        print(f"evoopt {args.command}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
