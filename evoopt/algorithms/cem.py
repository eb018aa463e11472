r"""CEM: the cross-entropy method for optimisation, with the noisy variant for RL.

Rubinstein (1999), "The cross-entropy method for combinatorial and continuous
optimization", Methodology and Computing in Applied Probability 1(2),
https://doi.org/10.1023/A:1010091220143; de Boer, Kroese, Mannor, Rubinstein (2005),
"A tutorial on the cross-entropy method", Annals of Operations Research 134,
https://doi.org/10.1007/s10479-005-5724-z (smoothed updating); Szita & Lőrincz (2006),
"Learning Tetris using the noisy cross-entropy method", Neural Computation 18(12),
https://doi.org/10.1162/neco.2006.18.12.2936 (extra noise ``Z_t`` added to the variance).

The search distribution is ``N(mean, diag(sigma_vec**2))``. One generation, in the code's
names (``t`` = generation index, from 0)::

    s_k  ~ N(0, I),  x_k = mean + sigma_vec * s_k          k = 1..P  (P = popsize)
    w    = weights of the num_elite = floor(elite_frac * P) best members, sum 1
           ("equal": 1/num_elite; "log": prop. to log(num_elite + 1/2) - log(rank))
    mean_elite = sum_k w_k x_k
    var_elite  = sum_k w_k (x_k - mean_elite)**2           (weighted ML estimate)
    Z_t = extra_noise * max(0, 1 - t / extra_noise_steps)  (constant when steps is None)
    beta_t = sigma_lr * (1 - (1 - 1/(t+1))**sigma_lr_power)  (sigma_lr when power is None)
    mean      <- (1 - lr) * mean + lr * mean_elite
    sigma_vec <- (1 - beta_t) * sigma_vec + beta_t * sqrt(var_elite + Z_t)

``lr`` and ``sigma_lr`` are de Boer et al.'s smoothing constants alpha and beta; both
default to 1 (no smoothing: Rubinstein's CEM and Szita & Lőrincz's). ``sigma_lr_power``
``q`` turns on the tutorial's *dynamic smoothing* of the standard deviation (de Boer et
al. 2005, continuous optimisation; they suggest ``beta`` in [0.8, 0.99], ``q`` in [5, 10]),
whose step ``beta_t ~ beta q / t`` shrinks ``sigma_vec`` polynomially, not geometrically.

Ties: members with equal losses across the elite's cut share the cut's weights (the
average of the weights of the positions they tie on, as in :mod:`evoopt.shaping`), so
the selection never depends on the members' order; a generation whose losses are *all*
equal carries no information and leaves the distribution as it was (selecting an
arbitrary elite would move the mean and shrink ``sigma_vec`` at random: a plateau would
collapse the search).

Plain CEM (the default) is a UMDA_c with truncation selection: its ``sigma_vec`` shrinks
geometrically whatever the distance to the optimum, so started with a width much smaller
than that distance it stops short (premature convergence; measured: Sphere D=10 from
``3 * ones`` with ``sigma=1`` stalls at f = 0.04 .. 4.5). Start wider than the distance,
or use ``extra_noise`` or dynamic smoothing. ``extra_noise`` is a
*variance* (units of ``sigma**2``), Szita & Lőrincz's ``Z_t``: their decreasing schedule
``Z_t = max(5 - t/10, 0)`` is ``extra_noise=5, extra_noise_steps=50``; the default 0 is
plain CEM.

Default ``elite_frac = 0.2``: the literature ranges from ``rho = 0.01``-``0.1`` for
rare-event estimation with large samples (de Boer et al. 2005; Szita & Lőrincz 2006 use
0.1 of N = 100) to 0.5 (the best half, Pourchot & Sigaud 2019, "CEM-RL", with small
populations). 0.2 keeps >= 4 elites from 20 members -- enough to estimate a variance per
coordinate at the small populations used for neural-network policies -- while staying
selective. Default ``popsize = 100`` (Szita & Lőrincz 2006).

A group's ``sigma`` is the *initial* standard deviation of its coordinates; if it changes
between generations, the current ``sigma_vec`` of those coordinates is multiplied by
``new / old`` before the next sample.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_choice, check_int, check_positive, check_range
from ..population import PopulationOptimizer
from ..registry import register
from ..shaping import all_tied, elite_weights

__all__ = ["CEM"]

CEM_DEFAULTS = {
    "popsize": 100,  # Szita & Lőrincz 2006, N = 100
    "elite_frac": 0.2,  # see the module docstring
    "weights": "equal",  # Rubinstein 1999: the elite's sample mean and variance
    "lr": 1.0,  # de Boer et al. 2005, smoothing alpha; 1 = none
    "sigma_lr": 1.0,  # de Boer et al. 2005, smoothing beta; 1 = none
    "sigma_lr_power": None,
    "extra_noise": 0.0,  # Szita & Lőrincz 2006, Z_0 (they use 5)
}


@register("cem")
class CEM(PopulationOptimizer):
    r"""Cross-entropy method with a diagonal Gaussian (Rubinstein 1999; de Boer et al.
    2005; noisy CEM of Szita & Lőrincz 2006).

    Args:
        params: parameters or param groups to optimise.
        lr: smoothing of the mean, alpha in [0, 1] (default 1: mean = elite mean);
            schedulable.
        sigma: initial per-coordinate standard deviation (default 0.1; per group).
        sigma_lr: smoothing of the standard deviation, beta in [0, 1] (default 1).
        sigma_lr_power: ``q`` of the dynamic smoothing ``beta_t``; ``None`` (default):
            constant ``beta_t = sigma_lr``.
        extra_noise: variance ``Z_0`` added to the elite variance (default 0).
        extra_noise_steps: generations over which ``Z_t`` decays linearly to 0; ``None``
            (default): constant ``Z_t = extra_noise``.
        popsize: members per generation (default 100). At least 2.
        elite_frac: fraction of the population kept as elite, in (0, 1] (default 0.2);
            ``floor(elite_frac * popsize)`` must be >= 1.
        weights: ``"equal"`` (default) or ``"log"`` recombination weights of the elite.
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): ``mean`` [D], ``sigma_vec`` [D] (current standard
    deviations), ``sigma_group`` [D] (the groups' ``sigma`` that ``sigma_vec`` refers to).
    """

    settings = ("elite_frac", "weights")  # a checkpoint must match them
    min_popsize = 2
    vector_state = ("sigma_vec", "sigma_group")
    param_dtype_state = ("sigma_vec", "sigma_group")  # cast to the parameters' dtype on load

    def __init__(
        self,
        params,
        lr: float = CEM_DEFAULTS["lr"],
        sigma: float = 0.1,
        *,
        sigma_lr: float = CEM_DEFAULTS["sigma_lr"],
        sigma_lr_power: float | None = CEM_DEFAULTS["sigma_lr_power"],
        extra_noise: float = CEM_DEFAULTS["extra_noise"],
        extra_noise_steps: int | None = None,
        popsize: int = CEM_DEFAULTS["popsize"],
        elite_frac: float = CEM_DEFAULTS["elite_frac"],
        weights: str = CEM_DEFAULTS["weights"],
        maximize: bool = False,
        seed: int | None = None,
    ):
        popsize = self._check_popsize(popsize)
        self.elite_frac = check_range("elite_frac", elite_frac, 0.0, 1.0, low_open=True)
        self.num_elite = math.floor(self.elite_frac * popsize + 1e-9)  # 0.29 * 100 is 28.99...
        if self.num_elite < 1:
            raise ValueError(
                f"Invalid elite_frac: {elite_frac!r} with popsize={popsize} keeps "
                f"floor({elite_frac!r} * {popsize}) = 0 elite members (expected at least 1: "
                f"raise elite_frac or popsize)"
            )
        self.weights = check_choice("weights", weights, {"equal", "log"})
        defaults = dict(
            lr=lr,
            sigma=sigma,
            sigma_lr=sigma_lr,
            sigma_lr_power=sigma_lr_power,
            extra_noise=extra_noise,
            extra_noise_steps=extra_noise_steps,
        )
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        # lr = 0 is refused when given, accepted later (a schedule may anneal it to 0)
        check_range("lr", group["lr"], 0.0, 1.0, low_open=initial)
        check_range("sigma_lr", group["sigma_lr"], 0.0, 1.0)
        check_positive("sigma", group["sigma"])
        check_positive("extra_noise", group["extra_noise"], allow_zero=True)
        if group["sigma_lr_power"] is not None:
            check_positive("sigma_lr_power", group["sigma_lr_power"])
        steps = group["extra_noise_steps"]
        if steps is not None:
            check_int("extra_noise_steps", steps, minimum=1)

    def _extra_noise(self, t: int) -> float | Tensor:
        """``Z_t`` of each group (a float when all groups agree, else a [D] tensor)."""

        def z(g):
            steps, z0 = g["extra_noise_steps"], float(g["extra_noise"])
            return z0 if steps is None else z0 * max(0.0, 1.0 - t / steps)

        return self.group_values(z)

    def _sigma_rate(self, t: int) -> float | Tensor:
        """beta_t = sigma_lr * (1 - (1 - 1/t)**q) of each group (q = sigma_lr_power)."""

        def beta(g):
            q, b = g["sigma_lr_power"], float(g["sigma_lr"])
            return b if q is None else b * (1.0 - (1.0 - 1.0 / t) ** q)

        return self.group_values(beta)

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
        s = self.noise_buffer(self.popsize)
        torch.randn(self.popsize, self.num_params, generator=gen, out=s)
        return torch.addcmul(st["mean"], st["sigma_vec"], s), s  # mean + sigma_vec * s

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, s: Tensor) -> None:
        if all_tied(losses):  # an exact plateau: no information, keep the distribution
            return
        w = elite_weights(losses, self.num_elite, self.weights)  # [P], sum 1 on the elite
        elite = torch.nonzero(w).squeeze(1)  # the elite, and members tied at its cut
        w, s = w[elite], s[elite]  # only the elite rows count
        d = w @ s  # elite mean, in units of s
        var_s = w @ (s - d).square_()  # elite variance, units of s
        sig = st["sigma_vec"]
        mean_elite = st["mean"] + sig * d
        var_elite = sig * sig * var_s
        z_t = self._extra_noise(st["generation"])
        lr = self.group_values("lr")
        sigma_lr = self._sigma_rate(st["generation"] + 1)
        st["mean"] = (1 - lr) * st["mean"] + lr * mean_elite
        st["sigma_vec"] = (1 - sigma_lr) * sig + sigma_lr * torch.sqrt(var_elite + z_t)

    # ------------------------------------------------------------ checkpoint
