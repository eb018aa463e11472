"""ARS V2-t (Mania, Guy, Recht 2018) on a MuJoCo task with a linear policy and
observation normalisation, on HalfCheetah: N = 8 directions (popsize 16), the b = 4 best
used, step size 0.02, noise 0.03 (the paper's Table 9 with the N of the authors' README
command; Table 9's N = 32 solves fewer seeds on the v5 env, see bench/bench_ars_mujoco.py);
the policy as in the authors' code: a = W @ filter(obs), no bias, the raw action passed to
the env (MuJoCo clamps the control, the control cost sees the raw action), ARS's
observation filter.

    PYTHONPATH=. python examples/ars_mujoco.py [--env HalfCheetah-v5] [--generations 200] [--tiny]

Each generation plays 16 episodes of 1000 steps (about 1.5 s on one CPU core for
HalfCheetah). How many it takes depends on the seed and, since RL runs diverge across CPUs
and BLAS kernels, on the machine: over seeds 0-14 bench/bench_ars_mujoco.py measured a
median of 2,720 training episodes (170 generations) to a mean return of 3430 over 100
episodes, quartiles 1,120 - 3,040, 3 seeds of 15 not within 5,121; raise --generations
accordingly.
"""

import argparse

import gymnasium as gym
import torch

import evoopt
from rl import PopulationRollout, RunningNorm, make_policy


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="HalfCheetah-v5")
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true",
                    help="2 generations of 8 members, 50-step episodes")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    popsize, num_top, generations, limit = ((8, 2, 2, 50) if args.tiny
                                            else (16, 4, args.generations, None))

    env = gym.make(args.env)
    norm = RunningNorm(env.observation_space.shape, std_rule="ars")  # ARS V2: normalised states
    policy = make_policy(env, kind="linear", obs_norm=norm, bias=False, squash="none")
    opt = evoopt.ARS(policy.parameters(), popsize=popsize, num_top=num_top, lr=0.02, sigma=0.03,
                     maximize=False, seed=args.seed)
    objective = PopulationRollout(args.env, policy, popsize, seed=args.seed,
                                  max_episode_steps=limit)
    history = []
    for generation in range(1, generations + 1):
        opt.step(objective)
        center = float(objective.evaluate_center(num_episodes=3, seed=10_000).mean())
        history.append({"generation": generation, "center_return": center,
                        "env_steps": objective.total_steps})
        print(f"generation {generation:3d}  center return {center:9.1f}  "
              f"env steps {objective.total_steps}")
    return {"history": history}


if __name__ == "__main__":
    main()
