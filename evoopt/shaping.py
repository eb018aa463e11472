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

import functools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "all_tied",
    "by_rank",
    "ranks",
    "centered_rank",
    "standardize",
    "nes_utilities",
    "elite_weights",
    "SHAPINGS",
]


def _numpy_ok(*ts: Tensor) -> bool:
    """CPU float tensors: numpy does the few small ops of ranking without torch's per-op
    dispatch (several microseconds each, for P of a few dozen)."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
               and not t.requires_grad for t in ts)


def all_tied(u: Tensor) -> bool:
    """True when every loss of ``u`` is the same (an exact plateau)."""
    if _numpy_ok(u):
        un = u.numpy()
        return bool(un.min() == un.max())
    return bool(u.min() == u.max())


def _by_rank_numpy(un: np.ndarray, vals: np.ndarray) -> np.ndarray:
    order = np.argsort(un, kind="stable")
    s = un[order]
    start = np.empty(len(s), dtype=bool)
    start[0], start[1:] = True, s[1:] != s[:-1]
    if not start.all():
        gid = np.cumsum(start) - 1  # tie group of each sorted position
        sums = np.bincount(gid, weights=vals)
        vals = (sums / np.bincount(gid))[gid].astype(vals.dtype)
    out = np.empty_like(vals)
    out[order] = vals
    return out


def by_rank(u: Tensor, values: Tensor) -> Tensor:
    """``values[k]`` is what the k-th smallest loss gets (k = 0..P-1); returns it per
    member, tied members getting the mean of the values of the positions they share."""
    if u.numel() > 0 and _numpy_ok(u, values):
        return torch.from_numpy(_by_rank_numpy(u.numpy(), values.numpy()))
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
    if _numpy_ok(u):  # the same IEEE operations, without torch's per-op dispatch
        un = u.numpy()
        r = _by_rank_numpy(un, np.arange(n, dtype=un.dtype))
        return torch.from_numpy((r / (n - 1) - 0.5).astype(un.dtype, copy=False))
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
    if all_tied(u):  # exactly zero (their mean, up to rounding)
        return torch.zeros_like(u)
    return -by_rank(u, _nes_positions(u.numel(), u.dtype, u.device))


@functools.lru_cache(maxsize=64)
def _nes_positions(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The utilities by position (best first); they depend on P alone: computed once."""
    k = torch.arange(1, n + 1, dtype=dtype, device=device)
    w = (math.log(n / 2 + 1) - torch.log(k)).clamp(min=0)
    return w / w.sum() - 1.0 / n


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
    if kind not in ("log", "equal"):
        raise ValueError(f"Invalid kind: {kind!r} (expected 'log' or 'equal')")
    return by_rank(u, _elite_positions(n, mu, kind, u.dtype, u.device))


@functools.lru_cache(maxsize=64)
def _elite_positions(n: int, mu: int, kind: str, dtype: torch.dtype, device) -> Tensor:
    """The weights by position (best first, zero beyond ``mu``): computed once per shape."""
    k = torch.arange(1, mu + 1, dtype=dtype, device=device)
    w = math.log(mu + 0.5) - torch.log(k) if kind == "log" else torch.ones_like(k)
    return torch.cat([w / w.sum(), torch.zeros(n - mu, dtype=dtype, device=device)])


def _raw(u: Tensor) -> Tensor:
    return u.clone()


SHAPINGS = {
    "centered_rank": centered_rank,
    "standardize": standardize,
    "nes": nes_utilities,
    "raw": _raw,
}
