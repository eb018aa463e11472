r"""sep-CMA-ES: CMA-ES with a diagonal covariance matrix, native torch, O(D) per member.

Ros & Hansen (2008), "A Simple Modification in CMA-ES Achieving Linear Time and Space
Complexity", PPSN X, https://doi.org/10.1007/978-3-540-87700-4_30; defaults and notation
from Hansen (2016), "The CMA Evolution Strategy: A Tutorial", https://arxiv.org/abs/1604.00772
(Table 1 and eqs. 39-47, 49-58). The covariance matrix is ``diag(C)``, kept as a [D]
vector, so time and memory per member are O(D) and the whole generation runs in torch on
the parameters' device (for D up to 10^6 and beyond, where :class:`evoopt.CMAES` keeps
D x D matrices or a numpy diagonal). One generation, in the code's names::

    z_k  ~ N(0, I)                                          k = 1..P
    y_k  = sqrt(C) * z_k                                    (elementwise; C is [D])
    x_k  = mean + sigma * s * y_k                           s: the groups' sigma, [D]
    <z>  = sum_i w_i z_{i:P},  <y> = sqrt(C) * <z>          (the mu best; eq. 49 weights)
    mean <- mean + lr * sigma * s * <y>                     (lr is c_m, eq. 41)
    p_s  <- (1 - c_s) p_s + sqrt(c_s (2 - c_s) mu_eff) <z>  (eq. 43, C^-1/2 <y> = <z>)
    h    =  |p_s| / sqrt(1 - (1 - c_s)^(2 (g + 1))) < (1.4 + 2 / (D + 1)) E|N(0, I)|
    p_c  <- (1 - c_c) p_c + h sqrt(c_c (2 - c_c) mu_eff) <y>           (eq. 45)
    C    <- (1 - c_1 - c_mu + c_1 (1 - h) c_c (2 - c_c)) C
            + c_1 p_c**2 + c_mu sum_i w_i y_{i:P}**2                   (eq. 47, diagonal)
    sigma <- sigma exp(c_s / d_s (|p_s| / E|N(0, I)| - 1))             (eq. 44)

Defaults (tutorial Table 1, positive weights only): ``P = 4 + floor(3 ln D)``,
``mu = P // 2``, ``w_i ∝ ln((P + 1) / 2) - ln i``, ``mu_eff = 1 / sum w_i**2``,
``c_s = (mu_eff + 2) / (D + mu_eff + 5)``,
``d_s = 1 + 2 max(0, sqrt((mu_eff - 1) / (D + 1)) - 1) + c_s``,
``c_c = (4 + mu_eff / D) / (D + 4 + 2 mu_eff / D)``, ``c_1 = 2 / ((D + 1.3)**2 + mu_eff)``,
``c_mu = min(1 - c_1, 2 (mu_eff - 2 + 1 / mu_eff) / ((D + 2)**2 + mu_eff))``, and the
sep-CMA correction of Ros & Hansen (Section 3): both covariance learning rates are multiplied
by ``(D + 2) / 3`` (``c_mu`` then capped at ``1 - c_1``): a diagonal has D, not D**2, degrees
of freedom to learn. See :func:`sep_cma_constants`.

Against pycma's ``CMA_diagonal=True`` (``tests/evoopt/test_sep_cma.py``): pycma 4.x learns
the diagonal with an *exponential* update (``transformations.DiagonalDecoding``: the variances
are multiplied by ``2**Delta``, ``Delta = c_1 (p_c**2 - 1) + c_mu sum w (z**2 - 1)`` in z units)
where this file adds ``Delta`` (Ros & Hansen's ``1 + Delta``, eq. 47), and its defaults differ
(``c_1, c_mu`` from ``conedf/cmudf``, ``c_c``, ``c_s``, ``d_s``, active negative weights).
Given pycma's constants (``c_1, c_mu`` times ln 2) and the same samples, mean, ``p_s`` and
sigma agree to 1e-12 and ``log C`` to within ``Delta**2``.

Param groups: ``lr`` (c_m, default 1) may differ per group; ``sigma`` is each group's initial
width ``s``; the learned step size ``sigma`` starts at 1 and multiplies it. A schedule on a
group's ``sigma`` rescales what was learned (``s`` is read at every generation).

Dtypes: ``mean``, ``C``, ``p_c`` and ``p_s`` are [D] vectors in the parameters' dtype (float32
at D = 10^6 on a GPU halves memory and traffic; float64 parameters give a float64 run, as the
reference tests use); the step size is a Python float (float64). Sums over D (``|p_s|``) are
torch reductions in that dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import check_lr_sigma
from ..population import PopulationOptimizer
from ..registry import register
from ._defaults import standard_popsize
from ._stopping import StopsForGood, check_stop_options, termination
from ..shaping import all_tied, by_rank

__all__ = [
    "SepCMAES", "SepCMAConstants", "check_saved_sigma", "sep_cma_constants", "sep_cma_update",
]


@dataclass(frozen=True)
class SepCMAConstants:
    """The strategy parameters of one (D, P): recombination weights by position (best first,
    zeros beyond ``mu``) and the learning rates of the paths, step size and covariance."""

    weights: tuple[float, ...]
    mu_eff: float
    c_s: float
    d_s: float
    c_c: float
    c_1: float
    c_mu: float
    chi_n: float  # E|N(0, I)|, tutorial footnote to eq. 44


def sep_cma_constants(num_params: int, popsize: int) -> SepCMAConstants:
    """The tutorial's Table 1 for ``D = num_params``, ``P = popsize``, with the covariance
    rates times ``(D + 2) / 3`` (Ros & Hansen 2008, Section 3)."""
    n, mu = num_params, popsize // 2
    raw = [math.log((popsize + 1) / 2) - math.log(i) for i in range(1, mu + 1)]  # eq. 49
    w = [v / sum(raw) for v in raw] + [0.0] * (popsize - mu)
    mu_eff = 1.0 / sum(v * v for v in w)
    c_s = (mu_eff + 2) / (n + mu_eff + 5)  # eq. 55
    d_s = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_s  # eq. 55
    c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)  # eq. 56
    c_1 = 2 / ((n + 1.3) ** 2 + mu_eff)  # eq. 57
    c_mu = min(1 - c_1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((n + 2) ** 2 + mu_eff))  # eq. 58
    sep = (n + 2) / 3  # Ros & Hansen 2008: c_cov^sep = (n + 2) / 3 * c_cov
    c_1 = min(1.0, c_1 * sep)
    c_mu = min(1 - c_1, c_mu * sep)
    chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
    return SepCMAConstants(tuple(w), mu_eff, c_s, d_s, c_c, c_1, c_mu, chi_n)


def sep_cma_update(st: dict[str, Any], w: Tensor, z: Tensor, k: SepCMAConstants,
                   lr: float | Tensor, s: float | Tensor) -> None:
    """One sep-CMA-ES update of ``st`` (``mean``, ``sigma``, ``C``, ``p_c``, ``p_s``,
    ``generation``: the number of updates before this one) in place, from the weights per
    member ``w`` ([P], the ranks' weights), the standard normal draws ``z`` ([P, D]), the
    constants ``k``, the mean's rate ``lr`` and the groups' widths ``s`` (module docstring)."""
    n = z.shape[1]
    sqrt_c = st["C"].sqrt()
    z_w = w @ z  # <z>
    y_w = sqrt_c * z_w  # <y>
    st["mean"] = st["mean"] + (lr * st["sigma"]) * s * y_w
    st["p_s"] = (1 - k.c_s) * st["p_s"] + math.sqrt(k.c_s * (2 - k.c_s) * k.mu_eff) * z_w
    ps_norm = float(torch.linalg.vector_norm(st["p_s"]))
    g = st["generation"] + 1
    h = ps_norm / math.sqrt(1 - (1 - k.c_s) ** (2 * g)) < (1.4 + 2 / (n + 1)) * k.chi_n
    hc = math.sqrt(k.c_c * (2 - k.c_c) * k.mu_eff) if h else 0.0
    st["p_c"] = (1 - k.c_c) * st["p_c"] + hc * y_w
    delta_h = 0.0 if h else k.c_c * (2 - k.c_c)
    rank_mu = w @ z.square()  # sum_i w_i z_i**2; times C: sum_i w_i y_i**2
    keep = 1 - k.c_1 - k.c_mu * float(w.sum()) + k.c_1 * delta_h
    st["C"] = st["C"] * (keep + k.c_mu * rank_mu) + k.c_1 * st["p_c"].square()
    st["sigma"] = st["sigma"] * math.exp(k.c_s / k.d_s * (ps_norm / k.chi_n - 1))


def check_saved_sigma(name: str, sigma) -> None:
    """A checkpoint's learned step size must be a finite number > 0."""
    ok = isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
    if not (ok and math.isfinite(sigma) and sigma > 0):
        raise ValueError(
            f"{name}.load_state_dict: saved sigma {sigma!r} is not a finite number > 0"
        )


@register("sep_cma")
class SepCMAES(StopsForGood, PopulationOptimizer):
    r"""sep-CMA-ES (Ros & Hansen 2008): CMA-ES with a diagonal covariance, in torch.

    Args:
        params: parameters or param groups to optimise.
        lr: ``c_m``, the mean's learning rate (default 1.0, tutorial eq. 41); schedulable,
            may differ per group.
        sigma: each group's initial search width (default 0.1); the learned step size
            multiplies it, and a scheduled change rescales what was learned.
        popsize: members per generation; ``None`` (default): ``4 + floor(3 ln D)``. >= 2.
        stop: CMA-ES's termination criteria (:mod:`evoopt.algorithms._stopping`: tolfun,
            tolx, tolupsigma, tolconditioncov, noeffectcoord, tolflatfitness, with pycma's
            defaults), a dict overriding some (``{"tolx": 1e-8}``; 0 or None: off), or
            ``False`` for none. Once one holds, :attr:`stopped` says which, ``step`` is a
            no-op and ``ask`` raises (as :class:`~evoopt.CMAES` with pycma's criteria).
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``mean``, ``C`` (the diagonal), ``p_c``, ``p_s`` [D] in
    the parameters' dtype; ``sigma`` (the learned step size, a float, starts at 1);
    ``sigma_group`` [D] (the groups' ``sigma`` it refers to); ``stopped``, ``f_hist`` and
    ``flat`` for the termination criteria.
    """

    min_popsize = 2
    vector_state = ("C", "p_c", "p_s", "sigma_group")
    param_dtype_state = ("C", "p_c", "p_s", "sigma_group")
    free_form_state = ("stopped", "f_hist")
    loss_dtype = torch.float64  # tolfun compares unrounded losses

    def __init__(self, params, lr: float = 1.0, sigma: float = 0.1, *,
                 popsize: int | None = None, stop: dict | bool | None = None,
                 maximize: bool = False, seed: int | None = None):
        self.stop = check_stop_options(stop)
        defaults = dict(lr=lr, sigma=sigma)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        """``4 + floor(3 ln D)`` (tutorial Table 1)."""
        return standard_popsize(num_params)

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_lr_sigma(group, initial=initial)  # lr 0 only once running

    def _adapted_width(self, st: dict[str, Any]) -> Tensor:
        """``sigma * s * sqrt(C)``: the standard deviation of each coordinate."""
        return st["sigma"] * st["sigma_group"] * st["C"].sqrt()

    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        check_saved_sigma("SepCMAES", st.get("sigma"))
        if not bool((st["C"] > 0).all()):
            raise ValueError("SepCMAES.load_state_dict: saved C has entries <= 0 (expected the "
                             "positive variances of the diagonal covariance)")

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        self.sigma_ratio(st)  # records st["sigma_group"]
        st["sigma"] = 1.0
        st["C"] = torch.ones_like(mean)
        st["p_c"], st["p_s"] = torch.zeros_like(mean), torch.zeros_like(mean)
        st["stopped"], st["f_hist"], st["flat"] = {}, [], 0

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        self.sigma_ratio(st)  # a scheduled sigma is used from now on (s multiplies)
        z = self.noise_buffer(self.popsize)
        torch.randn(self.popsize, self.num_params, generator=gen, out=z)
        scale = st["sigma"] * st["sigma_group"] * st["C"].sqrt()
        return torch.addcmul(st["mean"], scale, z), z  # mean + sigma * s * sqrt(C) * z

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, z: Tensor) -> None:
        if not all_tied(losses):  # an exact plateau says nothing: keep the distribution
            k = sep_cma_constants(self.num_params, self.popsize)
            w = by_rank(losses, torch.tensor(k.weights, dtype=losses.dtype, device=losses.device))
            w = w.to(z.dtype)
            sep_cma_update(st, w, z, k, self.group_values("lr"), st["sigma_group"])
        if self.stop:
            s = st["sigma"] * st["sigma_group"]
            reasons = termination(self.stop, st, losses, widths=s * st["C"].sqrt(), C=st["C"],
                                  pc_widths=lambda: s * st["p_c"].abs())
            if reasons:
                self._stop_for_good(st, reasons)
