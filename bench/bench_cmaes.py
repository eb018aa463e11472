"""Benchmark: evoopt.CMAES ask+tell per generation vs pycma driven directly, same process.

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

import numpy as np  # noqa: E402
import torch  # noqa: E402

import cma  # noqa: E402
from evoopt.algorithms.cmaes import _QUIET, CMAES  # noqa: E402


def pycma_direct(n: int, diagonal: bool, seed: int):
    g = torch.Generator()
    g.manual_seed(seed)
    opts = dict(_QUIET, CMA_diagonal=diagonal,
                randn=lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).numpy())
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


def per_gen(gen, k: int) -> float:
    t = time.process_time()
    for _ in range(k):
        gen()
    return (time.process_time() - t) / k


def bench(n: int, diagonal: bool, k: int, repeats: int) -> tuple[float, float]:
    ours, ref = evoopt_cmaes(n, diagonal, 0), pycma_direct(n, diagonal, 0)
    per_gen(ours, 3)
    per_gen(ref, 3)
    a, b = [], []
    for _ in range(repeats):  # alternate, so drifting load hits both alike
        a.append(per_gen(ours, k))
        b.append(per_gen(ref, k))
    return statistics.median(a), statistics.median(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n5000", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 7
    cases = [(100, False, 100), (1000, False, 10), (1000, True, 100)]
    if args.n5000:
        cases.append((5000, True, 30))
    print(f"torch {torch.__version__}, cma {cma.__version__}, torch threads {torch.get_num_threads()}, "
          f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}")
    print(f"{'n':>6} {'mode':>9} {'evoopt ms':>10} {'pycma ms':>10} {'ratio':>6}")
    for n, diag, k in cases:
        ours, ref = bench(n, diag, k, repeats)
        mode = "diagonal" if diag else "full"
        print(f"{n:>6} {mode:>9} {ours * 1e3:>10.3f} {ref * 1e3:>10.3f} {ours / ref:>6.2f}")


if __name__ == "__main__":
    main()
