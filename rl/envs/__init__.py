"""Batched environments whose state lives in torch tensors on one device.

``make(env_id, num_envs, device=..., seed=...)`` returns a :class:`TorchVectorEnv` (Gymnasium
``VectorEnv`` conventions, torch tensors in and out): classic control in pure torch
(``CartPole-v1``, ``Acrobot-v1``, ``MountainCar-v0``, ``MountainCarContinuous-v0``,
``Pendulum-v1``, equal to Gymnasium 1.x's envs step for step) and MuJoCo tasks on MuJoCo
Warp (``rl.envs.mujoco_warp``, the ``[warp]`` extra). ``registered()`` lists the ids.
"""

from __future__ import annotations

import importlib

import torch

from .acrobot import AcrobotEnv
from .base import TorchVectorEnv
from .cartpole import CartPoleEnv
from .mountain_car import MountainCarContinuousEnv, MountainCarEnv
from .pendulum import PendulumEnv

__all__ = [
    "AcrobotEnv",
    "CartPoleEnv",
    "MountainCarContinuousEnv",
    "MountainCarEnv",
    "PendulumEnv",
    "TorchVectorEnv",
    "make",
    "registered",
]

CLASSIC = {
    cls.spec_id: cls
    for cls in (CartPoleEnv, AcrobotEnv, MountainCarEnv, MountainCarContinuousEnv, PendulumEnv)
}
MUJOCO = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Swimmer-v5", "Ant-v5", "Humanoid-v5")


def registered() -> list[str]:
    """The env ids :func:`make` builds: classic control (torch) and MuJoCo (Warp)."""
    return [*CLASSIC, *MUJOCO]


def make(
    env_id: str,
    num_envs: int,
    device="cpu",
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    autoreset_mode: str = "same_step",
    max_episode_steps: int | None = None,
    **kwargs,
) -> TorchVectorEnv:
    """A batch of ``num_envs`` copies of ``env_id`` on ``device``.

    Args:
        env_id: one of :func:`registered`.
        num_envs, device, seed, dtype, autoreset_mode, max_episode_steps: see
            :class:`TorchVectorEnv`.
        **kwargs: the env's own options (``sutton_barto_reward`` for CartPole, ``g`` for
            Pendulum, ``goal_velocity`` for the mountain cars) and ``compile``,
            ``check_actions``.

    Example::

        env = rl.envs.make("CartPole-v1", num_envs=4096, device="cuda", seed=0)
        obs, info = env.reset()
        obs, reward, terminated, truncated, info = env.step(actions)
    """
    common = dict(
        num_envs=num_envs,
        device=device,
        seed=seed,
        dtype=dtype,
        autoreset_mode=autoreset_mode,
        max_episode_steps=max_episode_steps,
    )
    if env_id in CLASSIC:
        return CLASSIC[env_id](**common, **kwargs)
    if env_id in MUJOCO:
        return _mujoco_warp().make_warp_env(env_id, **common, **kwargs)
    raise ValueError(
        f"Invalid env_id: {env_id!r} has no device implementation (expected one of "
        f"{registered()}); the gymnasium backend runs every other Gymnasium env"
    )


def _mujoco_warp():
    try:
        return importlib.import_module("rl.envs.mujoco_warp")
    except ImportError as err:
        raise ImportError(
            f"MuJoCo envs on the device need MuJoCo Warp ({err}); install it with "
            f'`pip install -e ".[warp]"`, or use the gymnasium backend'
        ) from err
