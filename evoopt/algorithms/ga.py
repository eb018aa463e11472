r"""GA: a real-coded genetic algorithm -- tournament selection, SBX crossover, Gaussian
mutation, elitism.

Tournament selection: Goldberg & Deb (1991), "A comparative analysis of selection schemes
used in genetic algorithms", FOGA 1, https://doi.org/10.1016/B978-0-08-050684-5.50008-2.
Simulated binary crossover (SBX): Deb & Agrawal (1995), "Simulated Binary Crossover for
Continuous Search Space", Complex Systems 9(2) (the spread factor's polynomial density,
inverted below, and the children), as implemented per variable in Deb's NSGA-II code (Deb,
Pratap, Agarwal, Meyarivan 2002, https://doi.org/10.1109/4235.996017). Elitism: De Jong
(1975).

The state is a population of ``P`` members with their losses. One generation, in the code's
names (``P`` children, made in pairs; every draw independent)::

    parents: for each child slot a tournament of ``tournament_size`` members drawn
        uniformly with replacement; the winner is the best (ties: the lower index)
    SBX, per pair (a, b) with probability crossover_prob, then per coordinate with
    probability 1/2 (else the children copy a_j and b_j):
        u ~ U[0, 1),  beta = (2u)^(1/(eta+1))               if u <= 1/2
                      beta = (1 / (2 (1 - u)))^(1/(eta+1))  otherwise     (Deb & Agrawal 1995)
        c1_j = ((1 + beta) a_j + (1 - beta) b_j) / 2,   c2_j = ((1 - beta) a_j + (1 + beta) b_j) / 2
    Gaussian mutation, per coordinate with probability p_m = min(1, lr / D):
        c_j <- c_j + sigma z,  z ~ N(0, 1)
    replacement: the next population is the best P of the num_elite best parents and the
        P children (the parents first: they win ties)

The rows of a generation are the ``P`` children. The first generation's rows are the
initial population ``x_i = x_0 + sigma z_i`` (``x_0``: the parameters at the first ask); if
all their losses are equal it is drawn again. The center ``m`` (``st["mean"]``, what the
parameters hold after each step) is the best member; it moves only to a strictly better one
and, with ``num_elite >= 1``, never gets worse.

Param groups: ``lr`` is the expected number of mutated coordinates per child, ``p_m =
min(1, lr / D)`` (default 1: the usual ``p_m = 1/D``); ``sigma`` is both the initial spread
of the population and the mutation's standard deviation (schedulable: an annealed mutation);
``lower`` / ``upper`` clip the children (default unbounded). :attr:`current_sigma` reports
the exact expected RMS deviation of the next children from ``m`` (ignoring the bounds): with
``q_r`` the probability that the rank-``r`` member wins a tournament of ``k``, ``q_r =
((P - r)^k - (P - r - 1)^k) / P^k``, ``S1 = sum_r q_r d_r``, ``S2 = sum_r q_r d_r^2``
(``d = x - m``), ``B2 = E beta^2 = (1/2) / (1 + 2/(eta+1)) + (1/2) / (1 - 2/(eta+1))``
and ``p_x = crossover_prob / 2``::

    E (c - m)^2 = (1 - p_x) S2 + p_x ((1 + B2) S2 + (1 - B2) S1^2) / 2 + p_m sigma^2

``eta > 1`` keeps ``B2`` finite. Non-finite losses: as in :mod:`evoopt.algorithms.de`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int, check_range
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

__all__ = ["GA"]


@register("ga")
class GA(PopulationOptimizer):
    r"""Real-coded GA: tournament selection, SBX crossover (Deb & Agrawal 1995), Gaussian
    mutation and elitism. See the module docstring for the maths.

    Args:
        params: parameters or param groups to optimise.
        lr: expected number of mutated coordinates per child, ``p_m = min(1, lr / D)``
            (default 1); schedulable.
        sigma: initial spread of the population and the mutation's standard deviation
            (default 0.1; per group; schedulable).
        lower, upper: bounds that clip the children (default -inf / inf; per group).
        popsize: population size and children per generation; ``None`` (default): 100.
            At least 2.
        num_elite: best parents that compete with the children for the next population
            (default 1). In [0, popsize].
        tournament_size: members per tournament ``k`` (default 2: binary tournament).
        crossover_prob: probability that a pair is crossed (default 0.9).
        eta: SBX distribution index, > 1 (default 15: children near their parents).
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``population`` [P, D] and ``fitness`` [P] (float64,
    minimising sign), ``mean`` (the best member), ``center_loss``, ``initialized``.
    """

    settings = ("num_elite", "tournament_size", "crossover_prob", "eta")
    min_popsize = 2
    param_dtype_state = ("population",)
    loss_dtype = torch.float64  # raw losses compared across generations
    nonfinite_loss = "inf"  # a non-finite loss must never win over an older one

    def __init__(self, params, lr: float = 1.0, sigma: float = 0.1, *,
                 lower: float = -math.inf, upper: float = math.inf, popsize: int | None = None,
                 num_elite: int = 1, tournament_size: int = 2, crossover_prob: float = 0.9,
                 eta: float = 15.0, maximize: bool = False, seed: int | None = None):
        self.num_elite = check_int("num_elite", num_elite, minimum=0)
        self.tournament_size = check_int("tournament_size", tournament_size, minimum=1)
        self.crossover_prob = check_range("crossover_prob", crossover_prob, 0.0, 1.0)
        self.eta = check_range("eta", eta, 1.0, math.inf, low_open=True, high_open=True)
        defaults = dict(lr=lr, sigma=sigma, lower=lower, upper=upper)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)
        if self.num_elite > self.popsize:
            raise ValueError(f"Invalid num_elite: {num_elite!r} (expected at most popsize="
                             f"{self.popsize})")

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        return 100

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_group(group, initial=initial)  # lr, sigma, lower < upper

    def _mutation_prob(self) -> float | Tensor:
        lr = self.group_values("lr")
        p = lr / self.num_params
        return torch.clamp(p, max=1.0) if isinstance(p, Tensor) else min(1.0, p)

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        check_start(self, mean)
        P = self.popsize
        st["population"] = mean.expand(P, -1).clone()
        st["fitness"] = torch.zeros(P, dtype=torch.float64, device=mean.device)
        st["center_loss"], st["initialized"] = 0.0, False

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Any]:
        if not st["initialized"]:
            return initial_population(self, st, gen), None
        x, f = st["population"], st["fitness"]
        P, D = x.shape
        n = (P + 1) // 2  # pairs
        opts = dict(generator=gen, device=x.device)
        contestants = torch.randint(P, (2 * n, self.tournament_size), **opts)
        rank = torch.argsort(torch.argsort(f, stable=True))  # strict order: ties by index
        win = torch.gather(contestants, 1, torch.argmin(rank[contestants], 1, keepdim=True))
        a, b = x[win[:n, 0]], x[win[n:, 0]]
        pair = torch.rand(n, 1, dtype=torch.float64, **opts) < self.crossover_prob
        coord = torch.rand(n, D, dtype=torch.float64, **opts) < 0.5
        beta = sbx_beta(torch.rand(n, D, dtype=torch.float64, **opts), self.eta).to(x.dtype)
        cross = pair & coord
        c1 = torch.where(cross, ((1 + beta) * a + (1 - beta) * b) / 2, a)
        c2 = torch.where(cross, ((1 - beta) * a + (1 + beta) * b) / 2, b)
        kids = torch.cat([c1, c2])[:P]
        mutate = torch.rand(P, D, dtype=torch.float64, **opts) < self._mutation_prob()
        z = torch.randn(P, D, dtype=x.dtype, **opts)
        kids = torch.where(mutate, kids + self.group_values("sigma") * z, kids)
        bx = box(self, x.dtype)
        return (kids if bx is None else torch.clamp(kids, bx[0], bx[1])), None

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, aux: Any) -> None:
        if not st["initialized"]:
            if start_or_skip(st, losses):
                st["population"], st["fitness"] = rows.clone(), finite_losses(losses)
                move_center(st, st["population"], st["fitness"])
                st["initialized"] = True
            return
        elite = torch.argsort(st["fitness"], stable=True)[: self.num_elite]
        pool = torch.cat([st["population"][elite], rows])
        pool_f = torch.cat([st["fitness"][elite], losses])
        keep = torch.argsort(pool_f, stable=True)[: len(rows)]  # +inf children rank last
        st["population"], st["fitness"] = pool[keep], finite_losses(pool_f[keep])
        move_center(st, st["population"], st["fitness"])

    # ----------------------------------------------------------------- width
    def _adapted_width(self, st: dict[str, Any]) -> Tensor | None:
        """The exact RMS deviation from ``m`` of the next children, per coordinate (module
        docstring), ignoring the bounds; ``None`` before the population exists."""
        if not st["initialized"]:
            return None
        f64 = torch.float64
        x, f = st["population"].to(f64), st["fitness"]
        P, k = len(f), self.tournament_size
        r = torch.arange(P, dtype=f64, device=x.device)
        q_rank = ((P - r) ** k - (P - r - 1) ** k) / P**k
        q = q_rank[torch.argsort(torch.argsort(f, stable=True))]  # per member
        d = x - st["mean"].to(f64)
        S1, S2 = q @ d, q @ (d * d)
        e = 2 / (self.eta + 1)
        B2 = 0.5 / (1 + e) + 0.5 / (1 - e)
        px = self.crossover_prob / 2
        ex = (1 - px) * S2 + px * ((1 + B2) * S2 + (1 - B2) * S1 * S1) / 2
        pm, sigma = self._mutation_prob(), self.group_values("sigma")
        if isinstance(pm, Tensor):
            pm = pm.to(f64)
        if isinstance(sigma, Tensor):
            sigma = sigma.to(f64)
        return torch.sqrt(ex + pm * sigma * sigma)

    # ------------------------------------------------------------ checkpoint
    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        P, D = self.popsize, self.num_params
        check_loaded_population(type(self).__name__, st, P, D,
                                {"population": (P, D), "fitness": (P,)})


def sbx_beta(u: Tensor, eta: float) -> Tensor:
    """SBX's spread factor from uniforms ``u`` (Deb & Agrawal 1995, the density inverted)."""
    e = 1.0 / (eta + 1.0)
    return torch.where(u <= 0.5, (2 * u) ** e, (1 / (2 * (1 - u))) ** e)
