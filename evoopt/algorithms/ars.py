r"""ARS: Augmented Random Search.

Mania, Guy, Recht (2018), "Simple random search of static linear policies is competitive
for reinforcement learning", NeurIPS, https://arxiv.org/abs/1803.07055, Algorithm 1.

Antithetic finite differences along ``N = popsize / 2`` random directions, keeping the
``b = num_top`` best directions and dividing the step by the standard deviation of the
rewards used. One generation, in the code's names (Algorithm 1)::

    delta_k ~ N(0, I)                                         k = 1..N
    members: mean + sigma * delta_k  (r_plus[k]),  mean - sigma * delta_k  (r_minus[k])
    rewards r = -u  (u: the losses to minimise, after the sign for ``maximize``)
    top: the b directions with the largest max(r_plus[k], r_minus[k])   (V1-t / V2-t)
    sigma_R = std of the 2b rewards r_plus[top], r_minus[top]            (ddof 0)
    mean <- mean + lr / (b * sigma_R) * sum_{k in top} (r_plus[k] - r_minus[k]) delta_k

The rewards enter raw (not ranked), as in the paper; dividing by ``sigma_R`` makes the
step invariant to their scale and offset. When all ``2b`` rewards are equal the step is
zero (``sigma_R`` is then taken as 1 instead of dividing by 0): on an exact plateau the
center stays. Directions whose ``max(r_plus, r_minus)`` tie at the top-``b`` cut are
taken in index order (a tied direction's own difference ``r_plus - r_minus`` still
decides its step).

Members are laid out as ``[mean + sigma * delta_1..N, mean - sigma * delta_1..N]``.

Versions: V1 and V2 differ only in the observation normalisation of a linear policy
(``rl/normalization.py`` in this project), which the optimizer never sees; the "-t"
variants are ``num_top < popsize / 2``. So there is no ``version`` argument here.
The authors' code picks the top directions as those with ``max(r_plus, r_minus) >=``
the ``100 (1 - b / N)`` percentile, the same ``b`` directions when the maxima are
distinct. Their MuJoCo setup in this project's terms (``bench/bench_ars_mujoco.py``,
``tests/rl/test_ars_reference.py``): ``make_policy(env, kind="linear", bias=False,
squash="none", obs_norm=RunningNorm(obs_dim, std_rule="ars"))`` and a
``PopulationRollout`` with ``reward_shift = -shift``.

Defaults are those of the authors' code (github.com/modestyachts/ARS, ``code/ars.py``):
``n_directions = deltas_used = 8`` (``popsize = 16``, ``num_top = N``),
``step_size = lr = 0.02``, ``delta_std = sigma = 0.03``; the paper tunes them per task
(its Appendix tables).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..checks import check_int, check_lr_sigma
from ..population import PopulationOptimizer
from ..registry import register

__all__ = ["ARS"]

ARS_DEFAULTS = {
    "popsize": 16,  # 2 * n_directions, n_directions = 8
    "num_top": None,  # deltas_used b = N (no top-b selection)
    "lr": 0.02,  # step_size alpha
    "sigma": 0.03,  # delta_std nu
}


@register("ars")
class ARS(PopulationOptimizer):
    r"""Augmented Random Search (Mania, Guy, Recht 2018, Algorithm 1).

    Args:
        params: parameters or param groups to optimise.
        lr: step size alpha (default 0.02); schedulable, may differ per group.
        sigma: exploration noise nu (default 0.03); read every generation, may differ
            per group.
        popsize: members per generation, ``2 N`` for ``N`` directions (default 16). Even.
        num_top: ``b``, the number of best directions used, ``1 <= b <= N``; ``None``
            (default): ``N``.
        maximize: maximise the objective (ARS maximises rewards: with ``maximize=True``
            the objective is the reward).
        seed: seed of the private generator.

    State (``state["population"]``): ``mean`` [D] only -- ARS adapts nothing else.
    """

    settings = ("num_top",)  # a checkpoint must match them

    mirrored = True
    pairs_why = "ARS evaluates each direction at +sigma and -sigma"

    def __init__(
        self,
        params,
        lr: float = ARS_DEFAULTS["lr"],
        sigma: float = ARS_DEFAULTS["sigma"],
        *,
        popsize: int = ARS_DEFAULTS["popsize"],
        num_top: int | None = ARS_DEFAULTS["num_top"],
        maximize: bool = False,
        seed: int | None = None,
    ):
        popsize = self._check_popsize(popsize)
        n = popsize // 2
        if num_top is None:
            num_top = n
        check_int("num_top", num_top, minimum=1)
        if num_top > n:
            raise ValueError(
                f"Invalid num_top: {num_top!r} (expected at most the number of directions "
                f"popsize / 2 = {n})"
            )
        self.num_top = int(num_top)
        defaults = dict(lr=lr, sigma=sigma)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    @property
    def num_directions(self) -> int:
        """N, the number of directions per generation (``popsize / 2``)."""
        return self.popsize // 2

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_lr_sigma(group, initial=initial)  # lr 0 only once running

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        pass  # the mean is all ARS keeps

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        delta = self._randn(self.num_directions, self.num_params)
        step = self.group_values("sigma") * delta
        return torch.cat([st["mean"] + step, st["mean"] - step]), delta

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, delta: Tensor) -> None:
        n, b = self.num_directions, self.num_top
        r = -losses  # rewards to maximise
        r_plus, r_minus = r[:n], r[n:]
        if b < n:  # V1-t / V2-t: the b best directions
            top = torch.argsort(torch.maximum(r_plus, r_minus), descending=True, stable=True)[:b]
            r_plus, r_minus, delta = r_plus[top], r_minus[top], delta[top]
        sigma_r = torch.cat([r_plus, r_minus]).std(unbiased=False)
        if sigma_r == 0:  # all 2b rewards equal: zero step
            sigma_r = torch.ones_like(sigma_r)
        lr = self.group_values("lr")
        st["mean"] = st["mean"] + lr / (b * sigma_r) * ((r_plus - r_minus) @ delta)

    # ------------------------------------------------------------ checkpoint
