"""PPO on CartPole-v1 with two optimizers for the same update: Adam with rl-zoo's linear
lr schedule, and KLAdaptive(Adam), which sets the lr from the measured KL of each update.

The update step is a plain ``torch.optim.Optimizer`` either way -- PPO never knows which.
Prints the env steps and seconds each needed to solve (deterministic policy, mean return
>= 475 over 20 episodes), and the KL-adaptive run's final learning rate.

    PYTHONPATH=. python examples/ppo_adam_vs_kl.py [--seed 0] [--tiny]
"""

import argparse
import functools
import math
import time

import gymnasium as gym
import torch

from evoopt import KLAdaptive
from rl.algorithms import PPO
from rl.policies import ActorCritic
from rl.rollout import PopulationRollout

# vf_coef 1.0 = SB3's 0.5 * mse
ZOO = dict(num_steps=32, gamma=0.98, gae_lambda=0.8, num_minibatches=1, update_epochs=20,
           ent_coef=0.0, clip_coef=0.2, anneal_clip_coef=True, clip_vloss=False, vf_coef=1.0)


def run(optimizer: str, seed: int, budget: int) -> dict:
    envs = gym.make_vec("CartPole-v1", num_envs=8, vectorization_mode="vector_entry_point")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        agent = ActorCritic(4, envs.single_action_space, hidden=(64, 64))
    if optimizer == "adam":
        ppo = PPO(envs, agent, functools.partial(torch.optim.Adam, lr=1e-3, eps=1e-5),
                  anneal_lr=True, seed=seed, **ZOO)
    else:
        ppo = PPO(envs, agent,
                  lambda p: KLAdaptive(torch.optim.Adam(p, lr=1e-3, eps=1e-5), target_kl=0.01),
                  seed=seed, **ZOO)
    evaluator = PopulationRollout("CartPole-v1", agent, 1)
    result = {"optimizer": optimizer, "solved_at": math.inf, "eval_return": math.nan}
    t0 = time.perf_counter()

    def check(m):
        last = ppo.global_step >= budget
        if m["iteration"] % 10 == 0 or last:
            result["eval_return"] = float(
                evaluator.evaluate_center(num_episodes=20, seed=10_000).mean())
            if result["eval_return"] >= 475:
                result["solved_at"] = m["global_step"]
                return True
        return False

    ppo.learn(budget, check)
    result.update(seconds=time.perf_counter() - t0, env_steps=ppo.global_step,
                  final_lr=float(ppo.optimizer.param_groups[0]["lr"]))
    return result


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="2 iterations each (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    budget = 2 * 256 if args.tiny else 100_000
    results = [run(name, args.seed, budget) for name in ("adam", "kl_adaptive")]
    for r in results:
        print(f"PPO + {r['optimizer']:12s} solved at {r['solved_at']} env steps "
              f"({r['seconds']:.1f} s); last eval return {r['eval_return']:.1f}, "
              f"final lr {r['final_lr']:.2e}")
    return results


if __name__ == "__main__":
    main()
