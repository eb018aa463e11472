"""Run this first whenever a CUDA device is lent: every ``cuda``-marked test, then the GPU
figures as one table. At most about 8 minutes; torch is the only requirement.

1. ``pytest -m cuda`` over ``tests/`` (``--continue-on-collection-errors``: a test module
   whose imports are missing on the device machine is reported, the others still run);
   skipped when pytest is not installed.
2. One row per figure (``ROWS``). A row is a function of the device that returns its
   figure as text, or raises ``Skip`` with the reason ("skipped (not installed: ...)"
   when an import fails); a row that fails prints its error and the others still run.
   To add a row, write one such function and append ``Row(name, target, fn)`` to ``ROWS``.

The device machine has no gymnasium, cma or mujoco unless staged; ``rl.envs`` needs
gymnasium (its spaces) and numpy. To stage pure-Python packages, install them into a
folder of the checkout here (``pip install --no-deps --target .gpu_site gymnasium
farama-notifications cloudpickle``), carry that folder, and run with
``PYTHONPATH=.:.gpu_site``.

The MuJoCo Warp rows (HalfCheetah-v5 at ``--warp-worlds`` 4,096 worlds, the step replayed
from a CUDA graph and launched from Python) need mujoco, warp-lang and mujoco-warp, binary
wheels (warp-lang alone is about 390 MB with its CPU compiler): too big to carry, so they
print "skipped (not installed: ...)" unless the device machine has them. Kernels compile on
first use there (minutes per model without a cache).

Without a CUDA device the script says so and exits with status 0 (``--device cpu``
dry-runs the table on the CPU).

    PYTHONPATH=. python bench/gpu_check.py [--skip-tests] [--envs 1000000]
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_TIMEOUT_S = 300


class Skip(Exception):
    """A row that cannot run here; the message says why."""


def require(module: str):
    """Import ``module`` or skip the row with "skipped (not installed: module)"."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Skip(f"skipped (not installed: {err.name or module})") from None


@dataclass
class Row:
    name: str
    target: str
    fn: Callable[[torch.device, argparse.Namespace], str]


