"""CartPole-v1 in torch, step for step Gymnasium 1.x's ``CartPoleEnv``.

Barto, Sutton and Anderson, "Neuronlike adaptive elements that can solve difficult learning
control problems", IEEE Trans. SMC 13(5), 1983. With force ``F = +-10`` (action 1 / 0),
``m = 0.1``, ``M = 1.1`` (total), ``l = 0.5``, ``g = 9.8``, ``tau = 0.02``::

    temp     = (F + m l theta_dot^2 sin theta) / M
    thetaacc = (g sin theta - cos theta temp) / (l (4/3 - m cos^2 theta / M))
    xacc     = temp - m l thetaacc cos theta / M

then one explicit Euler step of ``(x, x_dot, theta, theta_dot)``. Terminated when
``|x| > 2.4`` or ``|theta| > 12 degrees``; reward 1 on every step, the terminating one
included (``sutton_barto_reward=True``: 0, and -1 on termination); time limit 500; the
initial state is uniform in [-0.05, 0.05]^4. Gymnasium computes the state in float64 and
casts the observation to float32: ``dtype=torch.float64`` reproduces its state to rounding,
``torch.float32`` (default) computes in float32 throughout.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces

from ._classic import ClassicControlEnv

__all__ = ["CartPoleEnv"]


class CartPoleEnv(ClassicControlEnv):
    spec_id = "CartPole-v1"
    default_max_episode_steps = 500
    num_reset_draws = 4
    state_names = ("x", "x_dot", "theta", "theta_dot")
    observe_state = True
    single_action_space = spaces.Discrete(2)

    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5  # half the pole's length
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(self, num_envs: int, *, sutton_barto_reward: bool = False, **kwargs):
        self.sutton_barto_reward = bool(sutton_barto_reward)
        super().__init__(num_envs, **kwargs)

    def _observation_space(self, dtype):
        high = [self.x_threshold * 2, math.inf, self.theta_threshold_radians * 2, math.inf]
        return self._box([-h for h in high], high, dtype)

    def _initial_state(self, u):
        return {k: -0.05 + (0.05 - -0.05) * r for k, r in zip(self.state_names, u)}

    def _dynamics(self, physics, actions):
        x, x_dot, theta, theta_dot = (physics[k] for k in self.state_names)
        force = self.force_mag * (2 * actions.to(x.dtype) - 1)
        costheta = torch.cos(theta)
        sintheta = torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        if self.sutton_barto_reward:
            reward = -terminated.to(x.dtype)
        else:
            reward = torch.ones_like(x)
        return dict(zip(self.state_names, (x, x_dot, theta, theta_dot))), reward, terminated
