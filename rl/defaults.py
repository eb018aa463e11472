"""Per-task defaults for ``evoopt train``: what runs when the user gives only an env id.

One readable table. ``PRESETS[(env_id, optimizer)]`` holds settings known to work for that
pair; ``train`` applies them *under* the user's own arguments (anything the user passes
wins). ``DEFAULT_OPTIMIZER[env_id]`` is the optimizer ``evoopt train ENV`` uses when no
``--optimizer`` is given.

Keys a preset may hold (all optional): ``policy`` ("linear" | "mlp"), ``hidden``, ``lr``,
``popsize``, ``num_envs``, ``obs_norm``, ``obs_std_rule``, ``policy_kwargs``,
``optimizer_kwargs``, ``algo_kwargs``, ``grad_optimizer``, ``total_timesteps`` /
``iterations`` (the default budget), ``rollout_kwargs`` and ``target_return`` (the task's
usual "solved" threshold, used to stop early).
"""

from __future__ import annotations

import functools
from typing import Any

import evoopt

__all__ = ["PRESETS", "DEFAULT_OPTIMIZER"]

#: The optimizer ``evoopt train ENV`` runs when none is given.
DEFAULT_OPTIMIZER: dict[str, str] = {
    "CartPole-v1": "pgpe",
}

#: Per-task settings that are known to work (applied under the user's keyword arguments).
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # rl-zoo (hyperparams/ppo.yml, CartPole-v1)
    ("CartPole-v1", "ppo"): dict(num_envs=8, lr=1e-3, algo_kwargs=dict(
        num_steps=32, gamma=0.98, gae_lambda=0.8, num_minibatches=1, update_epochs=20, ent_coef=0.0,
        clip_coef=0.2, anneal_lr=True, anneal_clip_coef=True, clip_vloss=False,
        vf_coef=1.0)),  # SB3 minimises vf_coef * mse = 0.5 * mse; ours vf_coef * 0.5 * mse
    ("CartPole-v1", "reinforce"): dict(num_envs=8, lr=1e-2, hidden=(32,)),
    # EvoTorch's CartPole PGPE example (max_speed 0.15), linear policy
    ("CartPole-v1", "pgpe"): dict(popsize=50, lr=0.1125, optimizer_kwargs=dict(
        radius_init=2.25, stdev_lr=0.1, stdev_max_change=0.2, optimizer=functools.partial(
            evoopt.ClipUp, lr=0.1125, momentum=0.9, max_speed=0.15))),
}
