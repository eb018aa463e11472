"""``evoopt bbob``: a tiny run on COCO's bbob suite writes data folders that cocopp reads, and
its summary counts equal those computed here, independently, from COCO's ``.tdat`` logs."""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cocoex")

from evoopt.bbob import (  # noqa: E402
    TARGETS,
    _parse_spec,
    archive_note,
    benchmark,
    count_targets,
    main,
    read_precisions,
    solve_problem,
)

FUNCTIONS, INSTANCES, DIM, BUDGET = (1, 15), (1, 2), 2, 300  # sphere, Rastrigin; 300 d
OPTIMIZERS = ("cmaes", "pycma")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bbob")
    result = benchmark(OPTIMIZERS, dimensions=[DIM], functions=FUNCTIONS, instances=INSTANCES,
                       budget=BUDGET, out=out, seed=3, progress=False)
    return out, result


def _tdat_runs(path: Path) -> list[tuple[float, float, int]]:
    """Per run of a .tdat file (evaluation-triggered log): (f_opt from the header, the
    smallest best-f - f_opt of its records, the last evaluation count)."""
    runs = []
    for block in re.split(r"^%", path.read_text(), flags=re.M)[1:]:
        head, *rows = block.strip().splitlines()
        fopt = float(re.search(r"Fopt \(([-+0-9.e]+)\)", head).group(1))
        cols = [r.split() for r in rows if r.strip()]
        runs.append((fopt, min(float(c[2]) for c in cols), int(cols[-1][0])))
    return runs


def _independent_counts(folder: Path) -> dict[str, tuple[int, int]]:
    """Targets reached per group, from the .tdat files (runs in suite order: instances
    ascending), with the targets written as 10^(2 - 0.2 k)."""
    targets = [10 ** (2 - 0.2 * k) for k in range(51)]
    groups = {"separable": range(1, 6), "multimodal": range(15, 20), "all": range(1, 25)}
    out = {}
    for name, funs in groups.items():
        reached = total = 0
        for f in FUNCTIONS:
            if f in funs:
                for _, best, _ in _tdat_runs(folder / f"data_f{f}" / f"bbobexp_f{f}_DIM{DIM}.tdat"):
                    reached += sum(best <= t * (1 + 1e-12) for t in targets)
                    total += len(targets)
        out[name] = (reached, total)
    return out


@pytest.mark.parametrize("label", OPTIMIZERS)
def test_summary_counts_equal_those_from_the_tdat_logs(tiny, label):
    _, result = tiny
    folder = result.folders[label]
    assert result.counts[label] == _independent_counts(folder)
    r, t = result.counts[label]["all"]
    assert f"{r}/{t}" in result.table()
    assert t == 51 * len(FUNCTIONS) * len(INSTANCES)
    assert r >= 51 * len(INSTANCES)  # the sphere is solved to 1e-8 within 300 d


@pytest.mark.parametrize("label", OPTIMIZERS)
def test_runs_match_the_logs_and_respect_the_budget(tiny, label):
    _, result = tiny
    runs = result.runs[label]
    tdat = {f: _tdat_runs(result.folders[label] / f"data_f{f}" / f"bbobexp_f{f}_DIM{DIM}.tdat")
            for f in FUNCTIONS}
    assert [(r.function, r.instance) for r in runs] == [(f, i) for f in FUNCTIONS
                                                        for i in INSTANCES]
    for run in runs:
        fopt, best, evals = tdat[run.function][INSTANCES.index(run.instance)]
        # the in-process best f-value is the logged best f - f_opt plus the logged f_opt
        assert math.isclose(run.f_best - fopt, best, rel_tol=1e-6, abs_tol=1e-9 * abs(fopt))
        assert run.evaluations == evals
        solved = best <= 1e-8
        assert run.evaluations <= BUDGET * DIM
        assert solved or run.evaluations == BUDGET * DIM  # never stops early, never overshoots


def test_stopped_optimizers_are_restarted_until_the_budget_is_spent(tmp_path):
    # Rastrigin (f15), d = 2, 2000 d evaluations: CMA-ES converges to a local optimum in a few
    # hundred evaluations and stops (tolfun / tolflatfitness), so it must be restarted
    result = benchmark(OPTIMIZERS, dimensions=[2], functions=[15], instances=[1], budget=2000,
                       out=tmp_path, seed=0, progress=False)
    for label in OPTIMIZERS:
        (run,) = result.runs[label]
        assert run.restarts >= 1, label
        assert run.evaluations == 4000 or read_precisions(result.folders[label])[15, 2, 1] <= 1e-8


