r"""DE: Differential Evolution, with jDE's self-adaptive F and CR.

Storn & Price (1997), "Differential Evolution -- A Simple and Efficient Heuristic for Global
Optimization over Continuous Spaces", Journal of Global Optimization 11(4),
https://doi.org/10.1023/A:1008202821328 (DE/rand/1/bin: mutation, binomial crossover and
selection, Sec. 2); Price, Storn, Lampinen (2005), "Differential Evolution: A Practical
Approach to Global Optimization", Springer (DE/current-to-best/1, and the ``<=`` selection
that lets the population drift along plateaus); Brest, Greiner, Boskovic, Mernik, Zumer (2006),
"Self-Adapting Control Parameters in Differential Evolution: A Comparative Study on
Numerical Benchmark Problems", IEEE TEC 10(6), https://doi.org/10.1109/TEVC.2006.872133
(jDE: the two update rules below, ``tau1 = tau2 = 0.1``, ``F_l = 0.1``,
``F_u = 0.9``; initial ``F = 0.5``, ``CR = 0.9``). jDE rather than SHADE (Tanabe & Fukunaga
2013): jDE's rates live with their targets (two [P] vectors, selected with them), where SHADE
adds a success-history memory of ``H`` means, Lehmer averages and an external archive of
replaced targets -- more state, more settings, and no better fit to the steady state here.

The state is a population of ``P`` *target* vectors ``x_i`` ([P, D]) with their losses
``f_i``, and each target's own ``F_i`` and ``CR_i``. One generation, in the code's names::

    jDE (adaptation="jde"), per target i, before its trial is built (Brest et al. 2006):
        F'_i  = F_l + rand_1 F_u   if rand_2 < tau1   else F_i
        CR'_i = rand_3             if rand_4 < tau2   else CR_i
    (adaptation=None: F'_i = F, CR'_i = CR, classic DE)
    mutant, r1, r2, r3 distinct and != i, drawn uniformly:
        rand/1:            v_i = x_r1 + lr F'_i (x_r2 - x_r3)                    (S&P 1997)
        current-to-best/1: v_i = x_i + lr F'_i (m - x_i) + lr F'_i (x_r1 - x_r2)
    binomial crossover, j_rand ~ U{1..D}:
        u_ij = v_ij  if rand_ij <= CR'_i or j = j_rand,  else x_ij                (S&P 1997)
    selection (after the P trials are evaluated):
        f(u_i) <= f_i  ->  x_i, f_i, F_i, CR_i <- u_i, f(u_i), F'_i, CR'_i

The rows of a generation are the ``P`` trial vectors ``u_i``. The first generation's rows
are the initial population ``x_i = x_0 + sigma z_i``, ``z_i ~ N(0, I)`` (``x_0``: the
parameters when the optimizer first asks); if all their losses are equal there is no best
target to center on, and the initial population is drawn again at the next generation.

The center ``m`` (``st["mean"]``, what the parameters hold after each step) is the best
target vector. It moves only to a target that is strictly better, so on ties it keeps the
earlier one (an exact plateau leaves it where it is); since the selection is elitist, ``m``
is the best member evaluated so far.

Param groups:

- ``lr`` scales the differential weight: the mutation uses ``lr F'_i`` (default 1: the
  paper's DE). It is schedulable; annealing it to 0 turns the mutant into a pure
  recombination of targets (rand/1: ``v_i = x_r1``).
- ``sigma`` is the initial spread of the population around the starting parameters and
  nothing else: after the first generation the population's own spread is the search width
  (:attr:`current_sigma` reports the expected RMS deviation of the next trials from ``m``,
  computed exactly from the targets, ``F_i`` and ``CR_i``, ignoring the bounds). Changing
  ``sigma`` later has no effect.
- ``lower`` / ``upper`` (default -inf / inf) bound the coordinates of the group. A mutant
  coordinate outside is replaced by the midpoint of its target's coordinate and the bound
  it crossed (``(lower + x_ij) / 2``, as in JADE/SHADE), so trials always lie in the box;
  the initial population is clipped to it, and ``x_0`` must lie inside.

Losses are compared across generations (trial against target), so ``_update`` receives them
in float64 (``loss_dtype``) and unscaled. A non-finite loss must never win a comparison:
``nonfinite_loss = "inf"`` asks the base for ``+inf`` there (instead of "worse than this
generation's finite losses", a finite value that can still beat an older target); a trial
whose loss is ``+inf`` is never kept, and in the initial population such a member takes the
worst finite loss plus the spread, so the state stays finite.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_choice, check_range
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

__all__ = ["DE", "DE_STRATEGIES", "JDE"]

DE_STRATEGIES = ("rand/1/bin", "current-to-best/1/bin")
#: jDE's constants (Brest et al. 2006)
JDE = {"tau1": 0.1, "tau2": 0.1, "F_low": 0.1, "F_up": 0.9}


# ------------------------------------------------------------------- the algorithm
@register("de")
class DE(PopulationOptimizer):
    r"""Differential Evolution (Storn & Price 1997) with jDE self-adaptation (Brest et al.
    2006). See the module docstring for the maths.

    Args:
        params: parameters or param groups to optimise.
        lr: scale of the differential weight, the mutation uses ``lr F_i`` (default 1);
            schedulable.
        sigma: initial spread of the population around the parameters (default 0.1).
        lower, upper: bounds of the coordinates (default -inf / inf; per group).
        popsize: number of target vectors ``P``; ``None`` (default): ``min(10 D, 100)``,
            at least 10 (Storn & Price suggest 5 D .. 10 D; jDE uses 100). At least 4.
        strategy: ``"rand/1/bin"`` (default) or ``"current-to-best/1/bin"``.
        F: differential weight in (0, 2] (default 0.5); jDE's initial ``F_i``.
        CR: crossover rate in [0, 1] (default 0.9); jDE's initial ``CR_i``.
        adaptation: ``"jde"`` (default) or ``None`` (fixed ``F`` and ``CR``).
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``population`` [P, D] (the targets), ``fitness`` [P]
    (their losses, float64, minimising sign), ``F`` and ``CR`` [P] (float64), ``mean``
    (the best target), ``center_loss``, ``initialized``.
    """

    settings = ("strategy", "F", "CR", "adaptation")
    min_popsize = 4
    param_dtype_state = ("population",)
    loss_dtype = torch.float64  # raw losses compared across generations
    nonfinite_loss = "inf"  # a non-finite loss must never win over an older one

    def __init__(self, params, lr: float = 1.0, sigma: float = 0.1, *,
                 lower: float = -math.inf, upper: float = math.inf, popsize: int | None = None,
                 strategy: str = "rand/1/bin", F: float = 0.5, CR: float = 0.9,
                 adaptation: str | None = "jde", maximize: bool = False,
                 seed: int | None = None):
        self.strategy = check_choice("strategy", strategy, set(DE_STRATEGIES))
        self.F = check_range("F", F, 0.0, 2.0, low_open=True)
        self.CR = check_range("CR", CR, 0.0, 1.0)
        if adaptation not in ("jde", None):
            raise ValueError(f"Invalid adaptation: {adaptation!r} (expected 'jde' or None)")
        self.adaptation = adaptation
        defaults = dict(lr=lr, sigma=sigma, lower=lower, upper=upper)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        return max(10, min(10 * num_params, 100))

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_group(group, initial=initial)  # lr, sigma, lower < upper

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        check_start(self, mean)
        P, f64 = self.popsize, dict(dtype=torch.float64, device=mean.device)
        st["population"] = mean.expand(P, -1).clone()
        st["fitness"] = torch.zeros(P, **f64)  # meaningless until initialized
        st["F"], st["CR"] = torch.full((P,), self.F, **f64), torch.full((P,), self.CR, **f64)
        st["center_loss"], st["initialized"] = 0.0, False

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Any]:
        if not st["initialized"]:
            return initial_population(self, st, gen), None
        x = st["population"]
        F, CR = self._adapted_rates(st, gen)
        P, D = x.shape
        k = 3 if self.strategy == "rand/1/bin" else 2
        r = distinct_others(P, k, gen, x.device)
        Fl = self.group_values("lr") * F[:, None].to(x.dtype)  # [P, 1] or [P, D]
        if self.strategy == "rand/1/bin":
            v = x[r[:, 0]] + Fl * (x[r[:, 1]] - x[r[:, 2]])
        else:
            v = x + Fl * (st["mean"] - x) + Fl * (x[r[:, 0]] - x[r[:, 1]])
        cross = torch.rand(P, D, generator=gen, dtype=torch.float64, device=x.device)
        j_rand = torch.randint(D, (P,), generator=gen, device=x.device)
        take = cross <= CR[:, None]
        take[torch.arange(P, device=x.device), j_rand] = True
        b = box(self, x.dtype)
        if b is not None:  # midpoint between the target and the bound it crossed
            v = torch.where(v < b[0], (b[0] + x) / 2, torch.where(v > b[1], (b[1] + x) / 2, v))
        return torch.where(take, v, x), (F, CR)

    def _adapted_rates(self, st: dict[str, Any], gen) -> tuple[Tensor, Tensor]:
        """jDE's ``F'_i, CR'_i`` (or the fixed ``F_i, CR_i``): four uniforms per target."""
        F, CR = st["F"], st["CR"]
        if self.adaptation is None:
            return F, CR
        rnd = torch.rand(len(F), 4, generator=gen, dtype=torch.float64, device=F.device)
        F = torch.where(rnd[:, 1] < JDE["tau1"], JDE["F_low"] + rnd[:, 0] * JDE["F_up"], F)
        CR = torch.where(rnd[:, 3] < JDE["tau2"], rnd[:, 2], CR)
        return F, CR

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, aux: Any) -> None:
        if not st["initialized"]:
            if start_or_skip(st, losses):
                st["population"], st["fitness"] = rows.clone(), finite_losses(losses)
                move_center(st, st["population"], st["fitness"])
                st["initialized"] = True
            return
        keep = losses <= st["fitness"]  # +inf never wins
        st["population"] = torch.where(keep[:, None], rows, st["population"])
        st["fitness"] = torch.where(keep, losses, st["fitness"])
        st["F"], st["CR"] = torch.where(keep, aux[0], st["F"]), torch.where(keep, aux[1], st["CR"])
        move_center(st, st["population"], st["fitness"])

    # ----------------------------------------------------------------- width
    def _adapted_width(self, st: dict[str, Any]) -> Tensor | None:
        """The RMS deviation from ``m`` of the next generation's trials, per coordinate:
        the exact expectation over the draws (jDE's rates, the indices, the crossover),
        ignoring the bounds. ``None`` (the groups' ``sigma``) before the population exists."""
        if not st["initialized"]:
            return None
        x = st["population"].to(torch.float64)
        d = x - st["mean"].to(torch.float64)  # [P, D]
        lr = self.group_values("lr")
        lr = lr.to(torch.float64) if isinstance(lr, Tensor) else lr
        EF, EF2, ECR = self._rate_moments(st)
        EF, EF2 = lr * EF[:, None], lr * lr * EF2[:, None]
        P, D = x.shape
        n = P - 1  # the others: leave-one-out sums
        s1, s2 = d.sum(0) - d, (d * d).sum(0) - d * d
        var = (s2 - s1 * s1 / n) / (n - 1)  # unbiased variance of the others
        if self.strategy == "rand/1/bin":
            ev = s2 / n + EF2 * 2 * var  # E(x_r1 - m)^2 + E F^2 E(x_r2 - x_r3)^2
        else:
            ev = (1 - 2 * EF + EF2) * d * d + EF2 * 2 * var
        p = (1 / D + (1 - 1 / D) * ECR)[:, None]  # P(coordinate from the mutant)
        return torch.sqrt((p * ev + (1 - p) * d * d).mean(0))

    def _rate_moments(self, st: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """E[F'], E[F'^2], E[CR'] per target."""
        F, CR = st["F"], st["CR"]
        if self.adaptation is None:
            return F, F * F, CR
        t1, t2, a, b = JDE["tau1"], JDE["tau2"], JDE["F_low"], JDE["F_up"]
        EF = (1 - t1) * F + t1 * (a + b / 2)
        EF2 = (1 - t1) * F * F + t1 * (a * a + a * b + b * b / 3)
        return EF, EF2, (1 - t2) * CR + t2 / 2

    # ------------------------------------------------------------ checkpoint
    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        P, D = self.popsize, self.num_params
        check_loaded_population(type(self).__name__, st, P, D, {
            "population": (P, D), "fitness": (P,), "F": (P,), "CR": (P,)})


def distinct_others(P: int, k: int, gen: torch.Generator, device) -> Tensor:
    """[P, k] indices: row i holds k distinct members other than i, uniformly drawn (the
    ``k`` smallest of ``P`` uniforms, member i's set above them)."""
    u = torch.rand(P, P, generator=gen, dtype=torch.float64, device=device)
    u.fill_diagonal_(2.0)
    return torch.topk(u, k, dim=1, largest=False, sorted=True).indices
