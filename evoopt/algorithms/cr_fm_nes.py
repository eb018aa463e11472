r"""CR-FM-NES: the Cost-Reduced Fast-Moving Natural Evolution Strategy, native torch.

Nomura & Ono (2022), "Fast Moving Natural Evolution Strategy for High-Dimensional
Problems", IEEE CEC 2022, https://doi.org/10.1109/CEC55065.2022.9870206 (arXiv 2201.11422),
Algorithms 1 and 2. The search distribution is ``N(m, sigma^2 A A^T)`` with
``A = diag(d) (I + v v^T)^(1/2)``: a diagonal ``d`` [D] and one vector ``v`` [D], so time and
memory are O(P D) per generation, in torch on the parameters' device. One generation, in the
code's names (``vb = v / |v|``, ``gamma = 1 + |v|^2``)::

    z_i ~ N(0, I), z_{P/2+i} = -z_i                                 (antithetic, i <= P/2)
    y_i = z_i + (sqrt(gamma) - 1) vb <vb, z_i>,  x_i = m + sigma s d y_i   (s: group sigma)
    p_s <- (1 - c_s) p_s + sqrt(c_s (2 - c_s) mu_eff) sum_i w^rank_i z_i
    w   = w^dist if |p_s| >= E|N(0, I)| (moving) else w^rank
          w^dist_i ∝ w^hat_i exp(alpha_dist |z_i|), normalised, minus 1/P
    dy  = sum_i w_i y_i;  p_c <- (1 - c_c) p_c + sqrt(c_c (2 - c_c) mu_eff) d dy
    m   <- m + lr sigma s d dy                                       (lr: eta_m = 1)
    (s_j, t_j) for the columns [y_1..y_P, p_c / d]: the natural gradient of the diagonal
          and of v, Algorithm 2 (below, :func:`_natural_gradient`)
    v   <- v + sum_j e_j t_j / |v|;   d <- d * (1 + sum_j e_j s_j),  e = [eta_B w, c_1]
    d   <- d / det(A)^(1/D)            (det(A)^(1/D) = exp(mean(ln d) + ln(1 + |v|^2) / 2D))
    G_s = sum_i w_i (|z_i|^2 - D) / D;  sigma <- sigma exp(eta_sigma / 2 G_s)
          eta_sigma = 1 (moving), eta_stag (|p_s| >= 0.1 E|N|), else eta_conv

Constants (the paper's defaults): ``w^hat_i = max(0, ln(P/2 + 1) - ln i)``, ``w^rank_i = w^hat_i /
sum w^hat - 1/P``, ``mu_eff = 1 / sum (w^rank_i + 1/P)^2``, ``c_s = (mu_eff + 2) / (D +
mu_eff + 5)``, ``c_c = (4 + mu_eff/D) / (D + 4 + 2 mu_eff/D)``, ``c_1 = 2 / ((D + 1.3)^2 +
mu_eff) (D - 5) / 6``, ``eta_B = tanh((min(0.02 P, 3 ln D) + 5) / (0.23 D + 25))``,
``eta_stag = tanh((0.024 P + 0.7 D + 20) / (D + 12))``, ``eta_conv = 2 tanh((0.025 P + 0.75 D
+ 10) / (D + 4))``, ``alpha_dist = h^-1 min(1, sqrt(P / D))`` with ``h^-1`` the root of
``(1 + a^2) exp(a^2 / 2) / 0.24 - 10 - D`` (damped Newton from 6, as the authors' code). The
initial ``v`` is ``N(0, I / D)`` from the optimizer's generator. The initial diagonal is
``d_i = 1 / sqrt(1 + v_i^2)`` (the paper: ``d = 1``), so that every row of ``A`` has norm 1 and
each coordinate starts with exactly its group's ``sigma``, as in every evoopt optimizer (the
paper's start is wider by ``sqrt(1 + v_i^2)``, about ``sqrt(1 + 1/D)``). For D < 5 the
paper's ``c_1`` is negative; it is taken as 0 here (beyond the paper). Every member is
feasible here (``lambda_F = P``). Where the paper leaves details open, this follows the
authors' reference code (``crfmnes`` 1.0.0, "IEEE CEC 2022 version"): ``tests/evoopt/
test_cr_fm_nes.py`` re-states it in float64, and an ad-hoc run of that package fed the same
draws agrees with this file (figures in the issue note).

Param groups: ``lr`` (eta_m) may differ per group; ``sigma`` is each group's initial width
``s``; the learned step size starts at 1 and multiplies it. Dtypes: ``mean``, ``d``, ``v``,
``p_s``, ``p_c`` are kept in the parameters' dtype; the step size is a Python float.
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
from ..shaping import all_tied, by_rank
from .sep_cma import check_saved_sigma

__all__ = ["CRFMNES", "CRFMNESConstants", "cr_fm_nes_constants"]


@dataclass(frozen=True)
class CRFMNESConstants:
    """The paper's constants for one (D, P) (every member feasible)."""

    w_hat: tuple[float, ...]  # by position, best first
    mu_eff: float
    c_s: float
    c_c: float
    c_1: float
    eta_b: float
    eta_stag: float
    eta_conv: float
    alpha_dist: float
    chi_n: float


