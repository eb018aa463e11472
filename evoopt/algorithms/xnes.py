r"""xNES: Exponential Natural Evolution Strategies.

Glasmachers, Schaul, Sun, Wierstra, Schmidhuber (2010), "Exponential natural evolution
strategies", GECCO, https://doi.org/10.1145/1830483.1830557; in its final form Wierstra,
Schaul, Glasmachers, Sun, Peters, Schmidhuber (2014), "Natural Evolution Strategies",
JMLR 15, https://jmlr.org/papers/v15/wierstra14a.html, Algorithm 5.

The search distribution is ``N(mean, A A^T)`` with a full ``D x D`` matrix
``A = sigma * B``, ``det(B) = 1``. One generation, in the code's names (Algorithm 5)::

    s_k  ~ N(0, I)                                   k = 1..P  (P = popsize)
    z_k  = mean + sigma * B @ s_k
    w_k  = utility of z_k's rank                     (JMLR eq. 11, best member largest)
    G_delta = sum_k w_k s_k
    G_M     = sum_k w_k (s_k s_k^T - I)
    G_sigma = tr(G_M) / D
    G_B     = G_M - G_sigma * I
    mean  <- mean + lr * sigma * B @ G_delta         (lr is eta_mu)
    sigma <- sigma * exp(sigma_lr / 2 * G_sigma)
    B     <- B @ expm(b_lr / 2 * G_B)                (torch.linalg.matrix_exp)

Defaults (JMLR Table 1): ``popsize = 4 + floor(3 ln D)``, ``lr = eta_mu = 1``,
``sigma_lr = b_lr = eta_sigma = eta_B = (9 + 3 ln D) / (5 D sqrt D)``.
(The optional adaptation sampling of the paper's Section 4 is not implemented.)

``sigma`` and ``B`` are kept in float64 whatever the parameters' dtype (the repeated
products ``B @ expm(.)`` drift in float32); members are cast to the parameters' dtype.
Memory is ``O(D^2)`` and every generation costs a ``D x D`` matrix exponential, so xNES is
for small ``D``: more than :attr:`XNES.max_params` coordinates raise a ``ValueError``
(use :class:`evoopt.SNES` or a diagonal CMA-ES there).

Param groups: the initial ``A`` is ``diag(sigma of each coordinate's group)``, factored
as ``sigma = geometric mean``, ``B = diag(sigma_i) / sigma``. If a group's ``sigma``
changes between generations, the rows of ``A`` of its coordinates are multiplied by
``new / old`` (and ``A`` is factored again): a schedule rescales what was learned. ``lr``
may differ between groups (it scales coordinates of the step); ``sigma_lr`` and ``b_lr``
act on the whole matrix and must agree across groups.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_lr_sigma, check_positive
from .._state import check_saved_shapes
from ..population import PopulationOptimizer
from ..registry import register
from ._defaults import standard_popsize
from ..shaping import nes_utilities

__all__ = ["XNES"]


def xnes_defaults(num_params: int) -> dict[str, float]:
    """The paper's defaults for dimension ``D = num_params`` (JMLR 2014, Table 1)."""
    d = num_params
    rate = (9 + 3 * math.log(d)) / (5 * d * math.sqrt(d))  # Table 1, eta_sigma = eta_B (xNES)
    return {
        "popsize": standard_popsize(d),  # Table 1, lambda
        "lr": 1.0,  # Table 1, eta_mu
        "sigma_lr": rate,
        "b_lr": rate,
    }


