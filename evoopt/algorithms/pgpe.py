r"""PGPE: policy gradients with parameter-based exploration, with symmetric sampling.

F. Sehnke, C. Osendorfer, T. Rückstieß, A. Graves, J. Peters, J. Schmidhuber,
"Parameter-exploring policy gradients", Neural Networks 23(4), 2010,
https://doi.org/10.1016/j.neunet.2009.12.004 (its symmetric-sampling update), in the
form of N. E. Toklu, P. Liskowski, R. K. Srivastava, "ClipUp", PPSN 2020,
https://arxiv.org/abs/2008.02387 and EvoTorch's ``PGPE``: centered ranks instead of raw
rewards, the center moved by ClipUp, the standard deviation by plain gradient steps
capped at ``stdev_max_change`` of its value per generation.

One generation, in the code's names (``H = popsize / 2``; ``stdev``, ``mean`` of length D)::

    eps       ~ N(0, I)                [H, D]
    members   = [mean + stdev * eps ; mean - stdev * eps]   (first half +, second half -)
    c         = shaping(losses)        (costs: the best member gets the lowest value)
    c_plus, c_minus = c[:H], c[H:]
    # Sehnke eq. for symmetric sampling, with perturbation T = stdev * eps, per direction:
    grad_mean  = sum_i (c_plus_i - c_minus_i) / 2 * (stdev * eps_i) / H  + weight_decay * mean
    a_i        = (c_plus_i + c_minus_i) / 2 - b,     b = mean_i (c_plus_i + c_minus_i) / 2
    grad_stdev = sum_i a_i * ((stdev * eps_i)^2 - stdev^2) / stdev / H
               = stdev * sum_i a_i * (eps_i^2 - 1) / H
    mean  <- inner_optimizer(mean, grad_mean)           (ClipUp by default, lr = group lr)
    stdev <- clamp(stdev - stdev_lr * grad_stdev, (1 - stdev_max_change) * stdev,
                                                  (1 + stdev_max_change) * stdev)

(The gradients are of the expected *cost*, so both updates descend; EvoTorch writes the
same with fitness utilities and ascends. Dividing by the number of directions H follows
EvoTorch's ``divide_*_grad_by="num_directions"``. The baseline ``b`` is the generation's
mean; with centered ranks it is zero.) Defaults: ``stdev_lr = 0.1``, ``stdev_max_change
= 0.2`` and ClipUp with momentum 0.9 and ``max_speed = 2 * lr`` (Toklu et al.; EvoTorch).

``sigma`` is the initial standard deviation of every coordinate of a group; instead of
it, ``radius_init`` sets ``||stdev|| = radius_init`` (``sigma = radius_init / sqrt(D)``), the
setting EvoTorch and the ClipUp paper tune. Changing a group's ``sigma`` between
generations (by hand or with a scheduler) *rescales* that group's learned stdev by
``new / old``: a ``StepLR`` on ``sigma`` with ``gamma=0.5`` halves the search width on
top of what PGPE learned, without discarding the learned per-coordinate shape.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_choice, check_positive, check_range
from ..gradient.clipup import ClipUp
from .._groups import _rms
from .._state import STATE_KEY
from ..population import PopulationOptimizer
from ..registry import register
from ..shaping import SHAPINGS
from ._inner import InnerOptimizerMixin
from ._mirrored import MirroredSampler

__all__ = ["PGPE"]


@register("pgpe")
class PGPE(InnerOptimizerMixin, PopulationOptimizer):
    r"""PGPE with symmetric sampling and ClipUp (Sehnke et al. 2010; Toklu et al. 2020).

    Args:
        params: iterable of parameters, ``(name, tensor)`` pairs or param-group dicts.
        popsize: members per generation, even (symmetric pairs).
        lr: center step size handed to the inner optimizer every generation (> 0). The
            papers tune it per task (ClipUp: ``max_speed = 2 * lr``), as they do ``sigma``;
            the defaults 0.1 / 0.1 are starting points, not paper values.
        sigma: initial standard deviation of every coordinate (> 0); default 0.1 unless
            ``radius_init`` is given. See the module docstring for what changing it means.
        radius_init: initial ``||stdev||`` (> 0): ``sigma = radius_init / sqrt(D)``.
        stdev_lr: step size of the stdev update (>= 0; 0.1 as in the ClipUp paper).
        stdev_max_change: largest relative stdev change per generation, in (0, 1) (0.2).
        weight_decay: L2 coefficient added to the center gradient (>= 0; default 0).
        optimizer: inner optimizer class or factory ``callable(groups)`` for the center;
            default :class:`evoopt.ClipUp` (momentum 0.9, max_speed = 2 * lr).
        shaping: a key of :data:`evoopt.shaping.SHAPINGS` (default ``"centered_rank"``).
        maximize, seed: see :class:`~evoopt.PopulationOptimizer`.

    ``opt.stdev`` is the current [D] standard deviation; after each generation ``p.grad``
    holds the center gradient that was applied.
    """

    mirrored = True
    vector_state = ("stdev",)
    param_dtype_state = ("stdev",)  # cast to the parameters' dtype on load

    def __init__(
        self,
        params,
        lr: float = 0.1,
        sigma: float | None = None,
        *,
        popsize: int = 100,
        radius_init: float | None = None,
        stdev_lr: float = 0.1,
        stdev_max_change: float = 0.2,
        weight_decay: float = 0.0,
        optimizer=ClipUp,
        shaping: str = "centered_rank",
        maximize: bool = False,
        seed: int | None = None,
    ):
        if sigma is not None and radius_init is not None:
            raise ValueError(
                f"Invalid sigma={sigma!r} with radius_init={radius_init!r} "
                "(expected one of them, not both)"
            )
        if radius_init is not None:
            check_positive("radius_init", radius_init)
        elif sigma is None:
            sigma = 0.1
        defaults = dict(
            lr=lr,
            sigma=sigma,
            stdev_lr=stdev_lr,
            stdev_max_change=stdev_max_change,
            weight_decay=weight_decay,
        )
        self.shaping = check_choice("shaping", shaping, SHAPINGS)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)
        if radius_init is not None:
            sigma = float(radius_init) / math.sqrt(self.num_params)
            self.defaults["sigma"] = sigma
            for g in self.param_groups:
                if g["sigma"] is None:
                    g["sigma"] = sigma
        self._build_inner(optimizer)
        self._sampler = MirroredSampler()

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        # lr = 0 is refused when given, accepted later (a schedule may anneal it to 0)
        check_positive("lr", group["lr"], allow_zero=not initial)
        # sigma: None until radius_init fills it in once D is known; at each ask a changed
        # sigma is checked by _follow_sigma_schedule (with the group's index)
        if initial and group["sigma"] is not None:
            check_positive("sigma", group["sigma"])
        check_positive("stdev_lr", group["stdev_lr"], allow_zero=True)
        check_range("stdev_max_change", group["stdev_max_change"], 0.0, 1.0, low_open=True,
                    high_open=True)
        check_positive("weight_decay", group["weight_decay"], allow_zero=True)

    @property
    def stdev(self) -> Tensor:
        """The current per-coordinate standard deviation, a [D] tensor."""
        return self._st["stdev"]

    @property
    def current_sigma(self) -> float:
        """RMS of the adapted ``stdev`` the next generation samples with (after a pending
        change of a group's ``sigma``); see :attr:`PopulationOptimizer.current_sigma`."""
        st = self.state.get(STATE_KEY)
        if not st:
            return super().current_sigma
        stdev = st["stdev"].to(torch.float64)  # a copy unless already float64
        stdev = stdev.clone() if stdev is st["stdev"] else stdev
        for g, old, (a, b) in zip(self.param_groups, st["group_sigma"], self._group_slices):
            if g["sigma"] != old:
                stdev[a:b] *= g["sigma"] / old
        return _rms(stdev)

    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        stdev = torch.empty_like(mean)
        for g, (a, b) in zip(self.param_groups, self._group_slices):
            stdev[a:b] = g["sigma"]
        st["stdev"] = stdev
        st["group_sigma"] = [float(g["sigma"]) for g in self.param_groups]

    def _follow_sigma_schedule(self, st: dict[str, Any]) -> None:
        """A group's ``sigma`` changed since the last generation: scale its stdev by new/old."""
        for i, g in enumerate(self.param_groups):  # all checked before any stdev changes
            new = g["sigma"]
            if new != st["group_sigma"][i] and not (
                isinstance(new, (int, float)) and new > 0 and math.isfinite(new)
            ):
                raise ValueError(
                    f"Invalid sigma: {new!r} in param group {i} "
                    "(expected > 0; check the sigma schedule)"
                )
        for i, (g, (a, b)) in enumerate(zip(self.param_groups, self._group_slices)):
            new, old = g["sigma"], st["group_sigma"][i]
            if new == old:
                continue
            st["stdev"][a:b] *= new / old
            st["group_sigma"][i] = float(new)

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        self._follow_sigma_schedule(st)
        eps = self._sampler.draw(self.popsize // 2, self.num_params, st["mean"], gen)
        return self._sampler.members(st["mean"], st["stdev"]), eps

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, eps: Tensor) -> None:
        H = self.popsize // 2
        stdev = st["stdev"]
        c = SHAPINGS[self.shaping](losses)
        c_plus, c_minus = c[:H], c[H:]
        a = (c_plus + c_minus) / 2
        a = (a - a.mean()) / H  # baseline b = the generation's mean
        grad_mean = ((c_plus - c_minus) / (2 * H)) @ eps
        grad_mean.mul_(stdev)  # the perturbations are stdev * eps
        wd = self.group_values("weight_decay")
        if isinstance(wd, Tensor):
            grad_mean.addcmul_(wd, st["mean"])
        elif wd != 0.0:
            grad_mean.add_(st["mean"], alpha=wd)
        eps.square_()  # in place: the private noise buffer is redrawn at the next ask
        grad_stdev = (a @ eps).sub_(a.sum()).mul_(stdev)  # stdev * sum_i a_i (eps_i^2 - 1)
        stdev_lr = self.group_values("stdev_lr")
        max_change = self.group_values("stdev_max_change")
        target = stdev - stdev_lr * grad_stdev
        st["stdev"] = torch.clamp(
            target, min=stdev * (1 - max_change), max=stdev * (1 + max_change)
        )
        self._apply_gradient(st, grad_mean)

    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        super()._check_loaded_state(st)  # stdev's shape
        name = type(self).__name__
        gs = st.get("group_sigma")
        if not isinstance(gs, list) or len(gs) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: saved group_sigma {gs!r} does not match "
                f"{len(self.param_groups)} param groups"
            )