def _h_inv(n: int) -> float:
    """The root a > 0 of ``(1 + a^2) exp(a^2 / 2) / 0.24 - 10 - n`` (damped Newton from 6,
    stopping when |f| <= 1e-10 or a step is below 1e-16)."""
    a = 6.0
    for _ in range(10_000):
        f = (1 + a * a) * math.exp(a * a / 2) / 0.24 - 10 - n
        if abs(f) <= 1e-10:
            break
        step = 0.5 * f / (a * math.exp(a * a / 2) * (3 + a * a) / 0.24)
        a -= step
        if abs(step) < 1e-16:
            break
    return a


def cr_fm_nes_constants(num_params: int, popsize: int) -> CRFMNESConstants:
    """The paper's constants for ``D = num_params``, ``P = popsize``."""
    n, lam = num_params, popsize
    w_hat = [max(0.0, math.log(lam / 2 + 1) - math.log(i)) for i in range(1, lam + 1)]
    mu_eff = 1 / sum((v / sum(w_hat)) ** 2 for v in w_hat)
    c1_cma = 2 / ((n + 1.3) ** 2 + mu_eff)
    return CRFMNESConstants(
        w_hat=tuple(w_hat), mu_eff=mu_eff,
        c_s=(mu_eff + 2) / (n + mu_eff + 5),
        c_c=(4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n),
        c_1=max(0.0, c1_cma * (n - 5) / 6),
        eta_b=math.tanh((min(0.02 * lam, 3 * math.log(n)) + 5) / (0.23 * n + 25)),
        eta_stag=math.tanh((0.024 * lam + 0.7 * n + 20) / (n + 12)),
        eta_conv=2 * math.tanh((0.025 * lam + 0.75 * n + 10) / (n + 4)),
        alpha_dist=_h_inv(n) * min(1.0, math.sqrt(lam / n)),
        chi_n=math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n)),
    )


