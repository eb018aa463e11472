r"""OpenAI-ES: the evolution strategy of Salimans, Ho, Chen, Sidor, Sutskever,
"Evolution Strategies as a Scalable Alternative to Reinforcement Learning", 2017,
https://arxiv.org/abs/1703.03864 (Algorithm 1, with the antithetic "mirrored" sampling and
rank-based fitness shaping the paper uses; weight decay and Adam as in the authors' code,
github.com/openai/evolution-strategies-starter).

One generation, in the code's names (``H = popsize / 2``, all vectors of length ``D``)::

    eps     ~ N(0, I)                 [H, D]          (kept until tell)
    members = [mean + sigma * eps ; mean - sigma * eps]   [P, D]  (first half +, second half -)
    shaped  = shaping(losses)         [P]             (centered ranks by default: best -0.5)
    w       = shaped[:H] - shaped[H:]                  (a mirrored pair's difference)
    grad    = (w @ eps) / (P * sigma) + weight_decay * mean
            = sum_i shaped_i * eps_i / (P * sigma) + weight_decay * mean
    p.grad  <- grad (split per parameter);  inner_optimizer.step()  ->  mean

``grad`` estimates the gradient of the Gaussian-smoothed loss,
``grad_mean E[F(mean + sigma * eps)] = E[F(mean + sigma * eps) * eps] / sigma`` (the
estimator of Algorithm 1), over antithetic pairs, plus the L2 term. The authors' code hands
``-g + l2coeff * theta`` to Adam with ``l2coeff = 0.005``, stepsize 0.01, noise stdev 0.02,
betas (0.9, 0.999); those are the defaults here. (Their ``g`` omits the ``1 / sigma``
factor, so with the same ``weight_decay`` the L2 pull here, relative to the fitness term,
is theirs multiplied by ``sigma``; Adam's step does not depend on the gradient's scale.)

Memory: besides the population it returns, the optimizer keeps the half noise [P/2, D]
and recycles population buffers (see ``evoopt/algorithms/_mirrored.py``).

``optimizer`` is any torch optimizer class or factory ``callable(params) -> Optimizer``:
Adam (default), SGD, :class:`evoopt.ClipUp`, ... It is built over the same parameters with
one group per group here, and each group's ``lr`` is copied into it every generation, so
``torch.optim.lr_scheduler`` on this optimizer drives the step size; ``sigma`` is read from
the groups every generation too (per group, on that group's coordinates).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import lowrank
from ..checks import check_choice, check_int, check_positive
from ..population import PopulationOptimizer
from ..registry import register
from ..shaping import SHAPINGS
from ._inner import InnerOptimizerMixin
from ._mirrored import MirroredSampler

__all__ = ["OpenAIES"]


@register("openai_es")
class OpenAIES(InnerOptimizerMixin, PopulationOptimizer):
    r"""OpenAI-ES (Salimans et al. 2017): see the module docstring for the maths.

    Args:
        params: iterable of parameters, ``(name, tensor)`` pairs or param-group dicts.
        popsize: members per generation, even (mirrored pairs); the paper used thousands
            of workers, 256 is a single-machine default.
        lr: step size handed to the inner optimizer every generation (> 0; paper 0.01).
        sigma: noise standard deviation (> 0; paper 0.02).
        weight_decay: L2 coefficient added to the gradient estimate (>= 0; paper 0.005).
        optimizer: the inner optimizer: a ``torch.optim.Optimizer`` class (built as
            ``cls(groups)`` with each group's ``lr``) or a factory ``callable(groups)``.
            Default :class:`torch.optim.Adam` (betas (0.9, 0.999), as in the paper's code).
        shaping: a key of :data:`evoopt.shaping.SHAPINGS` (default ``"centered_rank"``).
        rank: ``None`` (dense Gaussian noise) or an integer >= 1: low-rank (EGGROLL)
            perturbations ``sigma * A_i B_i^T / sqrt(r)`` of every parameter with two or more
            dimensions, ``r = min(rank, m, n)``, dense noise for the others; ``ask`` then
            returns a :class:`evoopt.lowrank.FactoredPopulation` whose noise is regenerated
            from ``(seed, generation, member)``, and the estimate is formed from the factors
            (see :mod:`evoopt.lowrank` for the estimator and its scaling).
        maximize, seed: see :class:`~evoopt.PopulationOptimizer`.

    After each generation ``p.grad`` holds the gradient estimate that was applied.
    """

    mirrored = True
    settings = ("rank",)

    def __init__(
        self,
        params,
        lr: float = 0.01,
        sigma: float = 0.02,
        *,
        popsize: int = 256,
        weight_decay: float = 0.005,
        optimizer=torch.optim.Adam,
        shaping: str = "centered_rank",
        rank: int | None = None,
        maximize: bool = False,
        seed: int | None = None,
    ):
        defaults = dict(lr=lr, sigma=sigma, weight_decay=weight_decay)
        self.shaping = check_choice("shaping", shaping, SHAPINGS)
        self.rank = None if rank is None else check_int("rank", rank, minimum=1)
        self._plan = None
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)
        if rank is not None:
            self._plan = lowrank.LowRankPlan(self.layout, self.rank)
        self._build_inner(optimizer)
        self._sampler = MirroredSampler()

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        # lr = 0 is refused when given, accepted later (a schedule may anneal it to 0)
        if not initial and not group["sigma"] > 0:
            raise ValueError(
                f"Invalid sigma: {group['sigma']!r} (expected > 0; check the sigma schedule)"
            )
        check_positive("lr", group["lr"], allow_zero=not initial)
        check_positive("sigma", group["sigma"])
        check_positive("weight_decay", group["weight_decay"], allow_zero=True)

    def _group_added(self) -> None:
        super()._group_added()
        if self._plan is not None:  # the layout grew
            self._plan = lowrank.LowRankPlan(self.layout, self.rank)

    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        pass  # the center (st["mean"]) and the inner optimizer's state are all there is

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, tuple]:
        sigma = self.group_values("sigma")
        if self._plan is not None:  # low rank: the factors, from (seed, generation, member)
            pop = lowrank.sample_factored(self._plan, st["mean"], self._param_sigmas(),
                                          self.popsize, self.seed, st["generation"])
            return pop, (None, sigma)
        eps = self._sampler.draw(self.popsize // 2, self.num_params, st["mean"], gen)
        return self._sampler.members(st["mean"], sigma), (eps, sigma)

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, aux: tuple) -> None:
        eps, sigma = aux
        H, P = self.popsize // 2, self.popsize
        shaped = SHAPINGS[self.shaping](losses)
        w = shaped[:H] - shaped[H:]
        if eps is None:  # factored: one GEMM per matrix, divided by P * sigma
            grad = lowrank.factored_gradient(rows, w)
        else:
            grad = w @ eps  # [D]: the one pass over the noise
            if isinstance(sigma, Tensor):
                grad.div_(sigma).div_(P)
            else:
                grad.div_(P * sigma)
        wd = self.group_values("weight_decay")
        if isinstance(wd, Tensor):
            grad.addcmul_(wd, st["mean"])
        elif wd != 0.0:
            grad.add_(st["mean"], alpha=wd)
        self._apply_gradient(st, grad)

    def _param_sigmas(self) -> list[float]:
        """Each searched parameter's group ``sigma``, in layout order."""
        return [float(g["sigma"]) for g, ps in zip(self.param_groups, self._searched)
                for _ in ps]
