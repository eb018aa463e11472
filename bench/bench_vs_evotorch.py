"""Population evaluation: evoopt.vmap_objective vs EvoTorch 0.6, same model, data and P.

What is timed (one process, ``torch.set_num_threads`` pinned, best of ``--repeats``
rounds that interleave the contenders, in process CPU time with ``--threads 1`` -- robust
to other processes' load -- or wall time with ``--clock wall``):
the evaluation of ONE generation -- P parameter vectors in, P losses out -- and
nothing else: no sampling, no distribution update, no data loading.

- **evoopt**: ``objective(pop)`` with ``objective = evoopt.vmap_objective(model,
  F.cross_entropy, x, y)`` and ``pop`` an ``evoopt.Population`` over the [P, D] matrix;
  also with ``chunk_size=32`` (members per vectorized call), which on CPU keeps a conv
  net's [rows, chunk*C, H, W] activations small enough for the caches.
- **EvoTorch SupervisedNE** (its supervised neuroevolution problem, the documented
  route): ``problem.evaluate(batch)`` on a ``SolutionBatch`` holding the same [P, D]
  matrix, with ``num_minibatches=1`` and ``num_actors=None`` (in-process). It loads each
  solution into the network and runs the forward pass, one solution after another.
  ``get_minibatch`` is overridden to return the same fixed ``(x, y)`` tensors, so the
  DataLoader's shuffling and collation are NOT timed (they would only add to its time).
- **EvoTorch functional**: EvoTorch's own flat-parameter functional wrapper
  ``evotorch.neuroevolution.net.make_functional_module(model)`` under
  ``torch.func.vmap`` (what an EvoTorch user writes for a vectorized fitness
  function): ``vmap(lambda w: F.cross_entropy(fnet(w, x), y))(flat)``.

All three compute the same numbers (checked to 1e-5 before timing). EvoTorch gets a
deep copy of the model because SupervisedNE writes solutions into the network it
is given. Two models, both plain ``nn.Sequential`` nets that evoopt evaluates without
vmap (``evoopt/_fastpath.py``: batched matmuls; for the CNN one im2col GEMM for the
shared input's convolution and channels_last pooling), each at a small minibatch (32
rows: per-member Python overhead dominates) and a large one (256 rows: arithmetic
dominates). Measured on the 2-core dev box (--threads 1): MLP 25.4x / 7.0x faster than
SupervisedNE and 1.7x / 2.6x faster than its functional vmap (32 / 256 rows); CNN
17.9x / 9.2x and 4.5x / 13.2x (target >= 1.5x).

    PYTHONPATH=. python bench/bench_vs_evotorch.py [--threads 1] [--popsize 256] [--rows 32 256]
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import evoopt
from evoopt.population import ParamLayout, Population

#: The timer: with --threads 1 process CPU time, which other processes' load on a shared
#: machine does not inflate (all of torch's work runs on this one thread); wall time with
#: more threads (CPU time would add the threads up) or with --clock wall.
CLOCK = time.process_time


def race(fns: dict, number: int, repeats: int) -> dict:
    """Best mean seconds per call of each function, rounds interleaved across functions."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = CLOCK()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (CLOCK() - t0) / number)
    return best


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def compare(name: str, model: nn.Module, P: int, rows: int, repeats: int, chunk_size: int) -> None:
    from evotorch.neuroevolution import SupervisedNE
    from evotorch.neuroevolution.net import make_functional_module

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(rows, 64, generator=g), torch.randint(0, 10, (rows,), generator=g)
    layout = ParamLayout(list(model.parameters()))
    flat = layout.flatten()[None] + 0.05 * torch.randn(P, layout.num_params, generator=g)

    # evoopt, default and chunked (chunk_size keeps the [rows, chunk*C, H, W] activations of
    # a conv net small enough for the caches; the MLP path chunks by itself)
    objective = evoopt.vmap_objective(model, F.cross_entropy, x, y)
    chunked = evoopt.vmap_objective(model, F.cross_entropy, x, y, chunk_size=chunk_size)
    pop = Population(flat, layout)

    # EvoTorch SupervisedNE, fed the same fixed minibatch every generation
    class FixedBatchNE(SupervisedNE):
        def get_minibatch(self):
            return [x, y]

    problem = FixedBatchNE(TensorDataset(x, y), copy.deepcopy(model), F.cross_entropy,
                           minibatch_size=rows, num_minibatches=1, device="cpu")
    batch = problem.generate_batch(P)
    batch.set_values(flat.clone())

    def evotorch_ne():
        problem.evaluate(batch)
        return batch.evals[:, 0]

    # EvoTorch functional wrapper + torch.func.vmap
    fnet = make_functional_module(copy.deepcopy(model))
    fitness = torch.func.vmap(lambda w: F.cross_entropy(fnet(w, x), y))

    with torch.no_grad():
        ours = objective(pop)
        for theirs in (evotorch_ne(), fitness(flat)):
            err = float((torch.as_tensor(theirs) - ours).abs().max())
            assert err < 1e-5, f"results differ by {err}"
        t = race({"ours": lambda: objective(pop), "chunked": lambda: chunked(pop),
                  "ne": evotorch_ne, "func": lambda: fitness(flat)}, number=2, repeats=repeats)
    print(f"\n{name}: D={layout.num_params}, P={P}, {rows} rows of data, cross-entropy")
    print(f"  evoopt.vmap_objective                 {t['ours'] * 1e3:8.2f} ms")
    print(f"  {f'evoopt.vmap_objective(chunk_size={chunk_size})':37s} {t['chunked'] * 1e3:8.2f} ms")
    print(f"  EvoTorch SupervisedNE.evaluate        {t['ne'] * 1e3:8.2f} ms   ours is "
          f"{t['ne'] / t['ours']:5.1f}x faster ({t['ne'] / t['chunked']:.1f}x chunked) "
          f"(target >= 1.5x)")
    print(f"  EvoTorch make_functional_module+vmap  {t['func'] * 1e3:8.2f} ms   ours is "
          f"{t['func'] / t['ours']:5.1f}x faster ({t['func'] / t['chunked']:.1f}x chunked)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--popsize", type=int, default=256)
    ap.add_argument("--rows", type=int, nargs="+", default=[32, 256],
                    help="minibatch sizes (rows of data per generation) to compare at")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk-size", type=int, default=32, help="for the chunked evoopt line")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None,
                    help="process CPU time (robust to other processes' load; the default with "
                         "--threads 1) or wall time (the default with more threads)")
    args = ap.parse_args()
    global CLOCK
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    CLOCK = time.process_time if clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    import evotorch

    logging.getLogger("evotorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="evotorch")

    print(f"torch {torch.__version__}, evotorch {evotorch.__version__}, "
          f"threads={torch.get_num_threads()}")
    for rows in args.rows:
        for name, make in (("MLP 64-64-64-10", mlp), ("CNN conv3x3(8)-maxpool-linear", cnn)):
            torch.manual_seed(0)
            compare(name, make(), args.popsize, rows, args.repeats, args.chunk_size)


if __name__ == "__main__":
    main()
