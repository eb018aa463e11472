"""Population forward pass: evoopt.batched_forward vs per-member evaluation, one process.

Model: the MLP obs_dim -> 64 -> 64 -> act_dim with tanh (default 17 -> 64 -> 64 -> 6, a
HalfCheetah policy), P members (default 256) drawn around the model's parameters.

(a) RL regime, one observation per member (``per_member_inputs=True``, obs [P, 17]):
    - ``batched_forward`` (evoopt: batched-matmul path for Sequential MLPs);
    - ``torch.func.vmap`` over ``functional_call`` (the generic path evoopt takes for
      any other model), timed directly;
    - a hand-written ``baddbmm`` MLP (the reference for the best one can do by hand);
    - the per-member Python loop a zero-argument closure amounts to: copy member i into
      the model's parameters in place, call ``model(obs[i])`` (and, for reference, a
      loop of ``functional_call`` per member).
    Printed: microseconds per population forward and the speed-up over the loop.

(b) Shared batch of B rows (default 256; supervised regime): every member sees the
    same [B, 17] input. FLOP/s of ``batched_forward`` (2 * P * B * sum(in*out) FLOPs,
    activations not counted) against (i) one dense square matmul with the same FLOPs
    and (ii) the same MLP run densely as ONE model on P*B rows (same FLOPs and the same
    activations; the best batching could do). Ratios > 0.5 mean the batched forward runs
    at more than half the dense matmul rate. Measured: 0.37-0.38 with tanh, 0.43-0.47 with relu
    (target 0.5). With 64-wide layers each output element costs 64 multiply-adds, so
    the elementwise passes weigh as much as the products: in isolation the three
    products take 5.9 ms (L2's bmm runs at the dense rate, 141 GFLOP/s; the 6-wide
    output layer at 45), the two tanh passes 2.7 ms and the bias adds 1.0 ms, against
    5.1 ms for the dense matmul -- 0.53 at best with no overhead at all. Fusing the bias
    into the GEMM (a column of ones), oneDNN's fused linear/convolution+tanh and a
    transposed output layer were tried and measured no faster.

(c) Chunking of vmap over functional_call (evoopt's generic path) for a small CNN on the
    shared batch: vmap's own ``chunk_size`` against a Python loop over slices of the
    members, and no chunking; and ``batched_forward``, which takes the Sequential fast path
    for this CNN (grouped convolutions, channels_last pooling, cache-sized chunks).

Every figure is the best of ``--repeats`` timing rounds, interleaved across the variants,
after a warm-up, in process CPU time with ``--threads 1`` (the default; robust to load
from other processes on a shared machine) or wall time (``--clock wall``, or more threads);
``torch.set_num_threads`` is pinned (``--threads``).

    PYTHONPATH=. python bench/bench_population_forward.py [--threads 1] [--popsize 256]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from torch.func import functional_call, vmap

from evoopt import batched_forward
from evoopt.population import ParamLayout, Population

#: The timer: with --threads 1 process CPU time, which other processes' load on a shared
#: machine does not inflate (all of torch's work runs on this one thread); wall time with
#: more threads (CPU time would add the threads up) or with --clock wall.
CLOCK = time.process_time


def race(fns: dict, number: int, repeats: int) -> dict:
    """Best mean seconds per call of each function. The rounds interleave the functions
    (a, b, c, a, b, c, ...) so that load from other processes hits all of them alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            n = number[name] if isinstance(number, dict) else number
            t0 = CLOCK()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (CLOCK() - t0) / n)
    return best


def make_mlp(obs_dim: int, act_dim: int, hidden: int = 64,
             activation: str = "tanh") -> nn.Sequential:
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    return nn.Sequential(nn.Linear(obs_dim, hidden), act(), nn.Linear(hidden, hidden), act(),
                         nn.Linear(hidden, act_dim))


