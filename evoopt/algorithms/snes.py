r"""SNES: Separable Natural Evolution Strategies.

Schaul, Glasmachers, Schmidhuber (2011), "High dimensions and heavy tails for natural
evolution strategies", GECCO, https://doi.org/10.1145/2001576.2001692; in its final form
Wierstra, Schaul, Glasmachers, Sun, Peters, Schmidhuber (2014), "Natural Evolution
Strategies", JMLR 15, https://jmlr.org/papers/v15/wierstra14a.html, Algorithm 6.

The search distribution is ``N(mean, diag(sigma_vec**2))`` with one learned standard
deviation per coordinate. One generation, in the code's names (JMLR Algorithm 6)::

    s_k   ~ N(0, I)                                  k = 1..P  (P = popsize)
    z_k   = mean + sigma_vec * s_k
    w_k   = utility of z_k's rank                    (JMLR eq. 11, best member largest)
    g_mu  = sum_k w_k s_k
    g_sig = sum_k w_k (s_k**2 - 1)
    mean      <- mean + lr * sigma_vec * g_mu        (lr is eta_mu)
    sigma_vec <- sigma_vec * exp(sigma_lr / 2 * g_sig)

Defaults (JMLR Table 1): ``popsize = 4 + floor(3 ln D)``, ``lr = eta_mu = 1``,
``sigma_lr = eta_sigma = (3 + ln D) / (5 sqrt D)``.

``mirrored=True`` draws ``P/2`` noise vectors and uses ``+s`` and ``-s`` (an option
beyond the paper; off by default).

A group's ``sigma`` is the *initial* standard deviation of its coordinates. If it is
changed between generations (by hand or by a schedule), the learned ``sigma_vec`` of
those coordinates is multiplied by ``new / old`` before the next sample: the schedule
rescales what was learned instead of overwriting it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_lr_sigma, check_positive
from ..population import PopulationOptimizer
from ..registry import register
from ._defaults import standard_popsize
from ..shaping import nes_utilities

__all__ = ["SNES"]


def snes_defaults(num_params: int) -> dict[str, float]:
    """The paper's defaults for dimension ``D = num_params`` (JMLR 2014, Table 1)."""
    d = num_params
    return {
        "popsize": standard_popsize(d),  # Table 1, lambda
        "lr": 1.0,  # Table 1, eta_mu
        "sigma_lr": (3 + math.log(d)) / (5 * math.sqrt(d)),  # Table 1, eta_sigma (SNES)
    }


@register("snes")
class SNES(PopulationOptimizer):
    r"""Separable NES (Schaul et al. 2011; Wierstra et al. 2014, JMLR, Algorithm 6).

    Args:
        params: parameters or param groups to optimise.
        lr: center learning rate ``eta_mu`` (default 1.0, Table 1); schedulable.
        sigma: initial per-coordinate standard deviation (default 0.1; per group).
        sigma_lr: learning rate ``eta_sigma`` of ``sigma_vec``; ``None`` (default):
            ``(3 + ln D) / (5 sqrt D)`` (Table 1).
        popsize: members per generation; ``None`` (default): ``4 + floor(3 ln D)``
            (Table 1), rounded up to even when ``mirrored``. At least 2.
        mirrored: antithetic sampling ``+s, -s`` (default False).
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``mean`` [D], ``sigma_vec`` [D] (the learned
    standard deviations), ``sigma_group`` [D] (the groups' ``sigma`` that ``sigma_vec``
    refers to, used to rescale it when a group's ``sigma`` changes).
    """

    settings = ("mirrored",)  # a checkpoint must match them
    min_popsize = 2
    vector_state = ("sigma_vec", "sigma_group")
    param_dtype_state = ("sigma_vec", "sigma_group")  # cast to the parameters' dtype on load

    def __init__(
        self,
        params,
        lr: float = 1.0,
        sigma: float = 0.1,
        *,
        sigma_lr: float | None = None,
        popsize: int | None = None,
        mirrored: bool = False,
        maximize: bool = False,
        seed: int | None = None,
    ):
        if not isinstance(mirrored, bool):
            raise ValueError(f"Invalid mirrored: {mirrored!r} (expected True or False)")
        self.mirrored = mirrored
        defaults = dict(lr=lr, sigma=sigma, sigma_lr=sigma_lr)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        """``4 + floor(3 ln D)`` (Table 1); the base rounds it up to even when mirrored."""
        return snes_defaults(num_params)["popsize"]

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_lr_sigma(group, initial=initial)  # lr 0 only once running
        if group["sigma_lr"] is not None:
            check_positive("sigma_lr", group["sigma_lr"], allow_zero=True)

    def _group_sigma_lr(self) -> float | Tensor:
        default = snes_defaults(self.num_params)["sigma_lr"]
        return self.group_values(lambda g: default if g["sigma_lr"] is None else g["sigma_lr"])

    def _adapted_width(self, st: dict[str, Any]) -> Tensor:
        """The adapted ``sigma_vec``."""
        return st["sigma_vec"]

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        self.sigma_ratio(st)  # records st["sigma_group"]
        st["sigma_vec"] = st["sigma_group"].clone()

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        ratio = self.sigma_ratio(st)
        if ratio is not None:  # a schedule moved sigma: rescale
            st["sigma_vec"] = st["sigma_vec"] * ratio
        P, D = self.popsize, self.num_params
        s = self.noise_buffer(P)
        if self.mirrored:  # [s_1..s_P/2, -s_1..-s_P/2]
            torch.randn(P // 2, D, generator=gen, out=s[: P // 2])
            torch.neg(s[: P // 2], out=s[P // 2 :])
        else:
            torch.randn(P, D, generator=gen, out=s)
        return torch.addcmul(st["mean"], st["sigma_vec"], s), s  # mean + sigma_vec * s

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, s: Tensor) -> None:
        w = -nes_utilities(losses)  # eq. 11 utilities, best member largest
        g_mu = w @ s  # sum_k w_k s_k
        g_sig = w @ s.square_() - w.sum()  # sum_k w_k (s_k^2 - 1); s is not needed after
        lr = self.group_values("lr")
        sigma_lr = self._group_sigma_lr()
        st["mean"] = st["mean"] + lr * st["sigma_vec"] * g_mu
        st["sigma_vec"] = st["sigma_vec"] * torch.exp(0.5 * sigma_lr * g_sig)

    # ------------------------------------------------------------ checkpoint