@register("xnes")
class XNES(PopulationOptimizer):
    r"""Exponential NES (Glasmachers et al. 2010; Wierstra et al. 2014, JMLR, Algorithm 5).

    Args:
        params: parameters or param groups to optimise (at most ``max_params`` in all).
        lr: center learning rate ``eta_mu`` (default 1.0, Table 1); schedulable, may
            differ per group.
        sigma: initial standard deviation of each coordinate (default 0.1; per group).
        sigma_lr: ``eta_sigma``; ``None`` (default): ``(9 + 3 ln D) / (5 D sqrt D)``.
        b_lr: ``eta_B``; ``None`` (default): the same formula.
        popsize: members per generation; ``None`` (default): ``4 + floor(3 ln D)``. >= 2.
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``mean`` [D] (parameters' dtype); ``sigma`` (0-dim)
    and ``B`` [D, D] in float64; ``sigma_group`` [D] float64 (the groups' ``sigma`` that
    ``A = sigma * B`` refers to).
    """

    #: The largest D accepted: B is D x D and each generation takes its matrix exponential.
    max_params: int = 5000
    min_popsize = 2

    def __init__(
        self,
        params,
        lr: float = 1.0,
        sigma: float = 0.1,
        *,
        sigma_lr: float | None = None,
        b_lr: float | None = None,
        popsize: int | None = None,
        maximize: bool = False,
        seed: int | None = None,
    ):
        defaults = dict(lr=lr, sigma=sigma, sigma_lr=sigma_lr, b_lr=b_lr)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)
        self._check_size()

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        """``4 + floor(3 ln D)`` (Table 1)."""
        return xnes_defaults(num_params)["popsize"]

    def _check_size(self) -> None:
        if self.num_params > self.max_params:
            raise ValueError(
                f"Invalid number of parameters for XNES: {self.num_params} (expected at most "
                f"XNES.max_params={self.max_params}: xNES keeps a full D x D matrix and takes "
                "its matrix exponential every generation); use evoopt.SNES or a diagonal "
                "CMA-ES instead"
            )

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_lr_sigma(group, initial=initial)  # lr 0 only once running
        for key in ("sigma_lr", "b_lr"):
            if group[key] is not None:
                check_positive(key, group[key], allow_zero=True)

    def _group_added(self) -> None:
        self._check_size()

    def _matrix_rate(self, key: str) -> float:
        """``sigma_lr`` / ``b_lr``: one number for the whole matrix."""
        default = xnes_defaults(self.num_params)[key]
        vals = [default if g[key] is None else float(g[key]) for g in self.param_groups]
        if any(v != vals[0] for v in vals):
            raise ValueError(
                f"Invalid {key}: {vals} differ between param groups (expected one value: "
                f"{key} acts on the whole covariance matrix)"
            )
        return vals[0]

    def _adapted_width(self, st: dict[str, Any]) -> Tensor:
        """The per-coordinate standard deviations ``sigma * ||row i of B||`` (the square roots
        of ``diag(A A^T)``)."""
        return st["sigma"] * torch.linalg.vector_norm(st["B"], dim=1)

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        D = self.num_params
        self.sigma_ratio(st, torch.float64)  # records st["sigma_group"]
        sig = st["sigma_group"]
        st["B"] = torch.eye(D, device=self._device, dtype=torch.float64)
        st["sigma"] = sig[0].clone()
        if not torch.all(sig == sig[0]):  # A = diag(sig) = sigma * B with det(B) = 1
            st["sigma"] = torch.exp(torch.log(sig).mean())
            st["B"] = torch.diag(sig / st["sigma"])

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        self._matrix_rate("sigma_lr")
        self._matrix_rate("b_lr")
        ratio = self.sigma_ratio(st, torch.float64)
        if ratio is not None:  # a schedule moved sigma: rescale A's rows
            if torch.all(ratio == ratio[0]):
                st["sigma"] = st["sigma"] * ratio[0]
            else:
                log_r = torch.log(ratio)
                c = log_r.mean()
                st["sigma"] = st["sigma"] * torch.exp(c)
                st["B"] = torch.exp(log_r - c)[:, None] * st["B"]
        s = self._randn(self.popsize, self.num_params)
        step = st["sigma"] * (s.to(torch.float64) @ st["B"].T)  # sigma * B @ s_k, row-wise
        return st["mean"] + step.to(st["mean"].dtype), s

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, s: Tensor) -> None:
        D = self.num_params
        # may raise: first
        sigma_lr, b_lr = self._matrix_rate("sigma_lr"), self._matrix_rate("b_lr")
        s = s.to(torch.float64)
        w = -nes_utilities(losses.to(torch.float64))  # eq. 11, best largest
        eye = torch.eye(D, device=s.device, dtype=torch.float64)
        G_delta = w @ s  # sum_k w_k s_k
        G_M = (s * w[:, None]).T @ s - w.sum() * eye  # sum_k w_k (s s^T - I)
        G_sigma = torch.trace(G_M) / D
        G_B = G_M - G_sigma * eye
        lr = self.group_values("lr")
        if isinstance(lr, Tensor):
            lr = lr.to(torch.float64)
        step = lr * st["sigma"] * (st["B"] @ G_delta)
        st["mean"] = st["mean"] + step.to(st["mean"].dtype)
        st["sigma"] = st["sigma"] * torch.exp(0.5 * sigma_lr * G_sigma)
        st["B"] = st["B"] @ torch.linalg.matrix_exp(0.5 * b_lr * G_B)

    # ------------------------------------------------------------ checkpoint
    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        D = self.num_params
        check_saved_shapes("XNES", st, {"sigma": (), "B": (D, D), "sigma_group": (D,)})
