"""CartPole-v1 with PGPE + ClipUp: evoopt's PopulationRollout vs EvoTorch's GymNE.

Both sides use EvoTorch's CartPole-v1 PGPE example settings (examples/notebooks/
Functional_API/problem.ipynb): max_speed 0.15, center lr 0.75 * max_speed, radius_init
15 * max_speed, stdev lr 0.1, stdev_max_change 0.2, centered ranks, symmetric sampling,
observation normalisation; with a linear policy and popsize 50. After every generation the
center is evaluated on the same 20 episodes (seeds 10000..10019, a plain gymnasium loop
for EvoTorch, ``evaluate_center`` for ours: the tests prove they are equal) *outside* the
timed region; "solved" is a mean return >= 475. Timed: the training steps only.

EvoTorch runs in-process (``num_actors`` left at its default, no Ray): on this 2-core
shared box, Ray actors only add overhead. Both pin ``torch.set_num_threads(1)``.

    PYTHONPATH=. python bench/bench_rl_evotorch.py [--seeds 5] [--budget 60]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import gymnasium as gym
import numpy as np
import torch

from evoopt import PGPE, ClipUp
from rl import PopulationRollout, make_policy

MAX_SPEED = 0.15
LR = 0.75 * MAX_SPEED
RADIUS = 15 * MAX_SPEED
POPSIZE = 50
EVAL_SEED, EVAL_EPISODES, SOLVED = 10_000, 20, 475.0


def run_ours(seed: int, budget: int) -> dict:
    policy = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    opt = PGPE(policy.parameters(), popsize=POPSIZE, lr=LR, radius_init=RADIUS, stdev_lr=0.1,
               stdev_max_change=0.2, seed=seed,
               optimizer=lambda g: ClipUp(g, lr=LR, momentum=0.9, max_speed=MAX_SPEED))
    objective = PopulationRollout("CartPole-v1", policy, POPSIZE, seed=seed)
    wall, ret = 0.0, float("nan")
    for gen in range(1, budget + 1):
        t0 = time.perf_counter()
        opt.step(objective)
        wall += time.perf_counter() - t0
        ret = float(objective.evaluate_center(num_episodes=EVAL_EPISODES, seed=EVAL_SEED).mean())
        if ret >= SOLVED:
            break
    return dict(solved=ret >= SOLVED, generations=gen, episodes=objective.total_episodes,
                steps=objective.total_steps, wall=wall, center_return=ret)


def _evaluate_evotorch_center(problem, center) -> float:
    policy = problem.to_policy(center)
    rets = []
    with torch.no_grad():
        for j in range(EVAL_EPISODES):
            env = gym.make("CartPole-v1")
            obs, _ = env.reset(seed=EVAL_SEED + j)
            done, ret = False, 0.0
            while not done:
                a = int(torch.argmax(policy(torch.as_tensor(obs, dtype=torch.float32))))
                obs, r, term, trunc, _ = env.step(a)
                ret += r
                done = term or trunc
            rets.append(ret)
    return float(np.mean(rets))


def run_evotorch(seed: int, budget: int) -> dict:
    from evotorch.algorithms import PGPE as EvoPGPE
    from evotorch.neuroevolution import GymNE

    torch.manual_seed(seed)  # EvoTorch draws from the global RNGs
    np.random.seed(seed)
    problem = GymNE(env="CartPole-v1", network="Linear(obs_length, act_length)",
                    observation_normalization=True)
    searcher = EvoPGPE(problem, popsize=POPSIZE, center_learning_rate=LR, stdev_learning_rate=0.1,
                       radius_init=RADIUS, stdev_max_change=0.2, optimizer="clipup",
                       optimizer_config={"max_speed": MAX_SPEED}, ranking_method="centered",
                       symmetric=True)
    wall, ret = 0.0, float("nan")
    for gen in range(1, budget + 1):
        t0 = time.perf_counter()
        searcher.step()
        wall += time.perf_counter() - t0
        ret = _evaluate_evotorch_center(problem, searcher.status["center"])
        if ret >= SOLVED:
            break
    st = searcher.status
    return dict(solved=ret >= SOLVED, generations=gen, episodes=int(st["total_episode_count"]),
                steps=int(st["total_interaction_count"]), wall=wall, center_return=ret)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=60, help="max generations per run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("evotorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    rows = {"evoopt": [], "evotorch": []}
    for seed in range(args.seeds):
        for name, fn in (("evoopt", run_ours), ("evotorch", run_evotorch)):
            r = fn(seed, args.budget)
            rows[name].append(r)
            print(f"{name:9s} seed {seed}: solved={r['solved']} gens={r['generations']:3d} "
                  f"episodes={r['episodes']:5d} env_steps={r['steps']:7d} "
                  f"train_wall={r['wall']:7.2f}s "
                  f"steps/s={r['steps'] / r['wall']:9.0f} "
                  f"center_return={r['center_return']:.1f}", flush=True)
    print()
    for name, rs in rows.items():
        print(f"{name:9s} solved {sum(r['solved'] for r in rs)}/{len(rs)}; median train wall "
              f"{statistics.median(r['wall'] for r in rs):.2f}s; median episodes "
              f"{statistics.median(r['episodes'] for r in rs):.0f}; env steps/s "
              f"{sum(r['steps'] for r in rs) / sum(r['wall'] for r in rs):.0f}")
    ours, theirs = rows["evoopt"], rows["evotorch"]
    wall_ratio = (statistics.median(r["wall"] for r in theirs)
                  / statistics.median(r["wall"] for r in ours))
    tput = (sum(r["steps"] for r in ours) / sum(r["wall"] for r in ours)) / (
        sum(r["steps"] for r in theirs) / sum(r["wall"] for r in theirs))
    print(f"\nratio wall-to-solve (median, EvoTorch / evoopt): {wall_ratio:.1f}x")
    print(f"ratio env-steps per second (evoopt / EvoTorch): {tput:.1f}x")


if __name__ == "__main__":
    main()
