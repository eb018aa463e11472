r"""ClipUp: normalized gradient steps with heavy-ball momentum and a clipped velocity.

N. E. Toklu, P. Liskowski, R. K. Srivastava, "ClipUp: A Simple and Powerful Optimizer for
Distribution-based Policy Evolution", PPSN 2020, https://arxiv.org/abs/2008.02387
(Algorithm 1). In the code's names (all parameters form one vector, as in the paper)::

    d        = grad                      (-grad when maximize)
    velocity = momentum * velocity + lr * d / ||d||          # normalized gradient step
    velocity = velocity * max_speed / ||velocity||   if ||velocity|| > max_speed   # clip
    param    = param - velocity

``||.||`` is the Euclidean norm over *all* parameters of *all* param groups jointly (like
``torch.nn.utils.clip_grad_norm_``), as the paper and EvoTorch normalise the whole search
gradient: splitting the parameters into groups with the same settings changes nothing.
Each group's own ``lr``, ``momentum`` and ``max_speed`` then apply to its coordinates:
``||d||`` and ``||velocity||`` are global, the step ``lr * d / ||d||`` and the clip
``max_speed / ||velocity||`` use the group's values (so a group with a smaller ``lr``
moves proportionally less along the common direction). A zero gradient contributes no
step (the momentum term still moves); parameters without a gradient are left out. The paper suggests
choosing the maximum speed and setting the step size to half of it, ``max_speed = 2 * lr``;
leaving ``max_speed=None`` keeps that ratio at every step, so a scheduler on ``lr`` scales
both (EvoTorch instead fixes ``max_speed`` at twice the *initial* step size).

The paper writes the update for gradient *ascent* (``param + velocity`` with the
gradient of the fitness); this class follows torch and minimises the loss whose gradient
is in ``p.grad`` unless ``maximize=True``. It works with any gradient: a PPO loss's
backward pass, or an evolution-strategy estimate written into ``p.grad``
(:class:`evoopt.OpenAIES`, :class:`evoopt.PGPE`).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from ..checks import check_positive, check_range
from ..registry import register

__all__ = ["ClipUp"]


def _check_hyperparameters(lr, momentum, max_speed, maximize=False) -> None:
    check_positive("lr", lr)
    check_range("momentum", momentum, 0.0, 1.0, high_open=True)
    if max_speed is not None:
        check_positive("max_speed", max_speed)
    if not isinstance(maximize, bool):  # a truthy string would silently flip the direction
        raise ValueError(f"Invalid maximize: {maximize!r} (expected True or False)")


@register("clipup")
class ClipUp(Optimizer):
    r"""ClipUp (Toklu et al. 2020): see the module docstring for the maths.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: step size ``alpha`` (> 0): the length of the normalized gradient step.
        momentum: heavy-ball coefficient ``m`` in [0, 1) (paper: 0.9).
        max_speed: the largest allowed ``||velocity||`` (> 0); ``None`` means ``2 * lr``,
            read at every step.
        maximize: follow the gradient upwards instead of downwards.

    State per parameter: ``velocity`` (same shape as the parameter).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        momentum: float = 0.9,
        max_speed: float | None = None,
        *,
        maximize: bool = False,
    ):
        _check_hyperparameters(lr, momentum, max_speed, maximize)
        defaults = dict(lr=lr, momentum=momentum, max_speed=max_speed, maximize=maximize)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_hyperparameters(group["lr"], group["momentum"], group["max_speed"],
                                   group["maximize"])
        except ValueError:
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure=None):
        """One ClipUp update of every group; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = []  # (params, grads, velocities, settings) of each group with gradients
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("ClipUp does not support sparse gradients")
            grads = [-p.grad if group["maximize"] else p.grad for p in params]
            velocities = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocities.append(state["velocity"])
            max_speed = group["max_speed"]
            max_speed = 2.0 * group["lr"] if max_speed is None else max_speed
            groups.append((params, grads, velocities, group["lr"], group["momentum"], max_speed))
        if groups:
            _clipup(groups)
        return loss


def _joint_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of the concatenation of ``tensors`` (without concatenating)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _clipup(groups: list[tuple]) -> None:
    """The update of every group, in place, with the norms taken over all groups jointly.
    No host synchronisation (works on GPU)."""
    grad_norm = _joint_norm([d for g in groups for d in g[1]])
    # 1 / ||d||, or 0 for a zero gradient (no direction to follow)
    inv = torch.where(grad_norm > 0, 1.0 / grad_norm.clamp(min=torch.finfo(grad_norm.dtype).tiny),
                      0.0)
    for _, grads, velocities, lr, momentum, _ in groups:
        scale = inv * lr
        for v, d in zip(velocities, grads):
            v.mul_(momentum).add_(d * scale)
    speed = _joint_norm([v for g in groups for v in g[2]])
    for params, _, velocities, _, _, max_speed in groups:
        # max_speed / ||v|| when ||v|| > max_speed, else exactly 1
        clip = torch.where(speed > max_speed, max_speed / speed, 1.0)
        for p, v in zip(params, velocities):
            v.mul_(clip)
            p.sub_(v)