def test_read_precisions_and_count_targets(tiny):
    _, result = tiny
    prec = read_precisions(result.folders["pycma"])
    assert sorted(prec) == [(f, DIM, i) for f in FUNCTIONS for i in INSTANCES]
    assert count_targets({(1, 2, 1): 1e-8}) == {"separable": (51, 51), "all": (51, 51)}
    assert count_targets({(20, 2, 1): 150.0, (21, 2, 1): 1.0}) == {
        "weakly-structured": (11, 102), "all": (11, 102)}
    assert TARGETS[0] == 100.0 and TARGETS[-1] == 1e-8 and len(TARGETS) == 51


@pytest.mark.skipif(importlib.util.find_spec("cocopp") is None, reason="cocopp not installed")
def test_cocopp_reads_the_folders(tiny, tmp_path):
    _, result = tiny
    env = dict(os.environ, MPLBACKEND="Agg")
    folders = [str(result.folders[label]) for label in OPTIMIZERS]
    proc = subprocess.run([sys.executable, "-m", "cocopp", "-o", str(tmp_path), *folders],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ALL done" in proc.stdout
    assert list(tmp_path.glob("*/pprldmany_02D_noiselessall.*"))  # the ECDF over all functions


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizers=["adam"]), "adam is a gradient optimizer"),
    (dict(optimizers=["nope"]), "Unknown optimizer 'nope'"),
    (dict(dimensions=[4]), r"Invalid dimensions: \[4\] \(expected values in 2, 3, 5"),
    (dict(functions=[0, 25]), r"Invalid functions: \[0, 25\] \(expected values in 1..24\)"),
    (dict(instances=[]), r"Invalid instances: \[\]"),
    (dict(budget=0), r"Invalid budget: 0 \(expected an integer >= 1"),
    (dict(budget=2.5), r"Invalid budget: 2.5"),
])
def test_bad_input(tmp_path, kwargs, match):
    kw = dict(optimizers=["pycma"], dimensions=[2], functions=[1], instances=[1], budget=2,
              out=tmp_path)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        benchmark(kw.pop("optimizers"), **kw)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_command_line(tmp_path, capsys):
    argv = ["--optimizers", "pycma,snes:popsize=6", "--dimensions", "2", "--functions", "1,2",
            "--instances", "1", "--budget", "20", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "pycma" in lines and "snes:popsize=6" in lines
    assert "python -m cocopp" in out and archive_note() in out
    assert (tmp_path / "snes_popsize=6").is_dir() and (tmp_path / "pycma").is_dir()
    assert main(argv[:-5] + ["--budget", "0", "--no-progress"]) == 2
    assert "Invalid budget: 0" in capsys.readouterr().err


def test_the_same_seed_gives_the_same_logs_and_another_seed_others(tmp_path):
    def run(seed, out):
        result = benchmark(["pycma", "snes"], dimensions=[2], functions=[7], instances=[1, 2],
                           budget=50, out=tmp_path / out, seed=seed, progress=False)
        return {label: read_precisions(folder) for label, folder in result.folders.items()}

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert a == b
    assert a["pycma"] != c["pycma"] and a["snes"] != c["snes"]


class _Diverged:
    """A problem whose every f-value is inf (an optimizer whose members left float range):
    the stand-in for cocoex's Problem that solve_problem reads."""

    dimension, id, id_function, id_instance, final_target_hit = 2, "fake_f1_d2", 1, 1, False
    initial_solution = [0.0, 0.0]

    def __init__(self):
        self.evaluations = 0

    def __call__(self, x):
        self.evaluations += 1
        return math.inf


@pytest.mark.parametrize("name", ["snes", "cmaes", "pycma"])
def test_a_generation_with_no_finite_value_ends_the_start_and_is_counted(name):
    run = solve_problem(_Diverged(), _parse_spec(name), 60, sigma0=2.0, seed=0)
    assert run.evaluations == 60 and run.nonfinite == 60 and run.f_best == math.inf
    popsize = {"snes": 6, "cmaes": 6, "pycma": 6}[name]  # 4 + floor(3 ln 2), rounded up even
    assert run.restarts == 60 // popsize - 1  # every start ended after its first generation
