"""Per-generation overhead of OpenAI-ES and PGPE against the plain-torch floor.

The floor is what any mirrored ES must do at least: draw the half noise [P/2, D] with a
torch.Generator and form the weighted sum ``w @ eps``; PGPE must also form the stdev sum
``a @ eps**2``, so it gets a second floor with that added. "ours" is one ``ask`` (which
must also return the [P, D] population) plus one ``tell`` (shaping, gradient estimates,
the inner optimizer's step) with precomputed losses, so only optimizer overhead is timed.
Each floor comes plain (``torch.randn`` into a fresh tensor, as one would write it) and
strict (into a preallocated buffer: no fresh pages, which on CPU cost about as much as
the draw itself).

    python bench/bench_es_overhead.py [--dim 1000000 --popsize 256 --repeats 5 --threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import evoopt


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=1_000_000)
    ap.add_argument("--popsize", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    D, P, H = args.dim, args.popsize, args.popsize // 2

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(H, generator=gen)
    losses = torch.randn(P, generator=gen)
    strict_buf = torch.empty(H, D)

    def floor_plain():
        eps = torch.randn(H, D, generator=gen)
        return w @ eps

    def floor_strict():
        torch.randn(H, D, generator=gen, out=strict_buf)
        return w @ strict_buf

    def floor_pgpe_plain():
        eps = torch.randn(H, D, generator=gen)
        return w @ eps, w @ eps.square()

    def floor_pgpe_strict():
        torch.randn(H, D, generator=gen, out=strict_buf)
        g = w @ strict_buf
        return g, w @ strict_buf.square_()

    x_es = torch.nn.Parameter(torch.zeros(D))
    x_pgpe = torch.nn.Parameter(torch.zeros(D))
    algos = {
        "OpenAI-ES (Adam)": evoopt.OpenAIES([x_es], popsize=P, seed=0),
        "PGPE (ClipUp)": evoopt.PGPE([x_pgpe], popsize=P, seed=0),
    }

    def generation(opt):
        def run():
            pop = opt.ask()
            opt.tell(losses)
            del pop

        return run

    runs = {
        "floor (plain)": floor_plain,
        "floor (strict)": floor_strict,
        "PGPE floor (plain)": floor_pgpe_plain,
        "PGPE floor (strict)": floor_pgpe_strict,
    }
    runs.update({name: generation(opt) for name, opt in algos.items()})
    for fn in runs.values():  # warm up: allocations, lazy state
        fn()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so load changes hit all alike
        for name, fn in runs.items():
            times[name].append(timed(fn))

    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"D={D:,} popsize={P} threads={args.threads} repeats={args.repeats} "
        "(median s per generation)"
    )
    for name in runs:
        print(f"  {name:<20} {med[name]:8.3f} s   (min {min(times[name]):.3f})")
    low = {name: min(t) for name, t in times.items()}
    print("  ratios (of medians; of minima, the least disturbed runs on a shared machine):")
    for name, prefix in (
        ("OpenAI-ES (Adam)", ""),
        ("PGPE (ClipUp)", ""),
        ("PGPE (ClipUp)", "PGPE "),
    ):
        plain, strict = prefix + "floor (plain)", prefix + "floor (strict)"
        print(
            f"  {name:<17} vs {prefix}floor: plain {med[name] / med[plain]:.2f}x; "
            f"{low[name] / low[plain]:.2f}x   strict {med[name] / med[strict]:.2f}x; "
            f"{low[name] / low[strict]:.2f}x"
        )


if __name__ == "__main__":
    main()
