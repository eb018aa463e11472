r"""Discounted returns and generalized advantage estimation over ``[T, N]`` rollouts.

GAE: J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, "High-Dimensional
Continuous Control Using Generalized Advantage Estimation", ICLR 2016,
https://arxiv.org/abs/1506.02438.

A rollout holds ``T`` steps of ``N`` parallel environments. For step ``t`` of env
``n``: ``rewards[t]`` is the reward of the transition ``s_t -> s_{t+1}``,
``values[t] = V(s_t)``, ``next_values[t] = V(s_{t+1})`` where ``s_{t+1}`` is the
*true* next state (the final observation when the episode ended at ``t``), and
``terminated[t]`` / ``truncated[t]`` say how the episode ended at ``t``, if it did.

- ``terminated``: ``s_{t+1}`` is terminal, its value is 0 -- no bootstrap;
- ``truncated`` (time limit): the episode is cut, not over -- bootstrap with
  ``next_values[t]``;
- either way the recursion does not run across the boundary: step ``t + 1``
  belongs to another episode.

The maths, with ``done_t = terminated_t or truncated_t``::

    delta_t = rewards_t + gamma * (1 - terminated_t) * next_values_t - values_t     (GAE eq. 10)
    A_t     = delta_t + gamma * gae_lambda * (1 - done_t) * A_{t+1},  A_T = 0      (GAE eq. 16)
    returns_t = A_t + values_t                                    (the TD(lambda) value target)

and the discounted return (Monte Carlo, REINFORCE's target)::

    G_t = rewards_t + gamma * (1 - terminated_t) * (next_values_t  if truncated_t or t = T-1
                                                    else G_{t+1})

With ``next_values=None`` nothing is bootstrapped (a cut episode counts as ended).
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoopt.checks import check_range

__all__ = ["compute_gae", "discounted_returns", "next_values_from"]


def _as_float_mask(x: Tensor | None, like: Tensor, name: str) -> Tensor:
    if x is None:
        return torch.zeros_like(like)
    x = torch.as_tensor(x, device=like.device)
    if x.shape != like.shape:
        raise ValueError(f"Invalid {name}: shape {tuple(x.shape)} (expected {tuple(like.shape)}, "
                         "the shape of rewards)")
    return x.to(like.dtype)


def _check_rewards(rewards: Tensor) -> Tensor:
    rewards = torch.as_tensor(rewards)
    if rewards.dim() not in (1, 2):
        raise ValueError(f"Invalid rewards: shape {tuple(rewards.shape)} (expected [T] or [T, N])")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    return rewards


def next_values_from(values: Tensor, last_value: Tensor) -> Tensor:
    """``next_values[t] = values[t + 1]`` and ``next_values[T-1] = last_value``.

    Right for a vector env with gymnasium's NEXT_STEP autoreset: after an episode ends
    at ``t``, the observation at ``t + 1`` is the final observation (the step that
    follows only resets), so ``values[t + 1]`` is the value of the true next state.
    """
    last = torch.as_tensor(last_value, dtype=values.dtype).reshape(1, *values.shape[1:])
    return torch.cat([values[1:], last])


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor | None = None,
    *,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimates and value targets; returns ``(advantages, returns)``,
    both shaped like ``rewards``. See the module docstring for the maths."""
    gamma = check_range("gamma", gamma, 0.0, 1.0)
    gae_lambda = check_range("gae_lambda", gae_lambda, 0.0, 1.0)
    rewards = _check_rewards(rewards)
    values = torch.as_tensor(values, dtype=rewards.dtype, device=rewards.device)
    next_values = torch.as_tensor(next_values, dtype=rewards.dtype, device=rewards.device)
    for name, v in (("values", values), ("next_values", next_values)):
        if v.shape != rewards.shape:
            raise ValueError(f"Invalid {name}: shape {tuple(v.shape)} (expected "
                             f"{tuple(rewards.shape)}, "
                             "the shape of rewards)")
    term = _as_float_mask(terminated, rewards, "terminated")
    trunc = _as_float_mask(truncated, rewards, "truncated")
    not_done = 1.0 - torch.maximum(term, trunc)
    delta = rewards + gamma * (1.0 - term) * next_values - values
    advantages = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = delta[t] + gamma * gae_lambda * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


def discounted_returns(
    rewards: Tensor,
    terminated: Tensor,
    truncated: Tensor | None = None,
    *,
    gamma: float = 0.99,
    next_values: Tensor | None = None,
) -> Tensor:
    """Discounted returns ``G_t`` (module docstring), shaped like ``rewards``.

    ``next_values`` bootstraps truncated episodes and the end of the rollout; without it
    they are cut (bootstrap value 0).
    """
    gamma = check_range("gamma", gamma, 0.0, 1.0)
    rewards = _check_rewards(rewards)
    term = _as_float_mask(terminated, rewards, "terminated")
    trunc = _as_float_mask(truncated, rewards, "truncated")
    if next_values is None:
        next_values = torch.zeros_like(rewards)
    else:
        next_values = torch.as_tensor(next_values, dtype=rewards.dtype, device=rewards.device)
        if next_values.shape != rewards.shape:
            raise ValueError(f"Invalid next_values: shape {tuple(next_values.shape)} "
                             f"(expected {tuple(rewards.shape)}, the shape of rewards)")
    out = torch.empty_like(rewards)
    following = next_values[-1]  # bootstrap at the end of the rollout
    for t in range(rewards.shape[0] - 1, -1, -1):
        tail = torch.where(trunc[t] > 0, next_values[t], following)
        following = rewards[t] + gamma * (1.0 - term[t]) * tail
        out[t] = following
    return out
