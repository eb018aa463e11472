"""PGPE + ClipUp on CartPole-v1 with a linear policy: an evolution strategy in the same
``opt.step(closure)`` loop that trains a network with Adam.

The population objective rolls out member i in env slot i of one batched rollout
(:class:`rl.PopulationRollout`); after each step the policy holds the distribution's
center, which is what we evaluate. Settings: EvoTorch's CartPole PGPE example.

    PYTHONPATH=. python examples/pgpe_cartpole.py [--seed 0] [--generations 30] [--tiny]
"""

import argparse

import gymnasium as gym
import torch

import evoopt
from rl import PopulationRollout, make_policy

MAX_SPEED = 0.15


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--tiny", action="store_true", help="2 generations of 10 members (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    popsize, generations = (10, 2) if args.tiny else (50, args.generations)

    policy = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    lr = 0.75 * MAX_SPEED
    opt = evoopt.PGPE(policy.parameters(), popsize=popsize, lr=lr, radius_init=15 * MAX_SPEED,
                      seed=args.seed,
                      optimizer=lambda groups: evoopt.ClipUp(groups, lr=lr, momentum=0.9,
                                                             max_speed=MAX_SPEED))
    objective = PopulationRollout("CartPole-v1", policy, popsize, seed=args.seed)
    history = []
    for generation in range(1, generations + 1):
        loss = opt.step(objective)                    # mean loss = -(mean return) of the population
        center = float(objective.evaluate_center(num_episodes=20, seed=10_000).mean())
        history.append({"generation": generation, "population_return": -float(loss),
                        "center_return": center, "env_steps": objective.total_steps})
        print(f"generation {generation:3d}  population {-float(loss):7.1f}  center {center:7.1f}  "
              f"env steps {objective.total_steps}")
        if center >= 475:
            print(f"solved in {generation} generations ({objective.total_steps} env steps)")
            break
    return {"history": history, "solved": history[-1]["center_return"] >= 475}


if __name__ == "__main__":
    main()
