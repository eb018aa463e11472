r"""Running observation statistics shared by a whole population.

Evolution strategies for RL (Salimans et al. 2017, "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning", https://arxiv.org/abs/1703.03864, sec. 2.2;
Mania et al. 2018, "Simple random search provides a competitive approach to
reinforcement learning", https://arxiv.org/abs/1803.07055, ARS V2) normalise each
observation coordinate by a running mean and standard deviation that is estimated from
the observations of *all* members' rollouts and updated once per generation, so that
every member of a generation sees the same normalisation.

Public API (stable)::

    norm = RunningNorm(shape, clip=None, min_var=1e-2, std_rule="floor")   # an nn.Module
    norm.update(x)            # x: [..., *shape]; adds the rows to the statistics
    norm.merge(other)         # other: RunningNorm or norm.stats(); Chan et al. merge

Non-finite input is refused (``ValueError``, statistics unchanged): one NaN observation
would otherwise turn the mean of a normaliser shared by the whole population into NaN.
Population rollouts drop such rows, and the rows of failed members, before updating.
    norm(x)                   # (x - mean) / std, clipped to [-clip, clip] when clip is set
    norm.stats()              # {"count": [], "mean": [*shape], "m2": [*shape]} (float64)
    norm.mean, norm.var, norm.std, norm.count

The statistics are float64 *buffers*, so they travel with the policy that owns the
normaliser (``policy.state_dict()``, ``torch.save``) and round-trip exactly.

Maths (Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for
computing sample variances"): for two sets A and B with counts ``n_a, n_b``, means
``mean_a, mean_b`` and sums of squared deviations ``m2_a, m2_b``::

    n     = n_a + n_b
    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    m2    = m2_a + m2_b + delta**2 * n_a * n_b / n

``var = m2 / n`` (the population variance, numpy's ``np.var`` with ``ddof=0``). The
observations are divided by ``std = sqrt(max(var, min_var))``; ``min_var = 1e-2`` is
OpenAI-ES's (``es_distributed``'s ``RunningStat``) and EvoTorch's default: it keeps nearly
constant coordinates (CartPole's first observations are within +-0.05) from being blown
up. With no data yet the normaliser is the identity.

``std_rule="ars"`` is ARS's ``MeanStdFilter`` (github.com/modestyachts/ARS,
``code/filter.py``) instead: ``std = sqrt(m2 / (count - 1)) + 1e-8`` (the sample
variance), and a coordinate whose ``sqrt(m2 / (count - 1))`` is below ``1e-7`` gets
``std = inf``, i.e. it is zeroed rather than scaled up (``min_var`` is not used; with no
data yet ``std = 1 + 1e-8``). On MuJoCo observations, whose coordinates all vary, the two
rules differ only by the factor ``sqrt(count / (count - 1))`` and the ``1e-8``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["RunningNorm", "STD_RULES"]

#: How ``RunningNorm`` turns its variance into the std it divides by (module docstring).
STD_RULES = ("floor", "ars")


class RunningNorm(nn.Module):
    """Running mean / variance of vectors of shape ``shape`` (float64 buffers).

    Args:
        shape: the shape of one observation (an int or a tuple).
        clip: clip the normalised values to ``[-clip, clip]`` (``None``: no clipping).
        min_var: lower bound of the variance used to scale (> 0; OpenAI-ES: 1e-2).
        std_rule: ``"floor"`` (``sqrt(max(var, min_var))``) or ``"ars"`` (ARS's filter:
            sample std + 1e-8, coordinates with std < 1e-7 zeroed); see the module docstring.
    """

    def __init__(self, shape, clip: float | None = None, min_var: float = 1e-2,
                 std_rule: str = "floor"):
        super().__init__()
        shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if any(s < 1 for s in shape):
            raise ValueError(f"Invalid shape: {shape} (expected positive sizes)")
        positive = isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0
        if clip is not None and not positive:
            raise ValueError(f"Invalid clip: {clip!r} (expected None or a finite number > 0)")
        positive = (isinstance(min_var, (int, float)) and math.isfinite(min_var)
                    and min_var > 0)
        if isinstance(min_var, bool) or not positive:
            raise ValueError(f"Invalid min_var: {min_var!r} (expected a finite number > 0)")
        if std_rule not in STD_RULES:
            raise ValueError(f"Invalid std_rule: {std_rule!r} (expected 'floor' or 'ars')")
        self.std_rule = std_rule
        self.shape = shape
        self.clip = None if clip is None else float(clip)
        self.min_var = float(min_var)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(shape, dtype=torch.float64))

    def _apply(self, fn, recurse: bool = True):
        """``.to(device)`` moves the statistics; dtype casts (``policy.float()``,
        ``.half()``) leave them float64."""
        saved = {name: getattr(self, name) for name in ("count", "mean", "m2")}
        super()._apply(fn, recurse)
        for name, old in saved.items():
            new = getattr(self, name)
            if new.dtype != torch.float64:  # a cast: keep the exact values, follow the device
                setattr(self, name, old.to(new.device))
        return self

    def extra_repr(self) -> str:
        rule = "" if self.std_rule == "floor" else f", std_rule={self.std_rule!r}"
        return (f"shape={self.shape}, clip={self.clip}, min_var={self.min_var}{rule}, "
                f"count={int(self.count)}")

    # ------------------------------------------------------------------ stats
    @property
    def var(self) -> Tensor:
        """The population variance ``m2 / count`` (zeros before any data)."""
        return self.m2 / self.count.clamp(min=1.0)

    @property
    def std(self) -> Tensor:
        """The std used to normalise: ``sqrt(max(var, min_var))`` (1 before any data);
        ``std_rule="ars"``: ``sqrt(m2 / (count - 1)) + 1e-8``, ``inf`` where the sample std
        is below 1e-7 (``1 + 1e-8`` before any data)."""
        n = float(self.count)
        if self.std_rule == "ars":
            if n == 0:
                return torch.ones_like(self.mean) + 1e-8
            # ARS's RunningStat: the sample variance, or mean**2 after a single row
            sample_std = (self.m2 / (n - 1)).sqrt() if n > 1 else self.mean.abs()
            return torch.where(sample_std < 1e-7, math.inf, sample_std + 1e-8)
        if n == 0:
            return torch.ones_like(self.mean)
        return self.var.clamp(min=self.min_var).sqrt()

    def stats(self) -> dict[str, Tensor]:
        """The sufficient statistics, as plain float64 tensors (for :meth:`merge`)."""
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    @staticmethod
    def batch_stats(x: Tensor, shape) -> dict[str, Tensor]:
        """Count, mean and m2 of the rows of ``x`` (shape [..., *shape]), in float64."""
        x = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape(-1, *shape)
        n = x.shape[0]
        if n == 0:
            z = torch.zeros(shape, dtype=torch.float64)
            return {"count": torch.zeros((), dtype=torch.float64), "mean": z, "m2": z.clone()}
        mean = x.mean(0)
        return {"count": torch.tensor(float(n), dtype=torch.float64), "mean": mean,
                "m2": ((x - mean) ** 2).sum(0)}

    # ---------------------------------------------------------------- updates
    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Add the rows of ``x`` (shape [..., *shape]) to the statistics."""
        x = torch.as_tensor(x)
        if tuple(x.shape[x.dim() - len(self.shape):]) != self.shape:
            raise ValueError(
                f"Invalid x: shape {tuple(x.shape)} (expected [..., "
                f"{', '.join(map(str, self.shape))}])"
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("Invalid x: it holds NaN or infinite values (expected finite "
                             "observations; the statistics are unchanged)")
        self.merge(self.batch_stats(x, self.shape))

    @torch.no_grad()
    def merge(self, other) -> None:
        """Merge another set of statistics into this one (Chan et al.'s pairwise formula).

        ``other`` is a :class:`RunningNorm` or a dict ``{"count", "mean", "m2"}`` as returned
        by :meth:`stats` (what a remote worker sends back).
        """
        if isinstance(other, RunningNorm):
            other = other.stats()
        if not isinstance(other, dict) or not {"count", "mean", "m2"} <= set(other):
            raise ValueError(
                f"Invalid other: {type(other).__name__} (expected a RunningNorm or a dict with "
                "keys 'count', 'mean', 'm2')"
            )
        nb = torch.as_tensor(other["count"], dtype=torch.float64).reshape(())
        mb = torch.as_tensor(other["mean"], dtype=torch.float64)
        m2b = torch.as_tensor(other["m2"], dtype=torch.float64)
        if tuple(mb.shape) != self.shape or tuple(m2b.shape) != self.shape:
            raise ValueError(
                f"Invalid other: statistics of shape {tuple(mb.shape)} (expected {self.shape})"
            )
        if not bool(nb >= 0):
            raise ValueError(f"Invalid other: count {float(nb)} (expected >= 0)")
        finite = bool(torch.isfinite(mb).all() & torch.isfinite(m2b).all())
        if not (finite and math.isfinite(float(nb))):
            raise ValueError("Invalid other: non-finite statistics (NaN or infinite count, mean or "
                             "m2; this normaliser is unchanged)")
        if float(nb) == 0:
            return
        na = self.count.clone()
        n = na + nb
        delta = mb.to(self.mean.device) - self.mean
        self.mean.add_(delta * (nb / n))
        self.m2.add_(m2b.to(self.m2.device) + delta**2 * (na * nb / n))
        self.count.copy_(n)

    def reset(self) -> None:
        """Forget all statistics (back to the identity)."""
        self.count.zero_()
        self.mean.zero_()
        self.m2.zero_()

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` computed in float64, clipped, returned in ``x``'s dtype."""
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        y = (x.to(torch.float64) - self.mean) / self.std
        if self.clip is not None:
            y = y.clamp(-self.clip, self.clip)
        return y.to(dtype)
