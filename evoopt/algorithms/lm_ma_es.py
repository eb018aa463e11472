r"""LM-MA-ES: the Limited-Memory Matrix Adaptation Evolution Strategy, native torch.

Loshchilov, Glasmachers, Beyer (2019), "Large Scale Black-Box Optimization by Limited-Memory
Matrix Adaptation", IEEE Transactions on Evolutionary Computation 23(2), 353-358,
https://doi.org/10.1109/TEVC.2018.2855049 (arXiv 1705.06693, 2017), Algorithm 1. The
covariance is never formed: ``m`` direction vectors ``M_1..M_m`` ([m, D], O(m D) memory,
``m = 4 + floor(3 ln D)``) shape the samples through ``m`` rank-one maps, so a generation
costs O(m P D) and runs in torch on the parameters' device, for D up to 10^6 and beyond.
One generation (Algorithm 1, in the code's names)::

    z_k ~ N(0, I);  d_k = z_k                                            k = 1..P
    for j = 1..min(t, m):  d_k <- (1 - c_d,j) d_k + c_d,j M_j (M_j^T d_k)
    x_k = mean + sigma * s * d_k                      s: the groups' sigma, [D]
    <d> = sum_i w_i d_{i:P},  <z> = sum_i w_i z_{i:P}          (the mu best)
    mean  <- mean + lr * sigma * s * <d>  (lr = 1 in the paper)
    p_s   <- (1 - c_s) p_s + sqrt(mu_eff c_s (2 - c_s)) <z>
    M_i   <- (1 - c_c,i) M_i + sqrt(mu_eff c_c,i (2 - c_c,i)) <z>,  i = 1..m
    sigma <- sigma exp(c_s / 2 (|p_s|**2 / D - 1))
    t     <- t + 1

Defaults (Algorithm 1): ``P = 4 + floor(3 ln D)``, ``mu = P // 2``,
``w_i ∝ ln(P / 2 + 1/2) - ln i``,
``mu_eff = 1 / sum w_i**2``, ``m = 4 + floor(3 ln D)``, ``c_s = 2 P / D``,
``c_d,i = 1 / (1.5**(i - 1) D)``, ``c_c,i = P / (4**(i - 1) D)``. The paper's rates are for
large D; where ``2 P > D`` (small problems) they would exceed 1 and the paths diverge, so every
rate is capped at 1 (beyond the paper; no effect once ``D >= 2 P``). See
:func:`lm_ma_es_constants`.

Param groups: ``lr`` (default 1) may differ per group; ``sigma`` is each group's initial
width ``s``; the learned step size ``sigma`` starts at 1 and multiplies it, so a schedule on a
group's ``sigma`` rescales what was learned.

Dtypes: ``mean``, ``p_s`` ([D]) and ``M`` ([m, D]) are kept in the parameters' dtype (float32
at D = 10^6 on a GPU; float64 parameters give the float64 run the reference test checks);
the step size is a Python float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int, check_lr_sigma
from .._state import check_saved_shapes
from ..population import PopulationOptimizer
from ..registry import register
from ._defaults import standard_popsize
from ._stopping import StopsForGood, check_stop_options, termination
from ..shaping import all_tied, by_rank
from .sep_cma import check_saved_sigma

__all__ = ["LMMAES", "LMMAESConstants", "lm_ma_es_constants", "lm_ma_es_directions"]


@dataclass(frozen=True)
class LMMAESConstants:
    """Algorithm 1's constants for one (D, P, m): the weights by position (best first, zeros
    beyond ``mu``), ``mu_eff`` and the learning rates."""

    weights: tuple[float, ...]
    mu_eff: float
    c_s: float
    c_d: tuple[float, ...]
    c_c: tuple[float, ...]


def default_num_directions(num_params: int) -> int:
    """``m = 4 + floor(3 ln D)`` (Algorithm 1)."""
    return standard_popsize(num_params)


def lm_ma_es_constants(num_params: int, popsize: int, num_directions: int) -> LMMAESConstants:
    """Algorithm 1's constants for ``D = num_params``, ``P = popsize``, ``m = num_directions``
    (each rate capped at 1, module docstring)."""
    n, mu = num_params, popsize // 2
    raw = [math.log((popsize + 1) / 2) - math.log(i) for i in range(1, mu + 1)]
    w = [v / sum(raw) for v in raw] + [0.0] * (popsize - mu)
    c_d = tuple(min(1.0, 1 / (1.5**i * n)) for i in range(num_directions))
    c_c = tuple(min(1.0, popsize / (4.0**i * n)) for i in range(num_directions))
    mu_eff = 1.0 / sum(v * v for v in w)
    return LMMAESConstants(tuple(w), mu_eff, min(1.0, 2 * popsize / n), c_d, c_c)


def lm_ma_es_directions(z: Tensor, M: Tensor, c_d: tuple[float, ...], k: int) -> Tensor:
    """``d = A_k ... A_1 z`` row-wise, ``A_j = (1 - c_d,j) I + c_d,j M_j M_j^T``."""
    d = z.clone()
    for j in range(k):
        proj = d @ M[j]  # [P]: M_j^T d
        d.mul_(1 - c_d[j]).addr_(proj, M[j], alpha=c_d[j])
    return d


def _transform_diag(M: Tensor, c_d: tuple[float, ...], k: int) -> Tensor:
    """``diag(T T^T)`` for ``T = A_k ... A_1`` without forming T: ``T = a I + U V^T`` with
    ``U, V`` [D, k], grown one map at a time (``A T = (1-c) a I + (1-c) U V^T + c M (T^T M)^T``,
    ``T^T M = a M + V (U^T M)``); O(k^2 D)."""
    D = M.shape[1]
    a = 1.0
    U = M.new_zeros(D, 0)
    V = M.new_zeros(D, 0)
    for j in range(k):
        c, m = c_d[j], M[j]
        tm = a * m + V @ (U.T @ m)
        U = torch.cat([(1 - c) * U, c * m[:, None]], 1)
        V = torch.cat([V, tm[:, None]], 1)
        a *= 1 - c
    return a * a + 2 * a * (U * V).sum(1) + ((U @ (V.T @ V)) * U).sum(1)


@register("lm_ma_es")
class LMMAES(StopsForGood, PopulationOptimizer):
    r"""LM-MA-ES (Loshchilov, Glasmachers, Beyer 2019, Algorithm 1), in torch.

    Args:
        params: parameters or param groups to optimise.
        lr: the mean's learning rate (default 1.0, the paper's); schedulable, per group.
        sigma: each group's initial search width (default 0.1); the learned step size
            multiplies it.
        popsize: members per generation; ``None`` (default): ``4 + floor(3 ln D)``. >= 2.
        num_directions: ``m``, the number of direction vectors; ``None`` (default):
            ``4 + floor(3 ln D)``.
        stop: CMA-ES's termination criteria (:mod:`evoopt.algorithms._stopping`, pycma's
            defaults, on the widths ``sigma s``: the maps' diagonal, of order 1, costs
            O(m^2 D) to form), a dict overriding some (0 or None: off), or ``False`` for
            none. Below ``D = 2 P`` the paper's rates are capped (module docstring)
            and the step size can random-walk; ``tolupsigma`` then ends a diverging run.
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``mean``, ``p_s`` [D], ``M`` [m, D] in the parameters'
    dtype; ``sigma`` (the learned step size, a float, starts at 1); ``sigma_group`` [D];
    ``num_updates``: the paper's ``t``, the updates so far (a generation on an exact plateau
    changes nothing, so it does not count: the maps of unlearned vectors stay out);
    ``stopped``, ``f_hist`` and ``flat`` for the termination criteria.
    """

    settings = ("num_directions",)
    min_popsize = 2
    vector_state = ("p_s", "sigma_group")
    param_dtype_state = ("p_s", "M", "sigma_group")
    free_form_state = ("stopped", "f_hist")
    loss_dtype = torch.float64  # tolfun compares unrounded losses

    def __init__(self, params, lr: float = 1.0, sigma: float = 0.1, *,
                 popsize: int | None = None, num_directions: int | None = None,
                 stop: dict | bool | None = None, maximize: bool = False,
                 seed: int | None = None):
        if num_directions is not None:
            check_int("num_directions", num_directions, minimum=1)
        self.stop = check_stop_options(stop)
        self._num_directions_arg = num_directions
        defaults = dict(lr=lr, sigma=sigma)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)
        self._group_added()

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        """``4 + floor(3 ln D)`` (Algorithm 1)."""
        return standard_popsize(num_params)

    def _group_added(self) -> None:
        m = self._num_directions_arg
        self.num_directions = default_num_directions(self.num_params) if m is None else m

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_lr_sigma(group, initial=initial)  # lr 0 only once running

    def _constants(self) -> LMMAESConstants:
        return lm_ma_es_constants(self.num_params, self.popsize, self.num_directions)

    def _adapted_width(self, st: dict[str, Any]) -> Tensor:
        """``sigma * s * sqrt(diag(T T^T))``, T the next generation's product of maps."""
        k = min(st["num_updates"], self.num_directions)
        diag = _transform_diag(st["M"].to(torch.float64), self._constants().c_d, k)
        return st["sigma"] * st["sigma_group"] * diag.sqrt()

    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        check_saved_shapes("LMMAES", st, {"M": (self.num_directions, self.num_params)},
                           " (num_directions x D)")
        t = st.get("num_updates")
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(
                f"LMMAES.load_state_dict: saved num_updates {t!r} is not a non-negative integer"
            )
        check_saved_sigma("LMMAES", st.get("sigma"))

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        self.sigma_ratio(st)  # records st["sigma_group"]
        st["sigma"], st["num_updates"] = 1.0, 0  # t of Algorithm 1 (a plateau skips one)
        st["p_s"] = torch.zeros_like(mean)
        st["M"] = mean.new_zeros(self.num_directions, self.num_params)
        st["stopped"], st["f_hist"], st["flat"] = {}, [], 0

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, tuple]:
        self.sigma_ratio(st)  # a scheduled sigma is used from now on (s multiplies)
        z = self._randn(self.popsize, self.num_params)
        k = min(st["num_updates"], self.num_directions)  # only the vectors learned
        d = lm_ma_es_directions(z, st["M"], self._constants().c_d, k)
        return torch.addcmul(st["mean"], st["sigma"] * st["sigma_group"], d), (z, d)

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, aux: tuple) -> None:
        if not all_tied(losses):  # an exact plateau says nothing: keep the distribution
            self._algorithm_1(st, losses, *aux)
        if self.stop:  # on sigma s: the maps' diagonal (order 1) costs O(m^2 D) to form
            reasons = termination(self.stop, st, losses, widths=st["sigma"] * st["sigma_group"])
            if reasons:
                self._stop_for_good(st, reasons)

    def _algorithm_1(self, st: dict[str, Any], losses: Tensor, z: Tensor, d: Tensor) -> None:
        """One update of Algorithm 1 (module docstring) from the members' draws."""
        k = self._constants()
        w = by_rank(losses, torch.tensor(k.weights, dtype=losses.dtype, device=losses.device))
        w = w.to(z.dtype)
        z_w, d_w = w @ z, w @ d
        lr = self.group_values("lr")
        st["mean"] = st["mean"] + (lr * st["sigma"]) * st["sigma_group"] * d_w
        st["p_s"] = (1 - k.c_s) * st["p_s"] + math.sqrt(k.mu_eff * k.c_s * (2 - k.c_s)) * z_w
        c_c = torch.tensor(k.c_c, dtype=z.dtype, device=z.device)[:, None]
        st["M"] = (1 - c_c) * st["M"] + torch.sqrt(k.mu_eff * c_c * (2 - c_c)) * z_w
        ps2 = float(st["p_s"].square().sum())
        st["sigma"] = st["sigma"] * math.exp(k.c_s / 2 * (ps2 / self.num_params - 1))
        st["num_updates"] += 1
