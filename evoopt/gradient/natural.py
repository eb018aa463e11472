r"""Natural gradient with a trust region: the TRPO step as a ``torch.optim.Optimizer``.

J. Schulman, S. Levine, P. Moritz, M. Jordan, P. Abbeel, "Trust Region Policy
Optimization", ICML 2015, https://arxiv.org/abs/1502.05477 (Sec. 6 and Appendix C);
S. Kakade, "A Natural Policy Gradient", NIPS 2001.

With ``g`` the gradient of the loss (all parameters as one flat vector), ``kl(theta)``
the mean KL divergence between the old policy (fixed) and the policy at ``theta``, and
``F`` its Hessian at the old parameters (the Fisher information matrix)::

    F v      = grad( grad(kl) . v ) + damping * v       Fisher-vector product by double backprop
    x        = CG(F, g, cg_iters)                       x ~ F^-1 g             (Appendix C)
    beta     = sqrt(2 * max_kl / (x . F x))             largest step with 1/2 s.F s = max_kl
    step     = -beta * x
    line search (with a closure): theta_old + backtrack_coef^k * step for k = 0, 1, ...,
        accept the first with loss < loss_old and kl <= max_kl; none: keep theta_old

Defaults: ``max_kl=0.01``, ``cg_iters=10``, ``damping=0.1``, ``backtrack_coef=0.5``,
``backtrack_iters=10`` (Spinning Up's TRPO: ``delta=0.01``, ``damping_coeff=0.1``,
``cg_iters=10``, ``backtrack_iters=10``, but ``backtrack_coeff=0.8``; OpenAI baselines'
``trpo_mpi`` halves the step as here, with ``cg_damping=1e-2``).

The KL comes from ``kl_fn`` (constructor or ``step`` argument): a zero-argument function
that recomputes the mean KL(pi_old || pi_theta) from the *current* parameters, with the
old distribution detached. The loss comes from a torch closure (``zero_grad``, loss,
``backward`` when grad is enabled) or from gradients already in ``p.grad``. The line
search calls the closure under ``torch.no_grad()``. ``last`` records the step: the
gradient norm, ``beta``, the expected and actual improvement, the accepted fraction and
the KL after the step.

The hyperparameters live in the param groups (schedulers can drive ``max_kl``); the
step is computed over all groups jointly, so every group must hold the same values
(``step`` raises ``ValueError`` naming the first that differs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..checks import check_int, check_positive, check_range
from ..registry import register

__all__ = ["NaturalGradient", "conjugate_gradient"]


def conjugate_gradient(Avp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> Tensor:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given as ``Avp(v) = A v``
    (Hestenes-Stiefel; stops when ``r.r < residual_tol``). Starts from ``x = 0``."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if float(rr) < residual_tol:
            break
        Ap = Avp(p)
        alpha = rr / p.dot(Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


@register("natural_gradient")
class NaturalGradient(Optimizer):
    """TRPO's natural-gradient step under a KL trust region (see the module docstring).

    Args:
        params: parameters or param groups.
        max_kl: the trust region radius delta (> 0).
        cg_iters: conjugate-gradient iterations (>= 1).
        damping: added to the Fisher matrix, ``F + damping * I`` (>= 0).
        line_search: backtrack on the closure's loss (needs a closure).
        backtrack_coef: shrink factor per line-search try, in (0, 1).
        backtrack_iters: number of line-search tries (>= 1).
        kl_fn: default KL function (``step(kl_fn=...)`` overrides it).
        maximize: maximise the closure's objective.
    """

    def __init__(self, params, max_kl: float = 0.01, cg_iters: int = 10, damping: float = 0.1, *,
                 line_search: bool = True, backtrack_coef: float = 0.5, backtrack_iters: int = 10,
                 kl_fn: Callable[[], Tensor] | None = None, maximize: bool = False):
        for name, flag in (("line_search", line_search), ("maximize", maximize)):
            if not isinstance(flag, bool):  # bool("False") is True: refuse, do not convert
                raise ValueError(f"Invalid {name}: {flag!r} (expected True or False)")
        defaults = dict(
            max_kl=check_positive("max_kl", max_kl),
            cg_iters=check_int("cg_iters", cg_iters),
            damping=check_positive("damping", damping, allow_zero=True),
            backtrack_coef=check_range("backtrack_coef", backtrack_coef, 0.0, 1.0,
                                       low_open=True, high_open=True),
            backtrack_iters=check_int("backtrack_iters", backtrack_iters),
            line_search=line_search, maximize=maximize,
        )
        if kl_fn is not None and not callable(kl_fn):
            raise ValueError(f"Invalid kl_fn: {kl_fn!r} (expected a zero-argument callable "
                             "returning the KL)")
        self.kl_fn = kl_fn
        self.last: dict[str, float] | None = None
        super().__init__(params, defaults)

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def step(self, closure: Callable | None = None, kl_fn: Callable[[], Tensor] | None = None):  # type: ignore[override]
        """One trust-region step; returns the closure's loss (before the step) or None."""
        kl_fn = kl_fn if kl_fn is not None else self.kl_fn
        if kl_fn is None:
            raise ValueError("NaturalGradient.step needs kl_fn (a zero-argument callable returning "
                             "the mean "
                             "KL between the old and the current policy), given here or to the "
                             "constructor")
        hp = self.param_groups[0]
        for i, g in enumerate(self.param_groups[1:], 1):  # one step for all groups: one value each
            for key in self.defaults:
                if g[key] != hp[key]:
                    raise ValueError(
                        f"Invalid {key}: {g[key]!r} in param group {i} but {hp[key]!r} in group 0 "
                        "(expected one value for all groups: the trust-region step is computed "
                        "over all parameters jointly)")
        params = self._params()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if any(p.grad is None for p in params):
            raise ValueError("NaturalGradient.step: some parameters have no gradient (call "
                             "backward, or pass "
                             "a closure that does)")
        g = torch.cat([p.grad.reshape(-1) for p in params])
        if hp["maximize"]:
            g = -g

        # Fisher-vector products by double backprop of the mean KL
        with torch.enable_grad():
            kl = kl_fn()
            grads = torch.autograd.grad(kl, params, create_graph=True)
        flat_grad_kl = torch.cat([t.reshape(-1) for t in grads])
        damping = hp["damping"]

        def Fvp(v: Tensor) -> Tensor:
            with torch.enable_grad():
                hv = torch.autograd.grad(flat_grad_kl.dot(v.detach()), params, retain_graph=True)
            return torch.cat([t.reshape(-1) for t in hv]).detach() + damping * v

        x = conjugate_gradient(Fvp, g.detach(), hp["cg_iters"])
        xFx = float(x.dot(Fvp(x)))
        if not (xFx > 0 and math.isfinite(xFx)):
            raise ValueError(f"NaturalGradient.step: x.Fx = {xFx} (expected > 0): the KL's Hessian "
                             "is not "
                             "positive definite here; evaluate kl_fn at the old parameters or "
                             "raise damping")
        beta = math.sqrt(2.0 * hp["max_kl"] / xFx)
        full_step = -beta * x
        expected = float(-g.dot(full_step))  # first-order decrease of the loss

        old = torch.cat([p.detach().reshape(-1) for p in params])
        accepted, actual, kl_after = 1.0, math.nan, math.nan
        if hp["line_search"] and closure is not None:
            sign = -1.0 if hp["maximize"] else 1.0
            loss_old = sign * float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
            accepted = 0.0
            frac = 1.0
            for _ in range(hp["backtrack_iters"]):
                self._set(params, old + frac * full_step)
                with torch.no_grad():
                    new_loss = sign * float(closure())
                    kl_new = float(kl_fn())
                if new_loss < loss_old and kl_new <= hp["max_kl"]:
                    accepted, actual, kl_after = frac, loss_old - new_loss, kl_new
                    break
                frac *= hp["backtrack_coef"]
            if accepted == 0.0:
                self._set(params, old)
        else:
            self._set(params, old + full_step)
        self.last = {"grad_norm": float(g.norm()), "beta": beta, "expected_improve": expected,
                     "actual_improve": actual, "step_fraction": accepted, "kl": kl_after,
                     "kl_before": float(kl.detach())}
        return loss

    @staticmethod
    @torch.no_grad()
    def _set(params: list[Tensor], flat: Tensor) -> None:
        a = 0
        for p in params:
            n = p.numel()
            p.copy_(flat[a:a + n].view_as(p))
            a += n
