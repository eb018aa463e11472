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


class NonFiniteObservations(gym.Wrapper):
    """Replaces a step's observation by ``value`` (NaN or inf, all coordinates) with
    probability ``rate``, from a generator seeded by ``reset(seed=...)``: the same episode
    in the rollout and in a plain loop."""

    def __init__(self, env, rate=0.02, value=float("nan")):
        super().__init__(env)
        self.rate, self.value = rate, value
        self._rng = np.random.default_rng(0)

    def reset(self, *, seed=None, options=None):
        self._rng = np.random.default_rng([12345, 0 if seed is None else seed])
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        if self._rng.random() < self.rate:
            obs = np.full_like(obs, self.value)
        return obs, r, term, trunc, info
