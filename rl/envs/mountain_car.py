"""MountainCar-v0 and MountainCarContinuous-v0 in torch, step for step Gymnasium 1.x's
``MountainCarEnv`` and ``Continuous_MountainCarEnv``.

Moore, "Efficient memory-based learning for robot control", PhD thesis, Cambridge, 1990.
A car on the curve ``sin(3 x)``, position in [-1.2, 0.6], speed in [-0.07, 0.07]::

    v <- clip(v + push - 0.0025 cos(3 x), -0.07, 0.07);   x <- clip(x + v, -1.2, 0.6)

and ``v <- 0`` when the car hits the left wall moving left. Discrete: ``push = (a - 1)
0.001`` for a in {0, 1, 2}, terminated when ``x >= 0.5`` (and ``v >= 0``), reward -1, time
limit 200. Continuous: ``push = 0.0015 clip(a, -1, 1)``, terminated when ``x >= 0.45`` (and
``v >= 0``), reward ``100 [terminated] - 0.1 a^2`` with the unclipped action, time limit
999. Initial state: x uniform in [-0.6, -0.4], v = 0.

Gymnasium's continuous env stores its state as float32 after each step (terminating on
the float64 values before that rounding) and so computes ``3 x`` in float32; this class
does the same in float64 mode, and also rounds the initial state to float32 (Gymnasium
keeps the float64 draw until the first step: the first step differs by < 1e-7).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from ._classic import ClassicControlEnv, round32

__all__ = ["MountainCarEnv", "MountainCarContinuousEnv"]


class _MountainCar(ClassicControlEnv):
    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    num_reset_draws = 1
    state_names = ("position", "velocity")
    observe_state = True

    def __init__(self, num_envs: int, *, goal_velocity: float = 0.0, **kwargs):
        self.goal_velocity = float(goal_velocity)
        super().__init__(num_envs, **kwargs)

    def _observation_space(self, dtype):
        low, high = [self.min_position, -self.max_speed], [self.max_position, self.max_speed]
        return self._box(low, high, dtype)

    def _position_update(self, position, velocity):
        """Clip the speed, move, clip the position, stop at the left wall; returns the new
        ``(position, velocity, terminated)``."""
        velocity = torch.clamp(velocity, -self.max_speed, self.max_speed)
        position = torch.clamp(position + velocity, self.min_position, self.max_position)
        at_wall = (position == self.min_position) & (velocity < 0)
        velocity = torch.where(at_wall, torch.zeros_like(velocity), velocity)
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        return position, velocity, terminated


class MountainCarEnv(_MountainCar):
    spec_id = "MountainCar-v0"
    default_max_episode_steps = 200
    goal_position = 0.5
    force = 0.001
    gravity = 0.0025
    single_action_space = spaces.Discrete(3)

    def _initial_state(self, u):
        position = -0.6 + (-0.4 - -0.6) * u[0]
        return {"position": position, "velocity": torch.zeros_like(position)}

    def _dynamics(self, physics, actions):
        position, velocity = physics["position"], physics["velocity"]
        push = (actions - 1).to(position.dtype) * self.force
        velocity = velocity + (push + torch.cos(3 * position) * (-self.gravity))
        position, velocity, terminated = self._position_update(position, velocity)
        reward = torch.full_like(position, -1.0)
        return {"position": position, "velocity": velocity}, reward, terminated


class MountainCarContinuousEnv(_MountainCar):
    spec_id = "MountainCarContinuous-v0"
    default_max_episode_steps = 999
    goal_position = 0.45
    power = 0.0015
    single_action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _initial_state(self, u):
        position = round32(-0.6 + (-0.4 - -0.6) * u[0])
        return {"position": position, "velocity": torch.zeros_like(position)}

    def _dynamics(self, physics, actions):
        position, velocity = physics["position"], physics["velocity"]
        action = actions[:, 0]
        force = torch.clamp(action, -1.0, 1.0)
        velocity = velocity + (force * self.power - 0.0025 * torch.cos(round32(3 * position)))
        position, velocity, terminated = self._position_update(position, velocity)
        reward = 100.0 * terminated.to(position.dtype) - action.square() * 0.1
        state = {"position": round32(position), "velocity": round32(velocity)}
        return state, reward, terminated
