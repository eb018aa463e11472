r"""PSO: Particle Swarm Optimisation with Clerc & Kennedy's constriction coefficients.

Kennedy & Eberhart (1995), "Particle swarm optimization", Proc. ICNN'95,
https://doi.org/10.1109/ICNN.1995.488968; Clerc & Kennedy (2002), "The particle swarm --
explosion, stability, and convergence in a multidimensional complex space", IEEE TEC 6(1),
https://doi.org/10.1109/4235.985692 (the constriction coefficient
``chi = 2 / |2 - phi - sqrt(phi^2 - 4 phi)| = 0.7298`` for ``phi = phi_1 + phi_2 = 4.1``);
Eberhart & Shi (2000), "Comparing inertia weights and constriction factors in particle swarm
optimization", CEC, https://doi.org/10.1109/CEC.2000.870279 (the same update written with an
inertia weight: ``w = chi = 0.7298``, ``c1 = c2 = chi * 2.05 = 1.49618``); ring (lbest)
topology: Kennedy & Mendes (2002), CEC, https://doi.org/10.1109/CEC.2002.1004493.

The state holds ``P`` particles: positions ``x_i``, velocities ``v_i``, personal bests
``p_i`` with their losses ``f_i``. One generation, in the code's names (``r1, r2 ~ U[0, 1)``
drawn per particle and coordinate, products elementwise)::

    l_i = the best p_k of i's neighbourhood      global: the whole swarm (l_i = m)
                                                 ring:   k in {i, i - 1, i + 1} (mod P)
    v_i <- lr v_i + c1 r1 (p_i - x_i) + c2 r2 (l_i - x_i)     (Clerc & Kennedy, constriction
    x_i <- x_i + v_i                                           in the inertia-weight form)
    after evaluation:  f(x_i) < f_i  ->  p_i, f_i <- x_i, f(x_i)

``lr`` is the inertia weight ``w`` (default ``chi = 0.7298``) and is schedulable: Shi &
Eberhart's (1998, https://doi.org/10.1109/ICEC.1998.699146) linearly decreasing inertia
``0.9 -> 0.4`` is ``torch.optim.lr_scheduler.LinearLR`` on it. ``c1`` and ``c2`` are
constructor settings (default 1.49618 each). With ``lr = 0.7298`` and ``c1 = c2 = 1.49618``
the swarm converges without velocity clamping (Clerc & Kennedy); no ``v_max`` is applied.

The rows of a generation are the particles' new positions. The first generation's rows are
the initial positions ``x_i = x_0 + sigma z_i``, ``z_i ~ N(0, I)`` (``x_0``: the parameters
at the first ask), with zero velocities and ``p_i = x_i`` (Engelbrecht 2012,
https://doi.org/10.1109/CEC.2012.6256112, finds zero initial velocities as good as random
ones and less prone to leaving the search box); if all their losses are equal, the swarm is
drawn again at the next generation.

The center ``m`` (``st["mean"]``, what the parameters hold after each step) is the swarm's
best personal best; it moves only to a strictly better one (ties keep the earlier center).

Param groups: ``lr`` (inertia), ``sigma`` (the initial spread of the swarm around the
starting parameters, and nothing else: :attr:`current_sigma` then reports the exact expected
RMS deviation of the next positions from ``m``, ignoring the bounds; changing ``sigma`` later
has no effect), ``lower`` / ``upper`` (default -inf / inf): a position that leaves the box is
put back on the bound it crossed and that velocity coordinate is set to 0 (absorbing walls,
Robinson & Rahmat-Samii 2004, https://doi.org/10.1109/TAP.2004.823969); ``x_0`` must lie in
the box. Non-finite losses: as in :mod:`evoopt.algorithms.de`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_choice, check_positive
from ..population import PopulationOptimizer
from ..registry import register
from ._steady_state import (
    box,
    check_group,
    check_loaded_population,
    check_start,
    finite_losses,
    initial_population,
    move_center,
    start_or_skip,
)

__all__ = ["PSO", "PSO_TOPOLOGIES", "CHI", "C_CONSTRICTION"]

PSO_TOPOLOGIES = ("global", "ring")
CHI = 0.7298  # Clerc & Kennedy 2002, chi for phi = 4.1
C_CONSTRICTION = 1.49618  # chi * phi / 2 (Eberhart & Shi 2000)


@register("pso")
class PSO(PopulationOptimizer):
    r"""Particle Swarm Optimisation (Kennedy & Eberhart 1995) with the constriction
    coefficients of Clerc & Kennedy (2002). See the module docstring for the maths.

    Args:
        params: parameters or param groups to optimise.
        lr: inertia weight ``w`` (default 0.7298, Clerc & Kennedy's ``chi``); schedulable.
        sigma: initial spread of the swarm around the parameters (default 0.1).
        lower, upper: bounds of the coordinates (default -inf / inf; per group).
        popsize: number of particles; ``None`` (default): ``10 + floor(2 sqrt D)`` (Clerc's
            SPSO 2007). At least 2.
        topology: ``"global"`` (default, gbest) or ``"ring"`` (lbest, two neighbours).
        c1, c2: cognitive and social coefficients (default 1.49618 each).
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``position``, ``velocity``, ``personal_best`` [P, D]
    (the parameters' dtype), ``fitness`` [P] (float64, the personal bests' losses), ``mean``
    (the best personal best), ``center_loss``, ``initialized``.
    """

    settings = ("topology", "c1", "c2")
    min_popsize = 2
    param_dtype_state = ("position", "velocity", "personal_best")
    loss_dtype = torch.float64  # raw losses compared across generations
    nonfinite_loss = "inf"  # a non-finite loss must never win over an older one

    def __init__(self, params, lr: float = CHI, sigma: float = 0.1, *,
                 lower: float = -math.inf, upper: float = math.inf, popsize: int | None = None,
                 topology: str = "global", c1: float = C_CONSTRICTION,
                 c2: float = C_CONSTRICTION, maximize: bool = False, seed: int | None = None):
        self.topology = check_choice("topology", topology, set(PSO_TOPOLOGIES))
        self.c1 = check_positive("c1", c1, allow_zero=True)
        self.c2 = check_positive("c2", c2, allow_zero=True)
        defaults = dict(lr=lr, sigma=sigma, lower=lower, upper=upper)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        return 10 + math.floor(2 * math.sqrt(num_params))

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_group(group, initial=initial)  # lr, sigma, lower < upper

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        check_start(self, mean)
        P = self.popsize
        st["position"] = mean.expand(P, -1).clone()
        st["velocity"] = torch.zeros_like(st["position"])
        st["personal_best"] = st["position"].clone()
        st["fitness"] = torch.zeros(P, dtype=torch.float64, device=mean.device)
        st["center_loss"], st["initialized"] = 0.0, False

    def _neighbourhood_best(self, st: dict[str, Any]) -> Tensor:
        """``l_i``: ``m`` (global), or the best of ``p_i, p_(i-1), p_(i+1)`` (ring; ties go
        to the first in that order)."""
        if self.topology == "global":
            return st["mean"]
        f = st["fitness"]
        hood = torch.stack([f, f.roll(1), f.roll(-1)], 1)  # [P, 3]: i, i - 1, i + 1
        shift = torch.tensor([0, -1, 1], device=f.device)[torch.argmin(hood, 1)]
        return st["personal_best"][(torch.arange(len(f), device=f.device) + shift) % len(f)]

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Any]:
        if not st["initialized"]:
            return initial_population(self, st, gen), None
        x, p = st["position"], st["personal_best"]
        r = torch.rand(2, *x.shape, generator=gen, dtype=x.dtype, device=x.device)
        social = self._neighbourhood_best(st) - x
        v = self.group_values("lr") * st["velocity"] + self.c1 * r[0] * (p - x)
        v = v + self.c2 * r[1] * social
        x = x + v
        b = box(self, x.dtype)
        if b is not None:  # absorbing walls: back on the bound, that velocity to 0
            out = (x < b[0]) | (x > b[1])
            x, v = torch.clamp(x, b[0], b[1]), torch.where(out, torch.zeros_like(v), v)
        return x, v

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, v: Any) -> None:
        if not st["initialized"]:
            if start_or_skip(st, losses):
                st["position"], st["personal_best"] = rows.clone(), rows.clone()
                st["velocity"] = torch.zeros_like(rows)
                st["fitness"] = finite_losses(losses)
                move_center(st, st["personal_best"], st["fitness"])
                st["initialized"] = True
            return
        st["position"], st["velocity"] = rows.clone(), v
        better = losses < st["fitness"]  # +inf never wins
        st["personal_best"] = torch.where(better[:, None], rows, st["personal_best"])
        st["fitness"] = torch.where(better, losses, st["fitness"])
        move_center(st, st["personal_best"], st["fitness"])

    # ----------------------------------------------------------------- width
    def _adapted_width(self, st: dict[str, Any]) -> Tensor | None:
        """The RMS deviation from ``m`` of the next positions, per coordinate: the exact
        expectation over ``r1, r2`` (ignoring the bounds); ``None`` (the groups' ``sigma``)
        before the swarm exists. With ``a = x + w v - m``, ``b = c1 (p - x)``,
        ``c = c2 (l - x)``: ``E (a + r1 b + r2 c)^2 = a^2 + (b^2 + c^2) / 3 + a b + a c +
        b c / 2``."""
        if not st["initialized"]:
            return None
        f64 = torch.float64
        x, m = st["position"].to(f64), st["mean"].to(f64)
        lr = self.group_values("lr")
        lr = lr.to(f64) if isinstance(lr, Tensor) else lr
        a = x + lr * st["velocity"].to(f64) - m
        b = self.c1 * (st["personal_best"].to(f64) - x)
        c = self.c2 * (self._neighbourhood_best(st).to(f64) - x)
        e = a * a + (b * b + c * c) / 3 + a * b + a * c + b * c / 2
        return torch.sqrt(e.mean(0))

    # ------------------------------------------------------------ checkpoint
    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        P, D = self.popsize, self.num_params
        check_loaded_population(type(self).__name__, st, P, D, {
            "position": (P, D), "velocity": (P, D), "personal_best": (P, D), "fitness": (P,)})
