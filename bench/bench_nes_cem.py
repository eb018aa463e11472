"""SNES, XNES and CEM against EvoTorch 0.6's implementations of the same algorithms.

Two measurements, in one process with ``torch.set_num_threads`` pinned:

1. **Time per generation** (ask, evaluate, tell) on a vectorized Sphere, best of
   ``--repeats`` rounds of ``--gens`` generations (a tenth of that for the big cases),
   rounds interleaved so that load from other processes hits both alike. Ours:
   ``opt.step(objective)``; EvoTorch: ``searcher.step()`` on a vectorized ``Problem`` with
   the same objective. Our SNES/CEM draw the noise into a buffer kept between generations.
2. **Quality** at a fixed budget, D = 10: median over seeds of f(center) on Sphere (start
   3 * ones, sigma 1) and Rosenbrock (start 0, sigma 0.5), both with the paper's defaults
   (popsize 4 + floor(3 ln D), NES utilities, Table 1 learning rates). EvoTorch is seeded
   through the global RNG (its own convention); ours through ``seed=``. The two draw
   different noise, so only the medians are comparable.

ARS has no EvoTorch counterpart and is left out. CEM differs in its defaults (EvoTorch's
CEM has no smoothing and no extra noise; both use equal weights over the elite), so it
is timed, not compared for quality.

    PYTHONPATH=. python bench/bench_nes_cem.py [--threads 1] [--repeats 3] [--seeds 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import torch

import evoopt


def sphere(x):
    return (x**2).sum(-1)


def rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def ours(name, D, fn, x0, sigma, seed, popsize=None, **kw):
    p = torch.nn.Parameter(torch.full((D,), x0))
    cls = {"snes": evoopt.SNES, "xnes": evoopt.XNES, "cem": evoopt.CEM}[name]
    opt = cls([p], sigma=sigma, seed=seed, **({"popsize": popsize} if popsize else {}), **kw)
    return opt, (lambda: opt.step(lambda pop: fn(pop.flat))), (lambda: opt.mean)


def theirs(name, D, fn, x0, sigma, seed, popsize=None):
    from evotorch import Problem
    from evotorch.algorithms import CEM, SNES, XNES

    torch.manual_seed(seed)
    prob = Problem("min", fn, solution_length=D, initial_bounds=(-1, 1), vectorized=True)
    kw = dict(stdev_init=sigma, center_init=torch.full((D,), x0))
    if name == "cem":
        s = CEM(prob, popsize=popsize, parenthood_ratio=0.2, **kw)
    else:
        s = {"snes": SNES, "xnes": XNES}[name](prob, popsize=popsize, **kw)
    return s, s.step, (lambda: torch.as_tensor(s.status["center"]))


def race(fns: dict, gens: int, repeats: int) -> dict:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, step in fns.items():
            t0 = time.perf_counter()
            for _ in range(gens):
                step()
            best[key] = min(best[key], (time.perf_counter() - t0) / gens)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gens", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("evotorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    print(f"time per generation (ask + Sphere + tell), float32, {args.threads} thread(s)")
    for name, D, P in [
        ("snes", 1000, 100),
        ("snes", 100_000, 100),
        ("cem", 1000, 100),
        ("cem", 100_000, 100),
        ("xnes", 100, 20),
        ("xnes", 500, 20),
    ]:
        _, a, _ = ours(name, D, sphere, 1.0, 0.1, 0, popsize=P)
        _, b, _ = theirs(name, D, sphere, 1.0, 0.1, 0, popsize=P)
        gens = (
            args.gens if D * D <= 1e6 or name != "xnes" and D <= 1000 else max(3, args.gens // 10)
        )
        t = race({"ours": a, "evotorch": b}, gens, args.repeats)
        print(
            f"  {name:5s} D={D:>6} P={P:>3}: ours {t['ours'] * 1e3:8.2f} ms   evotorch "
            f"{t['evotorch'] * 1e3:8.2f} ms   ours is {t['evotorch'] / t['ours']:5.1f}x faster"
        )

    print(f"\nquality at a fixed budget, D=10, paper defaults, median of {args.seeds} seeds")
    for fn, x0, sigma, budget in [(sphere, 3.0, 1.0, 2000), (rosenbrock, 0.0, 0.5, 20_000)]:
        for name in ("snes", "xnes"):
            vals = {}
            for who, make in (("ours", ours), ("evotorch", theirs)):
                res = []
                for seed in range(args.seeds):
                    _, step, center = make(name, 10, fn, x0, sigma, seed)
                    for _ in range(budget // 10):  # popsize 10 = 4 + floor(3 ln 10)
                        step()
                    res.append(float(fn(center().double())))
                vals[who] = statistics.median(res)
            print(
                f"  {name:5s} {fn.__name__:10s} {budget:>6} evals: f(center) ours "
                f"{vals['ours']:9.3g}   evotorch {vals['evotorch']:9.3g}"
            )


if __name__ == "__main__":
    main()
