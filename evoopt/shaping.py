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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ranks",
    "centered_rank",
    "standardize",
    "nes_utilities",
    "elite_weights",
    "SHAPINGS",
]


def ranks(u: Tensor) -> Tensor:
    """0-based ranks of ``u`` in ascending order (ties broken by index: stable)."""
    order = torch.argsort(u, stable=True)
    r = torch.empty_like(order)
    r[order] = torch.arange(u.numel(), device=u.device)
    return r


def centered_rank(u: Tensor) -> Tensor:
    r"""``rank(u_i) / (P - 1) - 0.5``: the best member gets -0.5, the worst +0.5."""
    n = u.numel()
    if n == 1:
        return torch.zeros_like(u)
    return ranks(u).to(u.dtype) / (n - 1) - 0.5


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
    """
    n = u.numel()
    k = torch.arange(1, n + 1, dtype=u.dtype, device=u.device)
    w = (math.log(n / 2 + 1) - torch.log(k)).clamp(min=0)
    w = w / w.sum() - 1.0 / n
    return -w[ranks(u)]


def elite_weights(u: Tensor, mu: int, kind: str = "log") -> Tensor:
    r"""Weights that sum to 1 on the best ``mu`` members and are 0 elsewhere.

    ``kind="log"``: ``w_k ∝ log(mu + 1/2) - log k`` (Hansen 2016, "The CMA Evolution
    Strategy: A Tutorial", eq. 49 for the positive weights); ``kind="equal"``: ``1/mu``.
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
    out = torch.zeros_like(u)
    out[torch.argsort(u, stable=True)[:mu]] = w
    return out


def _raw(u: Tensor) -> Tensor:
    return u.clone()


SHAPINGS = {
    "centered_rank": centered_rank,
    "standardize": standardize,
    "nes": nes_utilities,
    "raw": _raw,
}
