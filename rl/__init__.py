"""evoopt.rl: the Gymnasium side of evoopt.

Policies (:mod:`rl.policies`), observation normalisation shared by a population
(:mod:`rl.normalization`) and population rollouts that are population objectives for any
evoopt population optimizer (:mod:`rl.rollout`)::

    import gymnasium as gym, evoopt
    from rl import make_policy, PopulationRollout

    env = gym.make("CartPole-v1")
    policy = make_policy(env, kind="linear", obs_norm=True)
    opt = evoopt.PGPE(policy.parameters(), popsize=50, ...)
    objective = PopulationRollout("CartPole-v1", policy, popsize=50, seed=0)
    for _ in range(50):
        opt.step(objective)                      # losses = negated mean returns
    returns = objective.evaluate_center(policy, num_episodes=20, seed=123)
"""

from .algorithms import PPO, Reinforce
from .normalization import RunningNorm
from .policies import ActorCritic, LinearPolicy, MLPPolicy, Policy, make_policy
from .rollout import WORST_RETURN, PopulationRollout, RolloutResult
from .train import TrainResult, evaluate, load_policy, save_policy, train

__all__ = [
    "RunningNorm",
    "Policy",
    "LinearPolicy",
    "MLPPolicy",
    "ActorCritic",
    "make_policy",
    "PopulationRollout",
    "RolloutResult",
    "WORST_RETURN",
    "PPO",
    "Reinforce",
    "train",
    "TrainResult",
    "evaluate",
    "save_policy",
    "load_policy",
]