def _natural_gradient(Y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 2: the natural-gradient directions ``(S, T)`` ([J, D] each) of the diagonal
    and of ``v`` for the rows ``Y`` ([J, D]) in O(J D)."""
    v2 = float(v.square().sum())
    vb = v / math.sqrt(v2)
    vbb = vb.square()
    gamma = 1 + v2
    alpha = min(1.0, math.sqrt(v2 * v2 + (2 * gamma - math.sqrt(gamma)) / float(vbb.max()))
                / (2 + v2))
    yv = Y @ vb  # [J]: <y, vb>
    T = Y * yv[:, None] - vb * ((yv.square() + gamma) / 2)[:, None]
    b = -(1 - alpha**2) * v2 * v2 / gamma + 2 * alpha**2
    h_inv = 1 / (2 - (b + 2 * alpha**2) * vbb)  # H^-1, diagonal
    S = Y.square() - (v2 / gamma) * (Y * vb) * yv[:, None] - 1
    S = S - (alpha / gamma) * ((2 + v2) * (T * vb) - v2 * torch.outer(T @ vb, vbb))
    hv = h_inv * vbb
    S = S * h_inv - (b / (1 + b * (vbb @ hv))) * torch.outer(S @ hv, hv)  # a tensor: no
    # ZeroDivisionError where the method diverges (the caller checks finiteness)
    T = T - alpha * ((2 + v2) * (S * vb) - torch.outer(S @ vbb, vb))
    return S, T


@register("cr_fm_nes")
class CRFMNES(PopulationOptimizer):
    r"""CR-FM-NES (Nomura & Ono 2022, Algorithms 1-2), in torch.

    Args:
        params: parameters or param groups to optimise.
        lr: ``eta_m``, the mean's learning rate (default 1.0); schedulable, per group.
        sigma: each group's initial search width (default 0.1); the learned step size
            multiplies it.
        popsize: members per generation, even (antithetic pairs); ``None`` (default):
            ``4 + floor(3 ln D)`` rounded up to even.
        maximize: maximise the objective.
        seed: seed of the private generator (it also draws the initial ``v``).

    State (``state["population"]``): ``mean``, ``d``, ``v``, ``p_s``, ``p_c`` [D] in the
    parameters' dtype; ``sigma`` (a float, starts at 1); ``sigma_group`` [D];
    ``num_updates`` (an exact plateau is not one).
    """

    mirrored = True
    pairs_why = "CR-FM-NES samples antithetic pairs"
    min_popsize = 2
    vector_state = ("d", "v", "p_s", "p_c", "sigma_group")
    param_dtype_state = vector_state

    def __init__(self, params, lr: float = 1.0, sigma: float = 0.1, *,
                 popsize: int | None = None, maximize: bool = False, seed: int | None = None):
        defaults = dict(lr=lr, sigma=sigma)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        """``4 + floor(3 ln D)`` (the base rounds it up to even)."""
        return standard_popsize(num_params)

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_lr_sigma(group, initial=initial)  # lr 0 only once running

    def _adapted_width(self, st: dict[str, Any]) -> Tensor | None:
        """``sigma s d sqrt(1 + v^2)``: the square roots of ``diag(A A^T)`` times the scale;
        None (the groups' sigma, exactly) before the first update."""
        if st["num_updates"] == 0:
            return None
        return st["sigma"] * st["sigma_group"] * st["d"] * torch.sqrt(1 + st["v"].square())

    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        check_saved_sigma("CRFMNES", st.get("sigma"))
        t = st.get("num_updates")
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(
                f"CRFMNES.load_state_dict: saved num_updates {t!r} is not a non-negative integer"
            )
        if not bool((st["d"] > 0).all()):
            raise ValueError("CRFMNES.load_state_dict: saved d has entries <= 0 (expected the "
                             "positive diagonal of A)")

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        self.sigma_ratio(st)  # records st["sigma_group"]
        st["sigma"], st["num_updates"] = 1.0, 0
        st["v"] = self._randn(self.num_params) / math.sqrt(self.num_params)
        st["d"] = torch.rsqrt(1 + st["v"].square())  # unit rows of A (the paper: d = 1)
        st["p_s"], st["p_c"] = torch.zeros_like(mean), torch.zeros_like(mean)

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, tuple]:
        self.sigma_ratio(st)
        half = self._randn(self.popsize // 2, self.num_params)
        z = torch.cat([half, -half])
        v = st["v"]
        v2 = float(v.square().sum())
        vb = v / math.sqrt(v2)
        y = z + (math.sqrt(1 + v2) - 1) * torch.outer(z @ vb, vb)
        scale = st["sigma"] * st["sigma_group"] * st["d"]
        return torch.addcmul(st["mean"], scale, y), (z, y)

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, aux: tuple) -> None:
        if all_tied(losses):  # an exact plateau says nothing: keep the distribution
            return
        z, y = aux
        n, k = self.num_params, cr_fm_nes_constants(self.num_params, self.popsize)
        w_hat = by_rank(losses, torch.tensor(k.w_hat, dtype=losses.dtype,
                                             device=losses.device)).to(z.dtype)
        w_rank = w_hat / w_hat.sum() - 1 / self.popsize
        new = {"p_s": (1 - k.c_s) * st["p_s"]
               + math.sqrt(k.c_s * (2 - k.c_s) * k.mu_eff) * (w_rank @ z)}
        ps_norm = float(torch.linalg.vector_norm(new["p_s"]))
        moving = ps_norm >= k.chi_n
        w = w_rank
        if moving:  # distance weights
            w_dist = w_hat * torch.exp(k.alpha_dist * torch.linalg.vector_norm(z, dim=1))
            w = w_dist / w_dist.sum() - 1 / self.popsize
        dy = w @ y
        new["p_c"] = (1 - k.c_c) * st["p_c"] + math.sqrt(k.c_c * (2 - k.c_c) * k.mu_eff) * (
            st["d"] * dy)
        lr = self.group_values("lr")
        new["mean"] = st["mean"] + (lr * st["sigma"]) * st["sigma_group"] * st["d"] * dy
        new["v"], new["d"] = _shape_update(st["v"], st["d"], torch.cat(
            [y, (new["p_c"] / st["d"])[None]]), torch.cat([k.eta_b * w, w.new_tensor([k.c_1])]))
        g_s = float(w @ (z.square().sum(1) - n)) / n
        if moving:
            eta_sigma = 1.0
        else:
            eta_sigma = k.eta_stag if ps_norm >= 0.1 * k.chi_n else k.eta_conv
        new["sigma"] = st["sigma"] * math.exp(eta_sigma / 2 * g_s)
        new["num_updates"] = st["num_updates"] + 1
        if not (math.isfinite(new["sigma"]) and all(bool(torch.isfinite(new[key]).all())
                                                   for key in ("v", "d", "mean"))):
            raise RuntimeError(
                f"CR-FM-NES diverged at generation {st['generation']}: |v|^2 = "
                f"{float(st['v'] @ st['v']):.3g} and the next v, d or step size are not "
                "finite (the authors' code diverges the same way); the state is unchanged"
            )
        st.update(new)


def _shape_update(v: Tensor, d: Tensor, Y: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
    """``v`` and ``d`` after one step along Algorithm 2's directions for the columns ``Y``
    with rates ``e``, ``d`` normalised by ``det(A)^(1/D)``."""
    S, T = _natural_gradient(Y, v)
    v_new = v + (e @ T) / torch.linalg.vector_norm(v)
    d_new = d * (1 + e @ S)
    log_root = torch.log(d_new).mean() + torch.log1p(v_new @ v_new) / (2 * Y.shape[1])
    return v_new, d_new / torch.exp(log_root)
