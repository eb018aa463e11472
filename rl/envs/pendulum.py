"""Pendulum-v1 in torch, step for step Gymnasium 1.x's ``PendulumEnv``.

A frictionless pendulum (``m = l = 1``, ``g = 10``, ``dt = 0.05``) driven by a torque
``u`` clipped to [-2, 2]; semi-implicit Euler with the angular velocity clipped to [-8, 8]::

    cost       = normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2,   normalize(a) = (a + pi) mod 2 pi - pi
    newthdot   = clip(thdot + (3 g / (2 l) sin th + 3 / (m l^2) u) dt, -8, 8)
    newth      = th + newthdot dt

reward ``-cost`` (computed from the state before the step), never terminates, time limit
200; observation ``(cos th, sin th, thdot)``; initial state uniform in [-pi, pi] x [-1, 1].
Gymnasium computes in float64 with the action's dtype for ``u`` (float32 for actions from
its Box): ``dtype=torch.float64`` reproduces it for float64 actions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

from ._classic import ClassicControlEnv

__all__ = ["PendulumEnv"]


def angle_normalize(x):
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class PendulumEnv(ClassicControlEnv):
    spec_id = "Pendulum-v1"
    default_max_episode_steps = 200
    num_reset_draws = 2
    state_names = ("th", "thdot")
    max_speed = 8
    max_torque = 2.0
    dt = 0.05
    m = 1.0
    l = 1.0  # noqa: E741 (gymnasium's name)
    single_action_space = spaces.Box(-max_torque, max_torque, (1,), np.float32)

    def __init__(self, num_envs: int, *, g: float = 10.0, **kwargs):
        self.g = float(g)
        super().__init__(num_envs, **kwargs)

    def _observation_space(self, dtype):
        return self._box([-1.0, -1.0, -self.max_speed], [1.0, 1.0, self.max_speed], dtype)

    def _initial_state(self, u):
        th, thdot = u
        return {"th": -math.pi + (math.pi - -math.pi) * th, "thdot": -1.0 + (1.0 - -1.0) * thdot}

    def _observe(self, physics):
        th = physics["th"]
        return torch.stack((torch.cos(th), torch.sin(th), physics["thdot"])).T

    def _dynamics(self, physics, actions):
        th, thdot = physics["th"], physics["thdot"]
        g, m, l, dt = self.g, self.m, self.l, self.dt
        u = torch.clamp(actions[:, 0], -self.max_torque, self.max_torque)
        costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
        newthdot = thdot + (3 * g / (2 * l) * torch.sin(th) + 3.0 / (m * l**2) * u) * dt
        newthdot = torch.clamp(newthdot, -self.max_speed, self.max_speed)
        newth = th + newthdot * dt
        terminated = torch.zeros_like(th, dtype=torch.bool)
        return {"th": newth, "thdot": newthdot}, -costs, terminated
