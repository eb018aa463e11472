"""Ray evaluation vs in-process, measured in one run (the numbers docs/scaling.md uses).

1. HalfCheetah-v5, linear policy with observation normalisation, PGPE, P members x 1
   episode of ``--steps`` steps: env steps/s of the in-process PopulationRollout and of
   RayPopulationRollout with ``--actors`` actors (equal results checked on the way).
2. Ray's per-generation overhead with an empty objective (returns zeros), P=256 rows of
   D=1000 and D=100000 (float32): one chunk per actor, and one row per task (the per-task
   cost), vs the same empty objective in process.

    PYTHONPATH=. python bench/bench_ray.py [--popsize 32] [--steps 1000] [--generations 3]
        [--actors 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import ray
import torch

import evoopt
from evoopt.distributed import RayEvaluator
from rl.normalization import RunningNorm
from rl.policies import LinearPolicy
from rl.ray_rollout import RayPopulationRollout
from rl.rollout import PopulationRollout


def zeros_objective(pop):
    return torch.zeros(pop.flat.shape[0], dtype=torch.float64)


def zeros_factory():
    return zeros_objective


def halfcheetah(rollout_cls, popsize, steps, generations, **kw):
    import gymnasium as gym

    env = gym.make("HalfCheetah-v5")
    obs_dim, space = env.observation_space.shape[0], env.action_space
    env.close()
    torch.manual_seed(0)
    policy = LinearPolicy(obs_dim, space, obs_norm=RunningNorm(obs_dim))
    opt = evoopt.PGPE(policy.parameters(), popsize=popsize, lr=0.05, sigma=0.1, seed=0)
    rollout = rollout_cls("HalfCheetah-v5", policy, popsize, seed=0, max_episode_steps=steps, **kw)
    losses, times = [], []
    try:
        opt.step(rollout)  # warm-up: envs built, actors started
        losses.append(opt.last.losses.clone())
        for _ in range(generations):
            before = rollout.total_steps
            t = time.perf_counter()
            opt.step(rollout)
            times.append((rollout.total_steps - before, time.perf_counter() - t))
            losses.append(opt.last.losses.clone())
    finally:
        rollout.close()
    n = sum(s for s, _ in times)
    sec = sum(t for _, t in times)
    return n / sec, sec / len(times), losses


def overhead(D, actors, chunk_size, reps):
    pop = torch.randn(256, D)
    with RayEvaluator(zeros_factory, num_actors=actors, chunk_size=chunk_size) as ev:
        ev(pop)  # warm-up
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            ev(pop)
            ts.append(time.perf_counter() - t)
    local_pop = evoopt.Population(pop, evoopt.ParamLayout([torch.zeros(D)]))
    zeros_objective(local_pop)
    t0 = time.perf_counter()
    for _ in range(reps):
        zeros_objective(local_pop)
    local = (time.perf_counter() - t0) / reps
    return float(np.median(ts)), local


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--popsize", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
    print(
        f"ray.init: {time.perf_counter() - t:.1f} s   (cpus on this machine: {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f})"
    )

    print(
        f"\nHalfCheetah-v5, linear policy + obs norm, PGPE, P={args.popsize} x 1 episode x "
        f"{args.steps} steps, {args.generations} timed generations"
    )
    sps_local, gen_local, ref = halfcheetah(
        PopulationRollout, args.popsize, args.steps, args.generations
    )
    print(f"  in-process            : {sps_local:9.0f} env steps/s   {gen_local:6.2f} s/generation")
    sps_ray, gen_ray, got = halfcheetah(
        RayPopulationRollout, args.popsize, args.steps, args.generations, num_actors=args.actors
    )
    first = torch.equal(ref[0], got[0])
    rel = max(float(((a - b).abs() / a.abs().clamp(min=1e-12)).max()) for a, b in zip(ref, got))
    print(
        f"  Ray, {args.actors} actors         : {sps_ray:9.0f} env steps/s   "
        f"{gen_ray:6.2f} s/generation"
        f"   ratio Ray/in-process {sps_ray / sps_local:.2f}x"
    )
    print(
        f"  losses: generation 0 bitwise equal: {first}; max relative difference over all "
        f"generations {rel:.1e} (normaliser merged from {args.actors} chunks: rounding)"
    )
    t_step = 1.0 / sps_local
    print(f"  per env step (policy + MuJoCo), in-process: {1e6 * t_step:.1f} us")

    print("\nRay overhead per generation, empty objective, P=256 float32 rows")
    for D in (1000, 100_000):
        chunked, local = overhead(D, args.actors, None, args.reps)
        per_row, _ = overhead(D, args.actors, 1, max(2, args.reps // 2))
        mb = 256 * D * 4 / 1e6
        print(
            f"  D={D:>6} ({mb:6.1f} MB/generation): "
            f"{1e3 * chunked:8.1f} ms with {args.actors} chunks, "
            f"{1e3 * per_row:8.1f} ms with 256 one-row tasks "
            f"({1e3 * per_row / (256 / args.actors):.2f} ms per task per actor); "
            f"in process {1e3 * local:.3f} ms"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
