"""PGPE + ClipUp solves CartPole-v1 with a linear policy through PopulationRollout.

Settings are EvoTorch's CartPole-v1 PGPE example (examples/notebooks/Functional_API/
problem.ipynb: max_speed 0.15, center_learning_rate = 0.75 * max_speed, radius_init =
15 * max_speed, stdev_learning_rate 0.1, stdev_max_change 0.2, centered ranks, symmetric
sampling, observation normalisation) with a linear policy and popsize 50. "Solved": the
center's mean return over 20 evaluation episodes is >= 475.
"""

import gymnasium as gym
import pytest

from evoopt import PGPE, ClipUp
from rl import PopulationRollout, make_policy

MAX_SPEED = 0.15
BUDGET = 20  # generations (1000 training episodes)


def solve_cartpole(seed: int, budget: int = BUDGET):
    policy = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    lr = 0.75 * MAX_SPEED
    opt = PGPE(policy.parameters(), popsize=50, lr=lr, radius_init=15 * MAX_SPEED, stdev_lr=0.1,
               stdev_max_change=0.2, seed=seed,
               optimizer=lambda groups: ClipUp(groups, lr=lr, momentum=0.9, max_speed=MAX_SPEED))
    objective = PopulationRollout("CartPole-v1", policy, 50, seed=seed)
    for generation in range(1, budget + 1):
        opt.step(objective)
        returns = objective.evaluate_center(num_episodes=20, seed=10_000)
        if returns.mean() >= 475:
            return generation, float(returns.mean())
    return None, float(returns.mean())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgpe_solves_cartpole_within_budget(seed):
    generation, mean_return = solve_cartpole(seed)
    assert generation is not None, (f"seed {seed}: center return {mean_return} "
                                    f"after {BUDGET} generations")
    assert mean_return >= 475
