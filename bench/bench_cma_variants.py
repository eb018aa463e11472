"""Benchmark: time per generation (ask + tell, default popsize) of evoopt's native torch
sep-CMA-ES, LM-MA-ES and CR-FM-NES against pycma's full CMA-ES and its ``CMA_diagonal`` mode,
at D = 100, 1,000, 10,000 and 100,000 on the CPU, with the ratios, in one run.

Every optimizer starts from ``ones(D)`` with sigma 0.1 on the sphere; the objective is
computed outside the timed region (only ask and tell are timed), in float64 on both sides
(pycma's numpy arrays; the torch optimizers with float64 parameters, ``--dtype float32``
for the large-D setting). pycma samples from a private numpy generator and writes no files.
pycma's full CMA-ES keeps D x D matrices and an eigendecomposition: it is skipped for
D >= 10,000 (800 MB per matrix at 10,000 and minutes per decomposition; the table says so).

Each figure is the median over timed generations (at least ``--gens`` and about
``--seconds`` each) of the CPU time (``time.process_time``: the box is shared, wall time
would mostly measure the neighbours), after 2 warm-up generations. torch and the BLAS are
pinned to one thread. On a CUDA device, :func:`time_native` times with synchronised wall
clocks (``bench/gpu_check.py`` calls it).

    PYTHONPATH=. python bench/bench_cma_variants.py [--dims 100,1000] [--dtype float32]
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evoopt.algorithms.cr_fm_nes import CRFMNES  # noqa: E402
from evoopt.algorithms.lm_ma_es import LMMAES  # noqa: E402
from evoopt.algorithms.sep_cma import SepCMAES  # noqa: E402

NATIVE = {"sep-CMA-ES": SepCMAES, "LM-MA-ES": LMMAES, "CR-FM-NES": CRFMNES}
FULL_MAX_D = 5_000  # pycma's full CMA-ES above this: skipped


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def time_native(name: str, D: int, device="cpu", dtype=torch.float64, gens: int = 5,
                seconds: float = 1.0) -> tuple[float, int]:
    """Median seconds of ask + tell per generation of ``NATIVE[name]`` at dimension ``D``,
    and its popsize (the sphere's losses are computed outside the timed region)."""
    device = torch.device(device)
    x = torch.nn.Parameter(torch.ones(D, device=device, dtype=dtype))
    opt = NATIVE[name]([x], sigma=0.1, seed=0)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < gens + 2 or (time.perf_counter() - start < seconds and len(times) < 200):
        t0 = _clock(device)
        pop = opt.ask()
        t1 = _clock(device)
        losses = (pop.flat.double() ** 2).sum(-1).cpu()
        t2 = _clock(device)
        opt.tell(losses)
        times.append(t1 - t0 + _clock(device) - t2)
    return statistics.median(times[2:]), opt.popsize


def time_pycma(D: int, diagonal: bool, gens: int = 5, seconds: float = 1.0) -> tuple[float, int]:
    """Median CPU seconds of pycma's ``ask`` + ``tell`` per generation at dimension ``D``."""
    import cma

    rng = np.random.default_rng(0)
    opts = {"CMA_diagonal": diagonal, "verbose": -9, "verb_log": 0, "verb_disp": 0,
            "randn": lambda *shape: rng.standard_normal(shape)}
    es = cma.CMAEvolutionStrategy(np.ones(D), 0.1, opts)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < gens + 2 or (time.perf_counter() - start < seconds and len(times) < 200):
        t0 = time.process_time()
        X = es.ask()
        t1 = time.process_time()
        f = (np.asarray(X) ** 2).sum(1).tolist()
        t2 = time.process_time()
        es.tell(X, f)
        times.append(t1 - t0 + time.process_time() - t2)
    return statistics.median(times[2:]), es.popsize


def _ms(t: float | None) -> str:
    return "skipped" if t is None else f"{1e3 * t:.3g}"


def _ratio(a: float | None, b: float) -> str:
    return "-" if a is None else f"{a / b:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="100,1000,10000,100000")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--gens", type=int, default=5, help="timed generations, at least")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per figure, about")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    print(f"ms per generation (ask + tell, CPU time, 1 thread), torch {args.dtype}; "
          f"pycma full CMA-ES skipped above D = {FULL_MAX_D}")
    head = ["D", "P", "sep-CMA", "LM-MA-ES", "CR-FM-NES", "pycma diag", "pycma full",
            "diag/sep", "full/sep", "diag/LM", "diag/CRFM"]
    print("  ".join(f"{h:>10}" for h in head))
    for D in (int(d) for d in args.dims.split(",")):
        sep, P = time_native("sep-CMA-ES", D, dtype=dtype, gens=args.gens, seconds=args.seconds)
        lm, _ = time_native("LM-MA-ES", D, dtype=dtype, gens=args.gens, seconds=args.seconds)
        cr, _ = time_native("CR-FM-NES", D, dtype=dtype, gens=args.gens, seconds=args.seconds)
        diag, _ = time_pycma(D, True, args.gens, args.seconds)
        full = time_pycma(D, False, args.gens, args.seconds)[0] if D <= FULL_MAX_D else None
        row = [str(D), str(P), _ms(sep), _ms(lm), _ms(cr), _ms(diag), _ms(full),
               _ratio(diag, sep), _ratio(full, sep), _ratio(diag, lm), _ratio(diag, cr)]
        print("  ".join(f"{c:>10}" for c in row), flush=True)


if __name__ == "__main__":
    main()
