"""Low-rank ES (EGGROLL) against inference and against dense OpenAI-ES, one process per row.

(a) Throughput of one generation divided by plain inference. Model: an MLP of three tanh
    layers ``w -> w -> w -> w`` (``3 w^2`` parameters: about 1M, 10M and 50M for w = 577,
    1826, 4082), P members (default 256), each evaluated on B rows (default 8) of a
    shared batch with a mean-squared loss. A generation is ``ask`` + evaluation
    (:func:`evoopt.vmap_objective`) + ``tell`` (the estimate and Adam's step); inference is
    the center model's forward on the same ``P * B`` rows under ``no_grad``. The ratio
    ``inference time / generation time`` is the generation's throughput as a fraction of
    inference's (1.0 = an ES generation costs one forward pass). Rows: low rank r = 1 and
    r = 4, and dense OpenAI-ES (evoopt's current dense path: a ``[P, D]`` population and
    the batched-matmul forward) where ``P * D`` floats fit in ``--max-dense-gb``. Each row
    runs in its own process, so its peak resident memory (``ru_maxrss``) is its own.

(b) The charlm task (``evoopt.tasks.CharLM``): held-out loss after the same CPU time for
    Adam, dense OpenAI-ES and low-rank OpenAI-ES (the task's hyperparameters).

Times are process CPU time with one thread (robust to other processes' load on a shared
machine; ``torch.set_num_threads`` pinned by ``--threads``), best of ``--repeats`` after a
warm-up generation.

    PYTHONPATH=. python bench/bench_lowrank.py [--sizes 1e6,1e7,5e7] [--rows 8]
        [--fused-adam] [--charlm-seconds 30] [--charlm-size tiny]

The inner optimizer's step is a fixed O(D) cost per generation: torch's default Adam on CPU
(a for-loop over the parameters) measured 0.11 s per step at 10M parameters (1 thread),
``Adam(fused=True)`` 0.018 s; ``--fused-adam`` passes the latter as ``optimizer=``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch
from torch import nn

CLOCK = time.process_time


def mlp(num_params: float) -> nn.Sequential:
    w = round(math.sqrt(num_params / 3))
    layers = []
    for _ in range(3):
        layers += [nn.Linear(w, w), nn.Tanh()]
    return nn.Sequential(*layers)


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t = CLOCK()
        fn()
        best = min(best, CLOCK() - t)
    return best


def one_row(kind: str, num_params: float, popsize: int, rows: int, repeats: int,
            fused: bool) -> dict:
    """One configuration, in this process: seconds per generation and per inference."""
    import functools

    import evoopt

    torch.manual_seed(0)
    model = mlp(num_params)
    D = sum(p.numel() for p in model.parameters())
    w = model[0].in_features
    x = torch.randn(rows, w)
    rank = None if kind == "dense" else int(kind[1:])
    inner = functools.partial(torch.optim.Adam, fused=True) if fused else torch.optim.Adam
    opt = evoopt.OpenAIES(model.parameters(), popsize=popsize, rank=rank, seed=0, optimizer=inner)
    objective = evoopt.vmap_objective(model, lambda out: out.pow(2).mean(), x,
                                      num_model_inputs=1)
    big = x.repeat(popsize, 1)

    def generation():
        opt.step(objective)

    def inference():
        with torch.no_grad():
            model(big)

    gen = _best(generation, repeats)
    inf = _best(inference, repeats)
    return {"kind": kind, "D": D, "generation_s": gen, "inference_s": inf,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def throughput_table(args) -> None:
    print(f"(a) one generation vs inference on P*B = {args.popsize}*{args.rows} rows, "
          f"{args.threads} thread(s), best of {args.repeats}, inner optimizer "
          f"{'Adam(fused=True)' if args.fused_adam else 'Adam (torch default: for-loop on CPU)'}")
    print(f"{'params':>8}  {'method':<10}  {'gen s':>8}  {'infer s':>8}  {'ratio':>6}  peak GB")
    for size in args.sizes:
        for kind in ("r1", "r4", "dense"):
            dense_gb = 1.5 * args.popsize * size * 4 / 2**30  # population + half noise
            if kind == "dense" and dense_gb > args.max_dense_gb:
                print(f"{size:>8.0e}  {'dense':<10}  (a [P, D] population needs about "
                      f"{dense_gb:.0f} GB > --max-dense-gb {args.max_dense_gb})")
                continue
            cmd = [sys.executable, __file__, "--one", kind, "--sizes", str(size), "--popsize",
                   str(args.popsize), "--rows", str(args.rows), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)] + ["--fused-adam"] * args.fused_adam
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                print(f"{size:>8.0e}  {kind:<10}  FAILED: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            name = "dense" if kind == "dense" else f"low rank {kind[1:]}"
            print(f"{r['D']:>8.2e}  {name:<10}  {r['generation_s']:>8.3f}  "
                  f"{r['inference_s']:>8.3f}  {r['inference_s'] / r['generation_s']:>6.2f}  "
                  f"{r['peak_rss_gb']:.2f}", flush=True)


def charlm_table(args) -> None:
    import evoopt
    from evoopt.tasks import get_task

    task = get_task("charlm", size=args.charlm_size)
    print(f"\n(b) charlm size={args.charlm_size}: held-out loss (nats/char) after "
          f"{args.charlm_seconds:g} s of CPU time; unigram baseline {task.data[4]:.3f}")
    hp = task.hyperparameters
    runs = {"adam": None, "openai_es (dense)": None, "openai_es rank=1": 1,
            "openai_es rank=4": 4}
    for name, rank in runs.items():
        model = task.make_model(0)
        if name == "adam":
            opt = torch.optim.Adam(model.parameters(), **hp["adam"])
            step = task.closure(model, opt)
        else:
            opt = evoopt.OpenAIES(model.parameters(), rank=rank, seed=0, **hp["openai_es"])
            step = task.population_objective(model)
        t, n = CLOCK(), 0
        while CLOCK() - t < args.charlm_seconds:
            opt.step(step)
            n += 1
        m = task.metrics(model)
        print(f"  {name:<18} test_loss {m['test_loss']:.3f}  ({n} steps, "
              f"{sum(p.numel() for p in model.parameters())} parameters)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7,5e7",
                    type=lambda s: [float(v) for v in s.split(",") if v])
    ap.add_argument("--popsize", type=int, default=256)
    ap.add_argument("--rows", type=int, default=8, help="rows per member (B)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-dense-gb", type=float, default=4.0)
    ap.add_argument("--fused-adam", action="store_true",
                    help="inner Adam(fused=True): 6x faster per step on CPU than the default")
    ap.add_argument("--charlm-seconds", type=float, default=30.0, help="0: skip (b)")
    ap.add_argument("--charlm-size", default="tiny")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one row of (a)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one_row(args.one, args.sizes[0], args.popsize, args.rows, args.repeats,
                                 args.fused_adam)))
        return
    if args.sizes:
        throughput_table(args)
    if args.charlm_seconds > 0:
        charlm_table(args)


if __name__ == "__main__":
    main()
