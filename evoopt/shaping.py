r"""Fitness shaping: maps the losses of one generation to the weights an update uses.

Every function takes ``u``, a 1-D tensor of P losses **to be minimised** (the base
class has already flipped the sign for ``maximize=True`` and replaced non-finite
values), and returns a tensor of the same shape, dtype and device. Lower loss always
means a *smaller* shaped value, so an estimate of the loss gradient is
``sum_i shaped_i * eps_i / (P * sigma)`` and the update subtracts it.

- :func:`centered_rank` -- ranks mapped linearly to [-0.5, 0.5]
  (Salimans et al. 2017, "Evolution Strategies as a Scalable Alternative to RL").
- :func:`standardize` -- ``(u - mean(u)) / std(u)``.
- :func:`nes_utilities` -- the rank-based utilities of Wierstra et al. 2014,
  "Natural Evolution Strategies", JMLR 15, eq. (11), with the sign flipped so that
  they are costs: ``-(max(0, log(P/2 + 1) - log k) / sum_j max(0, ...) - 1/P)``.
- :func:`elite_weights` -- the positive recombination weights of the best ``mu``
  members (log-decreasing as in CMA-ES, or equal).

**Ties.** Members with exactly equal losses share the average of the values their rank
positions would get (average ranks, as ``scipy.stats.rankdata(method="average")``), so the
shaped values never depend on the order of the members. On an exact plateau (all losses
equal) every rank-based shaping is then zero and the rank-based algorithms take no step:
with ties broken by member index the center would random-walk (0-1 losses, a reward that
is constant until the task is solved). Non-finite losses, replaced by one common worst
value, tie the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "by_rank",
    "ranks",
    "centered_rank",
    "standardize",
    "nes_utilities",
    "elite_weights",
    "SHAPINGS",
]


def by_rank(u: Tensor, values: Tensor) -> Tensor:
    """``values[k]`` is what the k-th smallest loss gets (k = 0..P-1); returns it per
    member, tied members getting the mean of the values of the positions they share."""
    order = torch.argsort(u, stable=True)
    s = u[order]
    if s.numel() > 1:
        tied = s[1:] == s[:-1]
        if bool(tied.any()):
            start = torch.ones_like(s, dtype=torch.bool)
            start[1:] = ~tied
            gid = torch.cumsum(start, 0) - 1  # tie group of each sorted position
            num = int(gid[-1]) + 1
            sums = torch.zeros(num, dtype=values.dtype, device=values.device).index_add_(
                0, gid, values)
            counts = torch.bincount(gid, minlength=num).to(values.dtype)
            values = (sums / counts)[gid]
    out = torch.empty_like(values)
    out[order] = values
    return out


def ranks(u: Tensor) -> Tensor:
    """0-based ranks of ``u`` in ascending order, in ``u``'s dtype; tied values get the
    average of their ranks (``[3, 1, 2, 1] -> [3, 0.5, 2, 0.5]``)."""
    return by_rank(u, torch.arange(u.numel(), device=u.device, dtype=u.dtype))


def centered_rank(u: Tensor) -> Tensor:
    r"""``rank(u_i) / (P - 1) - 0.5``: the best member gets -0.5, the worst +0.5 (average
    ranks for ties: all equal gives all zeros)."""
    n = u.numel()
    if n == 1:
        return torch.zeros_like(u)
    return ranks(u) / (n - 1) - 0.5


def standardize(u: Tensor, eps: float = 1e-8) -> Tensor:
    r"""``(u - mean(u)) / (std(u) + eps)`` (population std, ``unbiased=False``)."""
    if u.numel() == 1:
        return torch.zeros_like(u)
    return (u - u.mean()) / (u.std(unbiased=False) + eps)


def nes_utilities(u: Tensor) -> Tensor:
    r"""Rank-based NES utilities (Wierstra et al. 2014, eq. 11), as costs.

    The k-th best member (k = 1..P) gets
    ``w_k = max(0, log(P/2 + 1) - log k) / sum_j max(0, log(P/2 + 1) - log j) - 1/P``;
    the function returns ``-w`` arranged by member so that lower is better, like ``u``.
    Tied members share the mean of their positions' utilities (all tied: all zero, since
    the utilities sum to zero).
    """
    n = u.numel()
    if bool(u.min() == u.max()):  # all tied: exactly zero (their mean, up to rounding)
        return torch.zeros_like(u)
    k = torch.arange(1, n + 1, dtype=u.dtype, device=u.device)
    w = (math.log(n / 2 + 1) - torch.log(k)).clamp(min=0)
    w = w / w.sum() - 1.0 / n
    return -by_rank(u, w)


def elite_weights(u: Tensor, mu: int, kind: str = "log") -> Tensor:
    r"""Weights that sum to 1 on the best ``mu`` members and are 0 elsewhere.

    ``kind="log"``: ``w_k ∝ log(mu + 1/2) - log k`` (Hansen 2016, "The CMA Evolution
    Strategy: A Tutorial", eq. 49 for the positive weights); ``kind="equal"``: ``1/mu``.
    Tied members share the mean of their positions' weights: members tied across the
    cut share the cut's weights, so more than ``mu`` members may get a (smaller) weight.
    """
    n = u.numel()
    if not 1 <= mu <= n:
        raise ValueError(f"Invalid mu: {mu!r} (expected an integer in [1, {n}])")
    k = torch.arange(1, mu + 1, dtype=u.dtype, device=u.device)
    if kind == "log":
        w = math.log(mu + 0.5) - torch.log(k)
    elif kind == "equal":
        w = torch.ones_like(k)
    else:
        raise ValueError(f"Invalid kind: {kind!r} (expected 'log' or 'equal')")
    w = w / w.sum()
    return by_rank(u, torch.cat([w, torch.zeros(n - mu, dtype=u.dtype, device=u.device)]))


def _raw(u: Tensor) -> Tensor:
    return u.clone()


SHAPINGS = {
    "centered_rank": centered_rank,
    "standardize": standardize,
    "nes": nes_utilities,
    "raw": _raw,
}
