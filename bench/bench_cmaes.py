"""Benchmark: evoopt.CMAES per generation vs pycma driven directly, same process.

Part 1 (issue 12's overhead targets): one generation on Rosenbrock, n = 10 and n = 100,
through ``opt.step`` with a zero-argument closure (P calls, the member loaded into the
parameters) and with a population objective (one call), against pycma driven directly
with the same objective code (the same torch Rosenbrock, once per member or once on the
[P, n] array), so both sides pay the same objective and the ratio is the bridge's cost.
Targets: closure <= 1.2x and population <= 1.1x at n = 10, population <= 1.1x at n = 100.
Each ratio is the median of paired ratios: an evoopt block and a pycma block back to back.

Measured (2-core shared box, 5 runs; the spread is the box's load): n = 10 population
1.06-1.16, median 1.13 (was 1.25-1.30 before issue 12's last changes: fewer torch calls per
generation, numpy losses for pycma, record tensors made before the update, cached numpy
views in ``load_``), closure 1.16-1.25, median 1.19; n = 100 population 1.07-1.15, median
1.10.
What is left is spread thin: each first torch call after pycma's numpy work costs ~10 us
(cold caches), and the base class makes a handful (losses, the rng state, the record).

Part 2: ask + tell on the sphere at larger n (the objective is not timed).

Both sides run the same pycma code with the same options and sampler (evoopt's private
torch generator), on the sphere function, from the same state; the objective itself is
not timed. The pycma loop is the usual one: ``X = es.ask(); es.tell(X, f); es.stop()``
(evoopt calls ``es.stop()`` every generation too: restarts and ``stop_conditions`` need it).
The two are timed in alternating blocks of generations; each figure is the median CPU time
(process_time: the box is shared, wall time mostly measures the neighbours) per generation.

BLAS threads are pinned to 1 (numpy's eigendecomposition in pycma spins badly on a
loaded 2-core box otherwise), as is torch. Run: ``PYTHONPATH=. python bench/bench_cmaes.py``
(``--quick`` for fewer repeats; ``--n5000`` adds n=5000 diagonal).
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import cma  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from evoopt.algorithms.cmaes import _QUIET, CMAES  # noqa: E402


def rosen_t(x: torch.Tensor) -> torch.Tensor:
    """Rosenbrock on [..., n] tensors, the objective of part 1 (both sides)."""
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def pycma_step(n: int, mode: str, seed: int):
    """pycma driven directly: ask, the same torch objective per member (``closure``) or on
    the whole population (``population``), tell, stop."""
    g = torch.Generator()
    g.manual_seed(seed)
    opts = dict(_QUIET, randn=lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).numpy())
    es = cma.CMAEvolutionStrategy(np.full(n, 0.5), 0.1, opts)

    def gen():
        X = es.ask()
        if mode == "closure":
            f = [float(rosen_t(torch.from_numpy(x))) for x in X]
        else:
            f = rosen_t(torch.from_numpy(np.array(X))).numpy()
        es.tell(X, f)
        es.stop()

    return gen


def evoopt_step(n: int, mode: str, seed: int):
    x = torch.nn.Parameter(torch.full((n,), 0.5, dtype=torch.float64))
    opt = CMAES([x], sigma=0.1, seed=seed)
    closure = (lambda: rosen_t(x)) if mode == "closure" else (lambda pop: rosen_t(pop.flat))

    def gen():
        opt.step(closure)

    return gen


def bench_step(n: int, mode: str, k: int, repeats: int) -> tuple[float, float, float]:
    """Median us per generation of each side and the median of the paired ratios: each
    repeat times an evoopt block and a pycma block back to back (in alternating order), so
    a ratio compares two blocks under the same load. Fresh optimizers for each block: a run
    that has converged (and stopped) is not timed."""
    times, ratios = ([], []), []
    for r in range(repeats):
        pair = [None, None]
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for side in order:
            gen = (evoopt_step, pycma_step)[side](n, mode, r)
            per_gen(gen, 3)
            pair[side] = per_gen(gen, k)
            times[side].append(pair[side])
        ratios.append(pair[0] / pair[1])
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios)


def pycma_direct(n: int, diagonal: bool, seed: int):
    g = torch.Generator()
    g.manual_seed(seed)
    opts = dict(
        _QUIET,
        CMA_diagonal=diagonal,
        randn=lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).numpy(),
    )
    es = cma.CMAEvolutionStrategy(np.full(n, 1.0), 0.5, opts)

    def gen():
        X = es.ask()
        f = np.sum(np.square(X), axis=1)  # objective (not timed separately; tiny)
        es.tell(X, f)
        es.stop()

    return gen


def evoopt_cmaes(n: int, diagonal: bool, seed: int):
    x = torch.nn.Parameter(torch.full((n,), 1.0, dtype=torch.float64))
    opt = CMAES([x], sigma=0.5, diagonal=diagonal, seed=seed)

    def gen():
        pop = opt.ask()
        opt.tell((pop.flat**2).sum(-1))

    return gen


def evoopt_hooks_only(n: int, diagonal: bool, seed: int):
    """CMAES's own hooks without the base class's ask/tell bookkeeping (private API):
    separates what the pycma bridge costs from what PopulationOptimizer.tell costs."""
    x = torch.nn.Parameter(torch.full((n,), 1.0, dtype=torch.float64))
    opt = CMAES([x], sigma=0.5, diagonal=diagonal, seed=seed)

    def gen():
        st = opt._st
        flat, X = opt._sample(st, opt._gen)
        opt._update(st, (flat**2).sum(-1).numpy(), flat, X)  # numpy_update: numpy losses

    return gen


def per_gen(gen, k: int) -> float:
    t = time.process_time()
    for _ in range(k):
        gen()
    return (time.process_time() - t) / k


def bench(n: int, diagonal: bool, k: int, repeats: int) -> list[float]:
    gens = [make(n, diagonal, 0) for make in (evoopt_cmaes, evoopt_hooks_only, pycma_direct)]
    for g in gens:
        per_gen(g, 3)
    times = [[] for _ in gens]
    for _ in range(repeats):  # alternate, so drifting load hits all alike
        for g, t in zip(gens, times):
            t.append(per_gen(g, k))
    return [statistics.median(t) for t in times]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n5000", action="store_true")
    ap.add_argument("--part1", action="store_true", help="only part 1 (the overhead targets)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 7
    cases = [(100, False, 100), (1000, False, 10), (1000, True, 100)]
    if args.n5000:
        cases.append((5000, True, 30))
    print(
        f"torch {torch.__version__}, cma {cma.__version__}, "
        f"torch threads {torch.get_num_threads()}, "
        f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print("part 1: us of CPU per generation through opt.step on Rosenbrock (medians); ratio = "
          "median of paired block ratios evoopt / pycma")
    print(f"{'n':>6} {'objective':>11} {'evoopt':>9} {'pycma':>9} {'ratio':>6} {'target':>6}")
    for n, mode, target in ((10, "closure", 1.2), (10, "population", 1.1),
                            (100, "closure", None), (100, "population", 1.1)):
        ours, ref, ratio = bench_step(n, mode, 40 if n == 10 else 30, 3 * repeats)
        print(f"{n:>6} {mode:>11} {ours * 1e6:>9.1f} {ref * 1e6:>9.1f} {ratio:>6.2f} "
              f"{'' if target is None else target:>6}")
    if args.part1:
        return
    print("part 2: ms of CPU per generation (ask + tell); ratio = evoopt / pycma; 'hooks' = "
          "CMAES's bridge without the base class's tell bookkeeping")
    print(f"{'n':>6} {'mode':>9} {'evoopt':>9} {'hooks':>9} {'pycma':>9} {'ratio':>6} {'hooks':>6}")
    for n, diag, k in cases:
        ours, hooks, ref = bench(n, diag, k, repeats)
        mode = "diagonal" if diag else "full"
        print(
            f"{n:>6} {mode:>9} {ours * 1e3:>9.3f} {hooks * 1e3:>9.3f} {ref * 1e3:>9.3f} "
            f"{ours / ref:>6.2f} {hooks / ref:>6.2f}"
        )


if __name__ == "__main__":
    main()
