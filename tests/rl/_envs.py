"""Tiny environments with known optima for the policy-gradient tests."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TargetEnv(gym.Env):
    """One-step continuous task: obs ~ U[-1, 1]^2, reward -(a - (obs0 - 0.5 obs1))^2.
    The optimal linear policy is a = [1, -0.5] . obs."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs, {}

    def step(self, action):
        target = self._obs[0] - 0.5 * self._obs[1]
        reward = -float((float(np.asarray(action).reshape(-1)[0]) - target) ** 2)
        return self._obs, reward, True, False, {}


class BanditEnv(gym.Env):
    """One-step discrete task with constant observation: rewards [1, 0, 0.5]."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(3)
    rewards = (1.0, 0.0, 0.5)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        return np.ones(1, np.float32), self.rewards[int(action)], True, False, {}


def vector(env_cls, n):
    return gym.vector.SyncVectorEnv([env_cls for _ in range(n)])