def baddbmm_mlp(W: list[torch.Tensor], obs: torch.Tensor, act=torch.tanh) -> torch.Tensor:
    """The same MLP by hand for one observation per member: obs [P, in] -> [P, out]."""
    h = obs.unsqueeze(1)
    h = act(torch.baddbmm(W[1].unsqueeze(1), h, W[0].transpose(1, 2)))
    h = act(torch.baddbmm(W[3].unsqueeze(1), h, W[2].transpose(1, 2)))
    return torch.baddbmm(W[5].unsqueeze(1), h, W[4].transpose(1, 2)).squeeze(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--popsize", type=int, default=256)
    ap.add_argument("--obs-dim", type=int, default=17)
    ap.add_argument("--act-dim", type=int, default=6)
    ap.add_argument("--batch", type=int, default=256, help="rows of the shared batch in (b)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--activation", choices=["tanh", "relu"], default="tanh",
                    help="hidden activation (tanh alone costs ~1.3 ns per element on CPU: about "
                         "as much as the matmuls of (b))")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None,
                    help="process CPU time (robust to other processes' load; the default with "
                         "--threads 1) or wall time (the default with more threads)")
    args = ap.parse_args()
    global CLOCK
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    CLOCK = time.process_time if clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    P = args.popsize

    model = make_mlp(args.obs_dim, args.act_dim, activation=args.activation)
    layout = ParamLayout(list(model.parameters()))
    pop = Population(layout.flatten()[None] + 0.05 * torch.randn(P, layout.num_params), layout)
    params = dict(zip([n for n, _ in model.named_parameters()], pop.tensors()))
    W = pop.tensors()
    act = {"tanh": torch.tanh, "relu": torch.relu}[args.activation]
    obs = torch.randn(P, args.obs_dim)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, P={P}, "
          f"MLP {args.obs_dim}->64->64->{args.act_dim}, {args.activation} (D={layout.num_params})")

    # ---------------------------------------------------------------- (a) RL regime
    loop_model = copy.deepcopy(model)
    loop_layout = ParamLayout(list(loop_model.parameters()))
    generic = vmap(lambda p, x: functional_call(model, p, (x,)), in_dims=(0, 0))

    def member_loop():
        out = []
        for i in range(P):
            loop_layout.load_(pop.flat[i])
            out.append(loop_model(obs[i]))
        return torch.stack(out)

    def functional_loop():
        return torch.stack([functional_call(model, {k: v[i] for k, v in params.items()}, (obs[i],))
                            for i in range(P)])

    with torch.no_grad():
        ref = member_loop()
        for fn in (lambda: batched_forward(model, pop, obs, per_member_inputs=True),
                   lambda: generic(params, obs), lambda: baddbmm_mlp(W, obs, act), functional_loop):
            err = float((fn() - ref).abs().max())
            assert err < 1e-5, err
        t = race({"ours": lambda: batched_forward(model, pop, obs, per_member_inputs=True),
                  "vmap": lambda: generic(params, obs), "bmm": lambda: baddbmm_mlp(W, obs, act),
                  "loop": member_loop, "floop": functional_loop},
                 {"ours": 100, "vmap": 100, "bmm": 100, "loop": 3, "floop": 3}, args.repeats)
        t_ours, t_vmap, t_bmm, t_loop, t_floop = (
            t[k] for k in ("ours", "vmap", "bmm", "loop", "floop"))
    print("\n(a) one observation per member (RL regime), time per population forward")
    print(f"  per-member loop (load member, model(obs[i]))  {t_loop * 1e6:9.0f} us")
    print(f"  per-member loop of functional_call            {t_floop * 1e6:9.0f} us")
    print(f"  evoopt.batched_forward                        {t_ours * 1e6:9.0f} us   "
          f"speed-up {t_loop / t_ours:5.1f}x over the loop (target >= 25x)")
    print(f"  torch.func.vmap(functional_call) (generic)    {t_vmap * 1e6:9.0f} us   "
          f"speed-up {t_loop / t_vmap:5.1f}x")
    print(f"  hand-written baddbmm MLP                      {t_bmm * 1e6:9.0f} us   "
          f"speed-up {t_loop / t_bmm:5.1f}x")

    # ------------------------------------------------------------ (b) shared batch
    B = args.batch
    x = torch.randn(B, args.obs_dim)
    sizes = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    flops = 2 * P * B * sum(i * o for i, o in sizes)
    n = round((flops / 2) ** (1 / 3))
    A, Bm = torch.randn(n, n), torch.randn(n, n)
    big = torch.randn(P * B, args.obs_dim)
    with torch.no_grad():
        t = race({"ours": lambda: batched_forward(model, pop, x),
                  "vmap": lambda: vmap(lambda p: functional_call(model, p, (x,)))(params),
                  "dense": lambda: A @ Bm, "single": lambda: model(big)}, 2, args.repeats)
        t_batched, t_generic, t_dense, t_single = (
            t[k] for k in ("ours", "vmap", "dense", "single"))
    rate = flops / t_batched
    print(f"\n(b) shared batch of {B} rows, {flops / 1e6:.0f} MFLOP per population forward")
    print(f"  evoopt.batched_forward        {t_batched * 1e3:7.2f} ms  {rate / 1e9:6.1f} GFLOP/s")
    print(f"  torch.func.vmap (generic)     {t_generic * 1e3:7.2f} ms  "
          f"{flops / t_generic / 1e9:6.1f} GFLOP/s")
    print(f"  dense {n}x{n} @ {n}x{n} matmul    {t_dense * 1e3:7.2f} ms  "
          f"{2 * n**3 / t_dense / 1e9:6.1f} GFLOP/s")
    print(f"  one model on P*B={P * B} rows {t_single * 1e3:7.2f} ms  "
          f"{flops / t_single / 1e9:6.1f} GFLOP/s")
    print(f"  ratio batched / dense matmul FLOP/s:     {rate / (2 * n**3 / t_dense):.2f} "
          f"(target >= 0.5)")
    print(f"  ratio batched / one-model dense forward: {rate / (flops / t_single):.2f}")


    # ----------------------------------------------------- (c) chunking, generic path
    # A small CNN (not an MLP: evoopt's generic vmap path) on the shared batch, P members in
    # chunks: vmap's own chunk_size (what evoopt uses) vs a Python loop over slices.
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))
    cl = ParamLayout(list(cnn.parameters()))
    cparams = dict(zip([n for n, _ in cnn.named_parameters()],
                       cl.unflatten(cl.flatten()[None] + 0.05 * torch.randn(P, cl.num_params))))
    xc = torch.randn(B, 64)

    def member(p):
        return functional_call(cnn, p, (xc,))

    def sliced(cs):
        f = vmap(member)
        return lambda: torch.cat([f({k: v[a:a + cs] for k, v in cparams.items()})
                                  for a in range(0, P, cs)])

    def chunked(cs):
        return lambda: vmap(member, chunk_size=cs)(cparams)

    cpop = Population(torch.cat([v.reshape(P, -1) for v in cparams.values()], 1), cl)
    fns = {"none": lambda: vmap(member)(cparams), "ours": lambda: batched_forward(cnn, cpop, xc)}
    for cs in (8, 32):
        fns[f"vmap{cs}"] = chunked(cs)
        fns[f"loop{cs}"] = sliced(cs)
    with torch.no_grad():
        t = race(fns, 1, max(3, args.repeats // 2))
    print(f"\n(c) chunking, CNN conv3x3(8)-maxpool-linear on {B} shared rows, P={P}")
    print(f"  unchunked                       {t['none'] * 1e3:7.1f} ms")
    print(f"  evoopt.batched_forward          {t['ours'] * 1e3:7.1f} ms   (Sequential fast path: "
          f"{t['none'] / t['ours']:.1f}x faster than unchunked vmap)")
    for cs in (8, 32):
        print(f"  chunk {cs:3d}: vmap chunk_size {t[f'vmap{cs}'] * 1e3:7.1f} ms, "
              f"loop over slices {t[f'loop{cs}'] * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