def _wall(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _fastest(device, fn, rounds: int = 3) -> float:
    """The shortest wall time of ``rounds`` calls of ``fn`` (synchronised on CUDA)."""
    times = []
    for _ in range(rounds):
        t0 = _wall(device)
        fn()
        times.append(_wall(device) - t0)
    return min(times)


def _env_rate(device, args, compile):
    require("gymnasium")
    envs = require("rl.envs")
    n = args.envs
    env = envs.make("CartPole-v1", n, device=device, seed=0, compile=compile,
                    check_actions=False)
    env.reset()
    gen = torch.Generator(device=device).manual_seed(0)
    actions = [torch.randint(0, 2, (n,), generator=gen, device=device) for _ in range(8)]
    for k in range(5):  # warm-up (and compilation)
        env.step(actions[k % 8])
    t = _fastest(device, lambda: [env.step(actions[k % 8]) for k in range(args.steps)])
    return f"{n * args.steps / t:.3g} steps/s"


def cartpole_eager(device, args):
    return _env_rate(device, args, compile=False)


def cartpole_compiled(device, args):
    return _env_rate(device, args, compile=True)


def _warp_rate(device, args, capture):
    """HalfCheetah-v5 on MuJoCo Warp, ``--warp-worlds`` worlds, uniform random actions:
    env steps/s (best of 3 rounds of ``--warp-steps``), the step's launches replayed from a
    CUDA graph (``capture=True``) or launched from Python."""
    require("gymnasium")
    require("mujoco")
    require("warp")
    require("mujoco_warp")
    make_warp_env = require("rl.envs.mujoco_warp").make_warp_env
    n = args.warp_worlds
    env = make_warp_env("HalfCheetah-v5", n, device=device, seed=0, capture=capture)
    env.reset()
    gen = torch.Generator(device=device).manual_seed(0)
    actions = [torch.rand(n, 6, generator=gen, device=device) * 2 - 1 for _ in range(8)]
    for k in range(3):  # kernels (compile or cache load) and the recording
        env.step(actions[k])
    t = _fastest(device, lambda: [env.step(actions[k % 8]) for k in range(args.warp_steps)])
    best = n * args.warp_steps / t
    return f"{best:.3g} steps/s ({best * env.frame_skip:.3g} physics steps/s), {n} worlds"


def warp_replayed(device, args):
    return _warp_rate(device, args, capture=True)


def warp_launched(device, args):
    return _warp_rate(device, args, capture=False)


def lowrank_generation(device, args):
    """One low-rank (r = 1) OpenAI-ES generation (ask + factored evaluation + tell) of a
    100M-parameter MLP (three tanh layers of 5774), P = 1024 members on 4 rows each, over
    the center model's inference on the same 4096 rows (bench/bench_lowrank.py (a))."""
    import evoopt

    torch.manual_seed(0)
    w, P, B = 5774, 1024, 4
    model = torch.nn.Sequential(*[m for _ in range(3)
                                  for m in (torch.nn.Linear(w, w), torch.nn.Tanh())]).to(device)
    x = torch.randn(B, w, device=device)
    opt = evoopt.OpenAIES(model.parameters(), popsize=P, rank=1, seed=0)
    objective = evoopt.vmap_objective(model, lambda out: out.pow(2).mean(), x)
    big = x.repeat(P, 1)

    def best(fn):
        fn()  # warm-up
        return _fastest(device, fn)

    gen = best(lambda: opt.step(objective))
    with torch.no_grad():
        inf = best(lambda: model(big))
    D = sum(p.numel() for p in model.parameters())
    return (f"{inf / gen:.2f} (D={D / 1e6:.0f}M, generation {gen * 1e3:.1f} ms, "
            f"inference {inf * 1e3:.1f} ms)")


def cma_variants(device, args):
    """ms per generation (ask + tell, float32, wall clock synchronised) of the native torch
    sep-CMA-ES, LM-MA-ES and CR-FM-NES at D = 10^5 and 10^6 (bench/bench_cma_variants.py)."""
    bench = require("bench.bench_cma_variants")
    out = []
    for D in (100_000, 1_000_000):
        for name in bench.NATIVE:
            t, P = bench.time_native(name, D, device, torch.float32, gens=5, seconds=2.0)
            out.append(f"{name} D={D:.0e} P={P}: {1e3 * t:.3g} ms")
    return "; ".join(out)


def todo(reason: str):
    def row(device, args):
        raise Skip(f"TODO: {reason}")

    return row


ROWS = [
    Row("rl.envs CartPole-v1 env steps/s, eager", ">= 1e8", cartpole_eager),
    Row("rl.envs CartPole-v1 env steps/s, compile=True", ">= 1e8", cartpole_compiled),
    Row("MuJoCo Warp HalfCheetah-v5 env steps/s, graph replay", "", warp_replayed),
    Row("MuJoCo Warp HalfCheetah-v5 env steps/s, no graph", "", warp_launched),
    Row("low-rank ES generation / inference, 100M params, P=1024", ">= 0.85",
        lowrank_generation),
    Row("sep-CMA-ES / LM-MA-ES / CR-FM-NES ms per generation", "", cma_variants),
    Row("population forward (bench/bench_population_forward.py)", "", todo(
        "the bench has no --device flag; add one and call it here")),
    Row("ES step (bench/bench_es_overhead.py)", "", todo(
        "the bench has no --device flag; add one and call it here")),
]


def run_cuda_tests() -> str:
    try:
        importlib.import_module("pytest")
    except ImportError:
        return "skipped (not installed: pytest)"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", str(ROOT / "tests")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"timed out after {TEST_TIMEOUT_S} s"
    print(done.stdout[-6000:], done.stderr[-2000:], sep="\n")
    lines = done.stdout.strip().splitlines()
    return f"exit {done.returncode}: {lines[-1] if lines else 'no output'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-tests", action="store_true", help="only the table")
    ap.add_argument("--envs", type=int, default=1_000_000, help="envs of the env rows")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per round")
    ap.add_argument("--warp-worlds", type=int, default=4096, help="worlds of the Warp rows")
    ap.add_argument("--warp-steps", type=int, default=20, help="timed steps per Warp round")
    ap.add_argument("--device", default="cuda",
                    help="'cpu' dry-runs the table (try it with --envs 4096 --skip-tests)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check needs a CUDA device (torch.cuda.is_available() is False): "
              "nothing to do here")
        return 0
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or torch.cuda.current_device())
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    tests = "skipped (--skip-tests)" if args.skip_tests else run_cuda_tests()
    print(f"\npytest -m cuda: {tests}\n")
    width = max(len(row.name) for row in ROWS)
    print(f"{'figure':<{width}}  {'target':<8}  value")
    for row in ROWS:
        try:
            value = row.fn(device, args)
        except Skip as skip:
            value = str(skip)
        except Exception as err:  # noqa: BLE001 (one failing row must not hide the others)
            value = f"FAILED: {type(err).__name__}: {err}"
        print(f"{row.name:<{width}}  {row.target:<8}  {value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
