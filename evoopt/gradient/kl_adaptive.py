r"""KL-adaptive learning rate: a wrapper optimizer that keeps each policy update near a
target KL divergence.

The rule is the adaptive step size of PPO's KL-penalty variant (J. Schulman, F. Wolski,
P. Dhariwal, A. Radford, O. Klimov, "Proximal Policy Optimization Algorithms", 2017,
https://arxiv.org/abs/1707.06347, Sec. 4: the factors 1.5 and 2 there adapt the penalty
coefficient), applied to the learning rate as in rl_games and RSL-rl
(N. Rudin et al., "Learning to Walk in Minutes Using Massively Parallel Deep RL", CoRL 2021,
https://arxiv.org/abs/2109.11978)::

    after each step, with kl the measured KL between the policy before and after it:
    if kl > threshold * target_kl:   lr <- max(lr_min, lr / factor)
    if kl < target_kl / threshold:   lr <- min(lr_max, lr * factor)
    defaults: target_kl = 0.01, factor = 1.5, threshold = 2, lr in [1e-5, 1e-2]

``lr`` is the ``lr`` entry of every param group of the wrapped optimizer. This class
*is* a :class:`torch.optim.Optimizer` whose ``param_groups`` and ``state`` are the
wrapped optimizer's own objects, so ``torch.optim.lr_scheduler`` and
``clip_grad_norm_`` see the same groups. The KL can come from anywhere: PPO and
REINFORCE report their minibatch KL estimate, an evolution strategy the KL between
successive search distributions: wrap the ES itself (``KLAdaptive(evoopt.OpenAIES(...))``;
``step`` then passes a population objective through) and report, e.g. for a Gaussian
search distribution with fixed ``sigma``, ``kl = |mean_new - mean_old|^2 / (2 sigma^2)``.

Usage::

    opt = KLAdaptive(torch.optim.Adam(policy.parameters(), lr=3e-4), target_kl=0.01)
    loss.backward(); opt.step(); opt.update_kl(kl)          # or
    opt.step(lambda: (loss_fn(), kl_estimate))              # closure returns (loss, kl)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from ..checks import check_positive
from ..registry import register

__all__ = ["KLAdaptive"]


def _is_population_optimizer(opt) -> bool:
    from ..population import PopulationOptimizer

    return isinstance(opt, PopulationOptimizer)


def _check_settings(target_kl, factor, threshold, lr_min, lr_max) -> tuple[float, ...]:
    """The validated ``(target_kl, factor, threshold, lr_min, lr_max)`` as floats."""
    target_kl = check_positive("target_kl", target_kl)
    out = []
    for name, value in (("factor", factor), ("threshold", threshold)):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        v = float(value) if ok else math.nan
        if not (math.isfinite(v) and v > 1):
            raise ValueError(f"Invalid {name}: {value!r} (expected a finite number > 1)")
        out.append(v)
    lo = check_positive("lr_min", lr_min)
    hi = check_positive("lr_max", lr_max)
    if lo > hi:
        raise ValueError(f"Invalid lr_min: {lr_min!r} (expected <= lr_max={lr_max!r})")
    return (target_kl, *out, lo, hi)


@register("kl_adaptive")
class KLAdaptive(Optimizer):
    """Wrap ``optimizer`` and multiply / divide its learning rate by ``factor`` so that the
    measured KL per step stays within ``[target_kl / threshold, target_kl * threshold]``.

    Args:
        optimizer: a torch optimizer instance to wrap, or an iterable of parameters (then
            ``optimizer_class(params, **optimizer_kwargs)`` is built, Adam by default).
        target_kl: the KL per update to aim for (> 0).
        factor: multiplicative lr change (> 1).
        threshold: tolerance band around ``target_kl`` (> 1).
        lr_min, lr_max: bounds of the adapted learning rate (0 < lr_min <= lr_max).
        optimizer_class, optimizer_kwargs: used when ``optimizer`` is a parameter iterable.

    ``last_kl`` holds the last reported KL and ``num_decreases`` / ``num_increases`` count
    the adaptations; all of it is in ``state_dict()`` next to the inner optimizer's.
    """

    def __init__(
        self,
        optimizer,
        target_kl: float = 0.01,
        *,
        factor: float = 1.5,
        threshold: float = 2.0,
        lr_min: float = 1e-5,
        lr_max: float = 1e-2,
        optimizer_class: type[Optimizer] = torch.optim.Adam,
        **optimizer_kwargs,
    ):
        if not isinstance(optimizer, Optimizer):
            optimizer = optimizer_class(optimizer, **optimizer_kwargs)
        elif optimizer_kwargs:
            raise ValueError(f"Invalid optimizer_kwargs: {sorted(optimizer_kwargs)} (only used "
                             "when "
                             "KLAdaptive builds the optimizer from parameters)")
        if isinstance(optimizer, KLAdaptive):
            raise ValueError("Invalid optimizer: a KLAdaptive (expected a plain optimizer to wrap)")
        settings = _check_settings(target_kl, factor, threshold, lr_min, lr_max)
        self.target_kl, self.factor, self.threshold, self.lr_min, self.lr_max = settings
        for i, g in enumerate(optimizer.param_groups):
            if not isinstance(g.get("lr"), (numbers.Real, torch.Tensor)):
                raise ValueError(f"Invalid optimizer: param group {i} has no numeric 'lr' to adapt")
        self.optimizer = optimizer
        self._initialized = False
        super().__init__(optimizer.param_groups, {})
        # share, do not copy: schedulers and clip_grad_norm_ act on the inner optimizer's groups
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state
        self.defaults = optimizer.defaults
        self._initialized = True
        self.last_kl = math.nan
        self.num_decreases = 0
        self.num_increases = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not self._initialized:
            return super().add_param_group(param_group)
        self.optimizer.add_param_group(param_group)

    @property
    def lr(self) -> float:
        """The learning rate of the first param group."""
        return float(self.param_groups[0]["lr"])

    def update_kl(self, kl) -> float:
        """Adapt the learning rate from the measured ``kl`` of the last update; returns the
        new lr of the first group."""
        kl = float(kl)
        if not math.isfinite(kl):
            raise ValueError(f"Invalid kl: {kl!r} (expected a finite number)")
        self.last_kl = kl
        if kl > self.target_kl * self.threshold:
            self._scale_lr(1.0 / self.factor)
            self.num_decreases += 1
        elif kl < self.target_kl / self.threshold:
            self._scale_lr(self.factor)
            self.num_increases += 1
        return self.lr

    def _scale_lr(self, s: float) -> None:
        for g in self.param_groups:
            new = min(self.lr_max, max(self.lr_min, float(g["lr"]) * s))
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(new)
            else:
                g["lr"] = new

    def step(self, closure: Callable | None = None):  # type: ignore[override]
        """Step the wrapped optimizer. If ``closure`` returns ``(loss, kl)``, the wrapped
        optimizer sees only ``loss`` and the lr is then adapted from ``kl``."""
        if closure is None:
            return self.optimizer.step()
        if _is_population_optimizer(self.optimizer):  # the closure may be a population objective
            return self.optimizer.step(closure)
        reported = []

        def inner_closure():
            out = closure()
            if isinstance(out, tuple):
                loss, kl = out
                reported.append(kl)
                return loss
            return out

        loss = self.optimizer.step(inner_closure)
        if reported:
            self.update_kl(reported[-1])
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        inner = self.optimizer.state_dict()
        return {
            "optimizer": inner,
            # for code that reads a torch state_dict's groups
            "param_groups": inner["param_groups"],
            "kl_adaptive": {
                "target_kl": self.target_kl, "factor": self.factor, "threshold": self.threshold,
                "lr_min": self.lr_min, "lr_max": self.lr_max, "last_kl": self.last_kl,
                "num_decreases": self.num_decreases, "num_increases": self.num_increases,
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ours = isinstance(state_dict, dict) and {"kl_adaptive", "optimizer"} <= state_dict.keys()
        if not ours:
            raise ValueError("KLAdaptive.load_state_dict: expected a state_dict saved by "
                             "KLAdaptive "
                             "(keys 'optimizer' and 'kl_adaptive')")
        ours = state_dict["kl_adaptive"]
        # everything is checked before anything is loaded: a bad checkpoint changes nothing
        keys = ("target_kl", "factor", "threshold", "lr_min", "lr_max")
        missing = [k for k in (*keys, "last_kl", "num_decreases", "num_increases")
                   if not isinstance(ours, dict) or k not in ours]
        if missing:
            raise ValueError("KLAdaptive.load_state_dict: the saved 'kl_adaptive' entry lacks "
                             f"{missing}")
        try:
            settings = _check_settings(*(ours[k] for k in keys))
        except ValueError as e:
            raise ValueError(f"KLAdaptive.load_state_dict: saved {e}") from None
        counts = [ours["num_decreases"], ours["num_increases"]]
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError("KLAdaptive.load_state_dict: saved num_decreases/num_increases "
                             f"{counts} "
                             "(expected integers >= 0)")
        if isinstance(ours["last_kl"], bool) or not isinstance(ours["last_kl"], numbers.Real):
            raise ValueError(f"KLAdaptive.load_state_dict: saved last_kl {ours['last_kl']!r} "
                             "(expected a number)")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        # torch's load_state_dict rebinds the inner groups list: share it again
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state
        self.target_kl, self.factor, self.threshold, self.lr_min, self.lr_max = settings
        self.last_kl = float(ours["last_kl"])
        self.num_decreases, self.num_increases = counts

    def __repr__(self) -> str:
        return (f"KLAdaptive(target_kl={self.target_kl}, factor={self.factor}, "
                f"threshold={self.threshold}, "
                f"lr=[{self.lr_min}, {self.lr_max}], optimizer={self.optimizer!r})")
