"""Env steps per second: the torch CartPole of ``rl.envs`` against Gymnasium's numpy vector
CartPole, one process, ratios measured in one run.

Variants, each stepping N envs with pre-drawn random actions (autoresets included):

- ``gymnasium``: ``gymnasium.make_vec("CartPole-v1", N, vectorization_mode=
  "vector_entry_point")`` (numpy, next-step autoreset), CPU only;
- ``torch eager``: ``rl.envs.make("CartPole-v1", N, device=...)``;
- ``torch compiled``: the same with ``compile=True`` (the whole step, dynamics, time
  limit, autoreset and its reset draws, fused by ``torch.compile`` into one kernel with no
  host synchronisation; skipped with a note where compiling fails).

Both torch variants run with ``check_actions=False`` (the range check of the actions is
one more pass over them). Figures are the best of ``--repeats`` rounds of ``--steps``
steps, the rounds interleaved across variants so that load from other processes hits all
alike, in process CPU time with ``--threads 1`` on the CPU (robust to other processes'
load) and in wall time with a synchronisation on CUDA. Printed: million env steps per
second and the ratio to Gymnasium's.

    PYTHONPATH=. python bench/bench_envs.py [--envs 256 4096 65536] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

import rl.envs


def _clock(device: torch.device):
    if device.type == "cuda":
        def wall():
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return wall
    return time.process_time


def torch_stepper(env_id: str, num_envs: int, device="cpu", compile=False, seed=0):
    """A zero-argument function that steps a freshly reset env once (random actions)."""
    env = rl.envs.make(env_id, num_envs, device=device, seed=seed, compile=compile,
                       check_actions=False)
    env.reset()
    gen = torch.Generator(device=env.device).manual_seed(seed)
    space = env.single_action_space
    if hasattr(space, "n"):
        actions = [torch.randint(0, space.n, (num_envs,), generator=gen, device=env.device)
                   for _ in range(16)]
    else:
        actions = [torch.rand((num_envs, *space.shape), generator=gen, device=env.device,
                              dtype=env.dtype) for _ in range(16)]
    count = iter(range(1 << 62))
    return lambda: env.step(actions[next(count) % 16])


def gym_stepper(num_envs: int, seed=0):
    import gymnasium as gym
    import numpy as np

    env = gym.make_vec("CartPole-v1", num_envs, vectorization_mode="vector_entry_point")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = [rng.integers(0, 2, num_envs) for _ in range(16)]
    count = iter(range(1 << 62))
    return lambda: env.step(actions[next(count) % 16])


def steps_per_second(steppers: dict, num_envs: int, steps: int, repeats: int, clock) -> dict:
    """Best env steps/s of each stepper over interleaved rounds (one warm-up round first,
    which also compiles)."""
    for fn in steppers.values():
        for _ in range(3):
            fn()
    best = dict.fromkeys(steppers, 0.0)
    for _ in range(repeats):
        for name, fn in steppers.items():
            t0 = clock()
            for _ in range(steps):
                fn()
            best[name] = max(best[name], num_envs * steps / (clock() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, nargs="+", default=[256, 4096, 65536])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = _clock(device)
    print(f"CartPole-v1 env steps/s, {device}, {args.threads} thread(s), best of "
          f"{args.repeats} x {args.steps} steps (M = million)")
    print(f"{'envs':>8} {'gymnasium':>10} {'torch eager':>18} {'torch compiled':>18}")
    for n in args.envs:
        steppers = {"eager": torch_stepper("CartPole-v1", n, device)}
        if not args.no_compile:
            try:
                steppers["compiled"] = torch_stepper("CartPole-v1", n, device, compile=True)
                steppers["compiled"]()
            except Exception as err:  # noqa: BLE001 (any compiler failure)
                print(f"  compile failed ({type(err).__name__}: {err}); eager only")
                steppers.pop("compiled")
        if device.type == "cpu":
            try:
                steppers["gymnasium"] = gym_stepper(n)
            except ImportError:
                print("  gymnasium not installed: no reference")
        rate = steps_per_second(steppers, n, args.steps, args.repeats, clock)
        ref = rate.get("gymnasium")

        def cell(name):
            if name not in rate:
                return f"{'-':>18}"
            ratio = f" ({rate[name] / ref:4.2f}x)" if ref else ""
            return f"{rate[name] / 1e6:>9.2f}M{ratio:>9}"

        gym_cell = f"{ref / 1e6:>9.2f}M" if ref else f"{'-':>10}"
        print(f"{n:>8} {gym_cell} {cell('eager')} {cell('compiled')}", flush=True)


if __name__ == "__main__":
    main()
