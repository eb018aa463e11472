"""Acrobot-v1 in torch, step for step Gymnasium 1.x's ``AcrobotEnv`` ("book" dynamics).

Sutton, "Generalization in reinforcement learning: successful examples using sparse coarse
coding", NIPS 1996; Sutton and Barto, "Reinforcement Learning: An Introduction", 1998. Two
links (``m1 = m2 = 1``, ``l1 = 1``, centres of mass at 0.5, moments of inertia 1, ``g =
9.8``), a torque ``a`` in {-1, 0, +1} on the joint between them::

    d1 = m1 lc1^2 + m2 (l1^2 + lc2^2 + 2 l1 lc2 cos t2) + I1 + I2
    d2 = m2 (lc2^2 + l1 lc2 cos t2) + I2
    phi2 = m2 lc2 g cos(t1 + t2 - pi/2)
    phi1 = -m2 l1 lc2 dt2^2 sin t2 - 2 m2 l1 lc2 dt2 dt1 sin t2 + (m1 lc1 + m2 l1) g cos(t1 - pi/2)
           + phi2
    ddt2 = (a + d2 / d1 phi1 - m2 l1 lc2 dt1^2 sin t2 - phi2) / (m2 lc2^2 + I2 - d2^2 / d1)
    ddt1 = -(d2 ddt2 + phi1) / d1

integrated by one classical Runge-Kutta 4 step of ``dt = 0.2``; the angles are then
wrapped into [-pi, pi] (by repeated +-2 pi, as Gymnasium's ``wrap``) and the velocities
clipped to 4 pi and 9 pi. Terminated when ``-cos t1 - cos(t2 + t1) > 1`` (the tip above the
bar), reward -1 per step (0 on the terminating one), time limit 500; observation
``(cos t1, sin t1, cos t2, sin t2, dt1, dt2)``; initial state uniform in [-0.1, 0.1]^4,
rounded to float32 as Gymnasium does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

from ._classic import ClassicControlEnv, round32

__all__ = ["AcrobotEnv"]

pi = math.pi
_WRAP_ITERATIONS = 4  # Gymnasium's while loops, unrolled: exact for |angle| < 9 pi


def wrap(x, m, M):
    """Gymnasium's ``wrap``: add or subtract ``M - m`` one at a time until x is in [m, M]."""
    diff = M - m
    for _ in range(_WRAP_ITERATIONS):
        x = torch.where(x > M, x - diff, x)
    for _ in range(_WRAP_ITERATIONS):
        x = torch.where(x < m, x + diff, x)
    return x


class AcrobotEnv(ClassicControlEnv):
    spec_id = "Acrobot-v1"
    default_max_episode_steps = 500
    num_reset_draws = 4
    state_names = ("theta1", "theta2", "dtheta1", "dtheta2")
    single_action_space = spaces.Discrete(3)

    dt = 0.2
    LINK_LENGTH_1 = 1.0
    LINK_MASS_1 = 1.0
    LINK_MASS_2 = 1.0
    LINK_COM_POS_1 = 0.5
    LINK_COM_POS_2 = 0.5
    LINK_MOI = 1.0
    MAX_VEL_1 = 4 * pi
    MAX_VEL_2 = 9 * pi

    def _observation_space(self, dtype):
        high = np.array([1.0, 1.0, 1.0, 1.0, self.MAX_VEL_1, self.MAX_VEL_2], np.float32)
        return self._box(-high, high, dtype)

    def _initial_state(self, u):
        return {k: round32(-0.1 + (0.1 - -0.1) * r) for k, r in zip(self.state_names, u)}

    def _observe(self, physics):
        t1, t2, dt1, dt2 = (physics[k] for k in self.state_names)
        trig = (torch.cos(t1), torch.sin(t1), torch.cos(t2), torch.sin(t2))
        return torch.stack((*trig, dt1, dt2)).T

    def _dsdt(self, s, a):
        """Time derivative of ``s = (t1, t2, dt1, dt2)`` under torque ``a``, written as
        Gymnasium's ``_dsdt`` (same operation order)."""
        m1, m2 = self.LINK_MASS_1, self.LINK_MASS_2
        l1, lc1, lc2 = self.LINK_LENGTH_1, self.LINK_COM_POS_1, self.LINK_COM_POS_2
        I1 = I2 = self.LINK_MOI
        g = 9.8
        theta1, theta2, dtheta1, dtheta2 = s
        cos2, sin2 = torch.cos(theta2), torch.sin(theta2)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + I2
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * sin2
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * sin2 - phi2) / (
            m2 * lc2**2 + I2 - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return dtheta1, dtheta2, ddtheta1, ddtheta2

    def _rk4(self, y0, a):
        """Gymnasium's ``rk4`` over ``[0, dt]`` (one step), component by component."""
        dt = self.dt - 0
        dt2 = dt / 2.0
        k1 = self._dsdt(y0, a)
        k2 = self._dsdt([y + dt2 * k for y, k in zip(y0, k1)], a)
        k3 = self._dsdt([y + dt2 * k for y, k in zip(y0, k2)], a)
        k4 = self._dsdt([y + dt * k for y, k in zip(y0, k3)], a)
        return [
            y + dt / 6.0 * (q1 + 2 * q2 + 2 * q3 + q4)
            for y, q1, q2, q3, q4 in zip(y0, k1, k2, k3, k4)
        ]

    def _dynamics(self, physics, actions):
        s = [physics[k] for k in self.state_names]
        torque = actions.to(s[0].dtype) - 1  # AVAIL_TORQUE = [-1, 0, +1]
        t1, t2, dt1, dt2 = self._rk4(s, torque)
        t1, t2 = wrap(t1, -pi, pi), wrap(t2, -pi, pi)
        dt1 = torch.clamp(dt1, -self.MAX_VEL_1, self.MAX_VEL_1)
        dt2 = torch.clamp(dt2, -self.MAX_VEL_2, self.MAX_VEL_2)
        terminated = -torch.cos(t1) - torch.cos(t2 + t1) > 1.0
        reward = terminated.to(t1.dtype) - 1.0
        return dict(zip(self.state_names, (t1, t2, dt1, dt2))), reward, terminated
