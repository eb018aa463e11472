"""Shared pieces of the rl.envs tests: the device parameter, one policy per env family
(random, or a noisy heuristic that reaches the goal so that termination is covered), and
Gymnasium twins started from a torch env's state."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl.envs

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]

CLASSIC_IDS = list(rl.envs.CLASSIC)


def _uniform(gen, n, low, high, dtype, device):
    return low + (high - low) * torch.rand(n, generator=gen, dtype=dtype, device=device)


def policy(env_id, obs, gen, greedy):
    """Actions for ``obs``: uniform random where ``greedy`` is False, else a heuristic that
    ends episodes (CartPole balanced to the time limit, the cars and the Acrobot pumped
    to the goal). Continuous random actions reach beyond the bounds to test clipping,
    except MountainCarContinuous's (see test_classic_equal_gymnasium)."""
    n, dev, dt = obs.shape[0], obs.device, obs.dtype
    coin = torch.rand(n, generator=gen, device=dev)
    if env_id == "CartPole-v1":
        rand = (coin < 0.5).long()
        heur = (3 * obs[:, 2] + obs[:, 3] > 0).long()
    elif env_id == "Acrobot-v1":
        rand = (coin * 3).long()
        heur = torch.where(obs[:, 5] > 0, 2, 0)
    elif env_id == "MountainCar-v0":
        rand = (coin * 3).long()
        heur = torch.where(obs[:, 1] >= 0, 2, 0)
    elif env_id == "MountainCarContinuous-v0":
        rand = _uniform(gen, (n, 1), -1.0, 1.0, dt, dev)
        heur = torch.where(obs[:, 1:2] >= 0, 1.0, -1.0).to(dt)
        return torch.where(greedy[:, None], heur, rand)
    elif env_id == "Pendulum-v1":
        return _uniform(gen, (n, 1), -2.5, 2.5, dt, dev)
    return torch.where(greedy, heur, rand)


def set_gym_state(env, state_row: np.ndarray) -> None:
    """Put Gymnasium's ``env`` into ``state_row`` (a torch env's ``state`` row)."""
    if env.spec.id == "MountainCarContinuous-v0":  # Gymnasium keeps this state in float32
        env.unwrapped.state = state_row.astype(np.float32)
    else:
        env.unwrapped.state = state_row.astype(np.float64)


def gym_twin(env_id, state_row: np.ndarray):
    """``gymnasium.make(env_id)`` (time limit included) put into ``state_row``."""
    env = gym.make(env_id)
    env.reset(seed=0)
    set_gym_state(env, state_row)
    return env


def gym_action(action: torch.Tensor, dtype=np.float64):
    a = action.cpu().numpy()
    return int(a) if a.ndim == 0 else a.astype(dtype)
