"""CartPole-v1: wall time to solve, our PPO vs Stable-Baselines3's PPO (and our PGPE).

Both PPOs use the rl-zoo hyperparameters for CartPole-v1 (hyperparams/ppo.yml): n_envs 8,
n_steps 32, batch_size 256 (one minibatch), gae_lambda 0.8, gamma 0.98, n_epochs 20,
ent_coef 0, lr linear from 1e-3, clip_range linear from 0.2, 1e5 timesteps, MLP 64-64
tanh for actor and critic, Adam eps 1e-5, max_grad_norm 0.5, no value clipping, and the same
value loss (SB3: vf_coef 0.5 * mse; ours: vf_coef 1.0 * 0.5 * mse).

"Solved": the deterministic policy averages >= 475 over 20 evaluation episodes (seeds
10000..10019, the same evaluator for every contender: the native CartPole vector env,
argmax actions), checked every 2560 env steps (10 PPO iterations; for PGPE every
generation). The clock runs only while training (evaluation time is excluded). Budget
1e5 env steps for the PPOs (a run that does not solve counts as inf); PGPE gets 1e6.

Contenders:
  ours-native  rl.algorithms.PPO on gymnasium's native CartPole vector env
  ours-sync    rl.algorithms.PPO on gymnasium.vector.SyncVectorEnv (8 python envs)
  sb3          stable_baselines3.PPO on its DummyVecEnv (8 python envs)
  pgpe         evoopt.PGPE + ClipUp, linear policy, popsize 50 (rl.train's CartPole preset)

Printed: per-seed steps and seconds, the median over seeds, the ratio sb3 / ours, and the
training time per env step (which separates speed from sample efficiency).
Threads are pinned (torch.set_num_threads(--threads)).

    PYTHONPATH=. python bench/bench_ppo_sb3.py [--seeds 0,1,2] [--threads 1] [--skip-pgpe]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

from rl.algorithms import PPO
from rl.policies import ActorCritic

EVAL_SEED, EVAL_EPISODES, TARGET, BUDGET = 10_000, 20, 475.0, 100_000


def evaluate(act) -> float:
    """Mean return of ``act(obs [N, 4]) -> actions [N]`` over 20 episodes (one per env)."""
    env = gym.make_vec("CartPole-v1", num_envs=EVAL_EPISODES,
                       vectorization_mode="vector_entry_point")
    obs, _ = env.reset(seed=EVAL_SEED)
    ret, alive = np.zeros(EVAL_EPISODES), np.ones(EVAL_EPISODES, bool)
    while alive.any():
        obs, r, term, trunc, _ = env.step(act(obs))
        ret += r * alive
        alive &= ~(term | trunc)
    env.close()
    return float(ret.mean())


class Clock:
    """Accumulates training time; evaluation runs with the clock paused."""

    def __init__(self):
        self.total, self.t0 = 0.0, time.perf_counter()

    def pause(self):
        self.total += time.perf_counter() - self.t0

    def resume(self):
        self.t0 = time.perf_counter()


def run_ours(seed: int, native: bool) -> tuple[float, float]:
    if native:
        envs = gym.make_vec("CartPole-v1", num_envs=8, vectorization_mode="vector_entry_point")
    else:
        envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(8)])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        agent = ActorCritic(4, envs.single_action_space, hidden=(64, 64))
    clock = Clock()
    ppo = PPO(envs, agent, functools.partial(torch.optim.Adam, lr=1e-3, eps=1e-5), num_steps=32,
              gamma=0.98, gae_lambda=0.8, num_minibatches=1, update_epochs=20, ent_coef=0.0,
              clip_coef=0.2, anneal_lr=True, anneal_clip_coef=True, clip_vloss=False, vf_coef=1.0,
              seed=seed)
    solved = [math.inf]

    def act(obs):
        with torch.no_grad():
            return agent(torch.as_tensor(obs)).argmax(-1).numpy()

    def check(m):
        if m["iteration"] % 10:
            return False
        clock.pause()
        ok = evaluate(act) >= TARGET
        clock.resume()
        if ok:
            solved[0] = m["global_step"]
        return ok

    ppo.learn(BUDGET, check)
    clock.pause()
    return solved[0], clock.total if solved[0] < math.inf else math.inf


def run_sb3(seed: int) -> tuple[float, float]:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    clock = Clock()
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = SB3PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                   n_epochs=20, ent_coef=0.0, learning_rate=lambda f: 1e-3 * f,
                   clip_range=lambda f: 0.2 * f, seed=seed, device="cpu", verbose=0)
    solved = [math.inf]

    def act(obs):
        return model.predict(obs, deterministic=True)[0]

    class Check(BaseCallback):
        """Evaluate after every 10 rollout+update rounds (at the start of the next rollout)."""

        def __init__(self):
            super().__init__()
            self.rounds = 0

        def _on_rollout_start(self):
            if self.rounds and self.rounds % 10 == 0 and solved[0] == math.inf:
                clock.pause()
                if evaluate(act) >= TARGET:
                    solved[0] = self.num_timesteps
                clock.resume()
            self.rounds += 1

        def _on_step(self):
            return solved[0] == math.inf  # False stops learn()

    clock.resume()
    model.learn(BUDGET, callback=Check())
    clock.pause()
    return solved[0], clock.total if solved[0] < math.inf else math.inf


def run_pgpe(seed: int) -> tuple[float, float]:
    import evoopt
    from rl.policies import make_policy
    from rl.rollout import PopulationRollout
    from rl.train import PRESETS

    preset = PRESETS[("CartPole-v1", "pgpe")]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    clock = Clock()
    opt = evoopt.PGPE(policy.parameters(), popsize=preset["popsize"], lr=preset["lr"], seed=seed,
                      **{k: v for k, v in preset["optimizer_kwargs"].items() if v is not None})
    objective = PopulationRollout("CartPole-v1", policy, preset["popsize"], seed=seed)

    def act(obs):
        with torch.no_grad():
            return policy(torch.as_tensor(obs)).argmax(-1).numpy()

    while objective.total_steps < 10 * BUDGET:
        opt.step(objective)
        clock.pause()
        ok = evaluate(act) >= TARGET
        clock.resume()
        if ok:
            clock.pause()
            return objective.total_steps, clock.total
    return math.inf, math.inf


def throughput(iterations: int = 20, rounds: int = 3) -> dict[str, float]:
    """Seconds per PPO iteration (256 env steps + 20 epochs of one 256-sample minibatch),
    best of ``rounds`` interleaved rounds of ``iterations`` iterations, after a warm-up."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    def ours(native):
        envs = (gym.make_vec("CartPole-v1", num_envs=8, vectorization_mode="vector_entry_point")
                if native
                else gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(8)]))
        agent = ActorCritic(4, envs.single_action_space, hidden=(64, 64))
        ppo = PPO(envs, agent, functools.partial(torch.optim.Adam, lr=1e-3, eps=1e-5), num_steps=32,
                  gamma=0.98, gae_lambda=0.8, num_minibatches=1, update_epochs=20, ent_coef=0.0,
                  clip_vloss=False, vf_coef=1.0)
        ppo.iterate()
        return lambda: [ppo.iterate() for _ in range(iterations)]

    def sb3():
        model = SB3PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), n_steps=32,
                       batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
                       device="cpu", verbose=0)
        model.learn(256)
        return lambda: model.learn(256 * iterations, reset_num_timesteps=False)

    runs = {"ours-native": ours(True), "ours-sync": ours(False), "sb3": sb3()}
    best = dict.fromkeys(runs, math.inf)
    for _ in range(rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - t) / iterations)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-pgpe", action="store_true")
    ap.add_argument("--throughput-only", action="store_true", help="only the per-iteration timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.throughput_only:
        for name, sec in throughput().items():
            print(f"  {name:12s} {sec * 1e3:7.1f} ms per PPO iteration")
        return
    contenders = {"ours-native": functools.partial(run_ours, native=True),
                  "ours-sync": functools.partial(run_ours, native=False), "sb3": run_sb3}
    if not args.skip_pgpe:
        contenders["pgpe"] = run_pgpe
    results = {name: [] for name in contenders}
    for seed in seeds:  # interleave the contenders (the machine is shared)
        for name, fn in contenders.items():
            steps, secs = fn(seed)
            results[name].append((steps, secs))
            print(f"seed {seed} {name:12s} solved at {steps:>8} steps in {secs:7.2f} s", flush=True)
    print(f"\nCartPole-v1, deterministic eval >= {TARGET} over {EVAL_EPISODES} episodes; "
          f"median over seeds {seeds}, torch threads {args.threads}")
    med = {}
    for name, rs in results.items():
        med[name] = (statistics.median(s for s, _ in rs), statistics.median(t for _, t in rs))
        print(f"  {name:12s} median steps {med[name][0]:>9}  "
              f"median wall time {med[name][1]:7.2f} s")
    for ours in ("ours-native", "ours-sync"):
        print(f"  ratio sb3 / {ours} wall time: {med['sb3'][1] / med[ours][1]:.2f}x "
              f"(steps: {med['sb3'][0] / med[ours][0]:.2f}x)")
    if "pgpe" in med:
        print(f"  ratio sb3 / pgpe wall time: {med['sb3'][1] / med['pgpe'][1]:.2f}x")
    # training speed per env step, pooled over the seeds (separates speed from sample efficiency)
    per_step = {n: sum(t for _, t in rs) / sum(s for s, _ in rs) * 1e3 for n, rs in results.items()
                if all(math.isfinite(s) for s, _ in rs)}
    for name, ms in per_step.items():
        print(f"  {name:12s} {ms:6.3f} ms per env step (training, all seeds pooled)")
    for ours in ("ours-native", "ours-sync"):
        if ours in per_step and "sb3" in per_step:
            print(f"  ratio sb3 / {ours} time per env step: "
                  f"{per_step['sb3'] / per_step[ours]:.2f}x")
    best = throughput()
    print("\nthroughput, seconds per PPO iteration (256 env steps + 20 epochs), "
          "best of 3 interleaved rounds:")
    for name, sec in best.items():
        print(f"  {name:12s} {sec * 1e3:7.1f} ms")
    for ours in ("ours-native", "ours-sync"):
        print(f"  ratio sb3 / {ours}: {best['sb3'] / best[ours]:.2f}x")


if __name__ == "__main__":
    main()
