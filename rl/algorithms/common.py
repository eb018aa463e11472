"""Pieces shared by the policy-gradient algorithms: the agent protocol, sampling with a
private generator, the optimizer argument, vector-env checks and episode bookkeeping.

The agent protocol (met by :class:`rl.policies.ActorCritic` and any stochastic
:class:`rl.policies.Policy`)::

    agent.distribution(obs) -> torch.distributions.Categorical | Independent(Normal)
    agent.value(obs)        -> [...] state values            (PPO; REINFORCE's value baseline)
    agent.to_env(action)    -> the env action (optional; identity when absent)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent, Normal
from torch.optim import Optimizer

__all__ = ["sample_action", "build_optimizer", "check_vector_env", "EpisodeTracker",
           "to_env_action"]


def sample_action(dist: Distribution, generator: torch.Generator) -> Tensor:
    """Draw one action from ``dist`` with ``generator`` (torch.distributions' ``sample`` would
    use the global RNG)."""
    if isinstance(dist, Categorical):
        probs = dist.probs.reshape(-1, dist.probs.shape[-1])
        return torch.multinomial(probs, 1, generator=generator).reshape(dist.probs.shape[:-1])
    base = dist.base_dist if isinstance(dist, Independent) else dist
    if isinstance(base, Normal):
        eps = torch.randn(base.loc.shape, generator=generator, dtype=base.loc.dtype,
                          device=base.loc.device)
        return base.loc + base.scale * eps
    raise ValueError(f"Invalid distribution: {type(dist).__name__} (expected Categorical or "
                     "Normal)")


def build_optimizer(optimizer, params: list[Tensor],
                    default: Callable[[list], Optimizer]) -> Optimizer:
    """``optimizer`` is an Optimizer over the agent's parameters, a factory ``params ->
    Optimizer`` (e.g. ``functools.partial(torch.optim.Adam, lr=3e-4)``), or None (default)."""
    if optimizer is None:
        optimizer = default
    if not isinstance(optimizer, Optimizer):
        if not callable(optimizer):
            raise ValueError(f"Invalid optimizer: {optimizer!r} (expected a torch.optim.Optimizer "
                             "or a callable params -> Optimizer)")
        optimizer = optimizer(params)
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"Invalid optimizer: the factory returned {type(optimizer).__name__} "
                         "(expected a torch.optim.Optimizer)")
    from evoopt.population import PopulationOptimizer

    if isinstance(optimizer, PopulationOptimizer):
        raise ValueError(f"Invalid optimizer: {type(optimizer).__name__} is a population "
                         "optimizer; "
                         "policy gradients need a gradient optimizer (use rl.train for "
                         "populations)")
    ids = {id(p) for p in params}
    owned = [p for g in optimizer.param_groups for p in g["params"]]
    if not owned or any(id(p) not in ids for p in owned):
        raise ValueError("Invalid optimizer: its parameters are not the agent's parameters")
    return optimizer


def check_vector_env(envs) -> None:
    """PPO and REINFORCE step a gymnasium ``VectorEnv`` with the NEXT_STEP autoreset (the
    default of SyncVectorEnv, AsyncVectorEnv and the native CartPole vector env)."""
    import gymnasium as gym

    if not isinstance(envs, gym.vector.VectorEnv):
        raise ValueError(f"Invalid envs: {type(envs).__name__} (expected a "
                         "gymnasium.vector.VectorEnv; "
                         "wrap one env with gymnasium.vector.SyncVectorEnv([lambda: env]))")
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    if str(getattr(mode, "value", mode)) != "NextStep":
        raise ValueError(f"Invalid envs: autoreset_mode {mode} (expected AutoresetMode.NEXT_STEP)")


def to_env_action(agent, action: Tensor, action_space) -> np.ndarray:
    """The numpy action for ``envs.step``: ``agent.to_env`` if the agent has it."""
    to_env = getattr(agent, "to_env", None)
    a = to_env(action) if to_env is not None else action
    return a.detach().cpu().numpy().astype(action_space.dtype, copy=False)


class EpisodeTracker:
    """Running return and length of each env's current episode; finished episodes are
    collected in ``returns`` / ``lengths`` until :meth:`pop`."""

    def __init__(self, num_envs: int):
        self.ret = np.zeros(num_envs, dtype=np.float64)
        self.len = np.zeros(num_envs, dtype=np.int64)
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def reset(self) -> None:
        self.ret[:] = 0.0
        self.len[:] = 0

    def add(self, rewards: np.ndarray, valid: np.ndarray, done: np.ndarray) -> None:
        self.ret += np.where(valid, rewards, 0.0)
        self.len += valid
        for i in np.flatnonzero(done & valid):
            self.returns.append(float(self.ret[i]))
            self.lengths.append(int(self.len[i]))
            self.ret[i] = 0.0
            self.len[i] = 0

    def pop(self) -> tuple[float, float, int]:
        """Mean return, mean length and count of the episodes finished since the last pop
        (NaN means when none finished)."""
        n = len(self.returns)
        r = float(np.mean(self.returns)) if n else float("nan")
        ln = float(np.mean(self.lengths)) if n else float("nan")
        self.returns, self.lengths = [], []
        return r, ln, n


def run_until(algo, total_timesteps: int, callback=None) -> list[dict[str, float]]:
    """Call ``algo.iterate()`` until ``algo.global_step >= total_timesteps`` or
    ``callback(metrics)`` returns True; the list of metrics of every iteration."""
    history = []
    while algo.global_step < total_timesteps:
        m = algo.iterate()
        history.append(m)
        if callback is not None and callback(m):
            break
    return history
