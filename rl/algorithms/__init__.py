"""Policy-gradient algorithms on gymnasium vector envs; each hands its update to any
``torch.optim.Optimizer`` (Adam, SGD, ClipUp, KLAdaptive, ...)."""

from .ppo import PPO, PPO_METRICS
from .reinforce import REINFORCE_METRICS, Reinforce

__all__ = ["PPO", "PPO_METRICS", "Reinforce", "REINFORCE_METRICS"]
