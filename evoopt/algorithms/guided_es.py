r"""Guided ES: Maheswaranathan, Metz, Tucker, Choi, Sohl-Dickstein, "Guided evolutionary
strategies: augmenting random search with surrogate gradients", ICML 2019,
https://arxiv.org/abs/1806.10230 (Algorithm 1).

A *surrogate* gradient -- biased or noisy, but cheap: the gradient of a differentiable
proxy loss, of a smoothed or truncated objective, of a learned model -- points into a
subspace worth searching. Guided ES keeps an orthonormal basis ``U`` [n, k] of the last
``k`` surrogate gradients and samples antithetic pairs from a Gaussian elongated along it
(Algorithm 1, in the paper's names; ``n = D`` coordinates, ``P = popsize / 2`` pairs)::

    U      = orthonormal basis of the last k surrogate gradients          (QR)
    Sigma  = alpha / n I + (1 - alpha) / k U U^T                  (trace(Sigma) = 1)
    eps_i ~ N(0, sigma_p^2 Sigma)                                           i = 1..P
    g      = beta / (2 sigma_p^2 P) sum_i eps_i (f(x + eps_i) - f(x - eps_i))
    x     <- x - lr g

``g`` estimates ``beta Sigma grad f(x)`` (of the Gaussian-smoothed ``f``): the isotropic part
explores every direction, the subspace part follows the surrogate where it is right. The
paper's Figure 1 problem (a quadratic with a biased surrogate gradient) is in the tests:
there Guided ES beats both plain ES and descent on the biased gradient.

Widths. The paper's ``sigma_p`` is the *total* perturbation length (``E|eps|^2 = sigma_p^2``);
here ``sigma`` is the per-coordinate width, as for every evoopt optimizer:
``sigma_p = sigma sqrt(n)``, so the root-mean-square width over coordinates is ``sigma``
whatever ``alpha`` and ``U`` are (``trace(Sigma) = 1``). The sampling is
``eps = sigma sqrt(n) (sqrt(alpha / n) z + sqrt((1 - alpha) / k) U w)`` with
``z ~ N(0, I_n)``, ``w ~ N(0, I_k)`` drawn in that order from the private generator; with a
per-group ``sigma`` (a [D] vector ``s``), ``eps = s * sqrt(n) * y`` and
``g = beta / (2 n P) sum_i (eps_i / s^2) (f(x + eps_i) - f(x - eps_i))``.

Surrogate gradients are read as torch optimizers read gradients: from ``p.grad`` of the
parameters when a generation is asked (at the start of :meth:`step`). The loop::

    opt.zero_grad()
    proxy_loss(model).backward()       # the surrogate gradient
    opt.step(closure)                  # closure / population objective: the true loss

Each asked generation with a ``.grad`` (parameters without one count as zeros) pushes it
into the buffer of the last ``k``; the basis spans the buffer (fewer than ``k`` early on).
Until a first surrogate arrives the search is isotropic (``alpha = 1``: plain antithetic ES),
and a warning says so once. After each generation ``p.grad`` is reset to ``None`` -- the
estimate ``g`` is applied by an *inner* torch optimizer (default SGD: the paper's update;
Adam, ClipUp, ... work too, with the groups' ``lr``) and must not be read back as the next
surrogate.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int, check_lr_sigma, check_positive, check_range
from ..population import PopulationOptimizer
from ..registry import register
from ._defaults import standard_popsize
from ._inner import InnerOptimizerMixin

__all__ = ["GuidedES"]


@register("guided_es")
class GuidedES(InnerOptimizerMixin, PopulationOptimizer):
    r"""Guided ES (Maheswaranathan et al. 2019): see the module docstring for the maths.

    Args:
        params: iterable of parameters, ``(name, tensor)`` pairs or param-group dicts.
        lr: step size of the inner optimizer on ``g`` (> 0).
        sigma: per-coordinate noise width (> 0; the paper's ``sigma_p`` is ``sigma sqrt(D)``).
        popsize: members per generation, even (``P = popsize / 2`` antithetic pairs);
            ``None``: ``4 + 3 ln D`` rounded up to even.
        alpha: weight of the isotropic part of ``Sigma``, in [0, 1] (default 0.5; 1 is
            plain ES, 0 searches the surrogate subspace only).
        beta: scale of the estimate, ``E[g] = beta Sigma grad f`` (> 0; default 2).
        subspace_dim: ``k``, how many past surrogate gradients span the subspace (>= 1).
        optimizer: the inner optimizer class or factory (default :class:`torch.optim.SGD`).
        maximize, seed: see :class:`~evoopt.PopulationOptimizer`.
    """

    mirrored = True
    settings = ("alpha", "beta", "subspace_dim")
    param_dtype_state = ("surrogates",)

    def __init__(self, params, lr: float = 0.2, sigma: float = 0.1, *, popsize: int | None = None,
                 alpha: float = 0.5, beta: float = 2.0, subspace_dim: int = 1,
                 optimizer=torch.optim.SGD, maximize: bool = False, seed: int | None = None):
        self.alpha = float(check_range("alpha", alpha, 0.0, 1.0))
        self.beta = float(check_positive("beta", beta))
        self.subspace_dim = check_int("subspace_dim", subspace_dim, minimum=1)
        self._warned = False
        super().__init__(params, dict(lr=lr, sigma=sigma), popsize=popsize, maximize=maximize,
                         seed=seed)
        self._build_inner(optimizer)

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        return standard_popsize(num_params)

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_lr_sigma(group, initial=initial)  # lr 0 only once running

    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        st["surrogates"] = torch.zeros(self.subspace_dim, mean.numel(), dtype=mean.dtype,
                                       device=mean.device)  # the last k, newest first
        st["num_surrogates"] = 0

    # ------------------------------------------------------------ sampling
    def _read_surrogate(self, st: dict[str, Any]) -> None:
        """Push the parameters' ``.grad`` (if any) into the buffer of the last k."""
        params = self.layout.params
        if all(p.grad is None for p in params):
            if st["num_surrogates"] == 0 and not self._warned:
                self._warned = True
                warnings.warn(
                    "GuidedES: no surrogate gradient (p.grad is None for every parameter): "
                    "sampling isotropically (alpha = 1, plain antithetic ES) until one is "
                    "given; call proxy_loss.backward() before opt.step()",
                    RuntimeWarning, stacklevel=5)
            return
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params]).to(st["surrogates"].dtype)
        if not bool(torch.isfinite(grad).all()):
            raise ValueError("Invalid surrogate gradient: p.grad has NaN or infinite entries")
        st["surrogates"] = torch.cat([grad[None], st["surrogates"][:-1]])
        st["num_surrogates"] = min(st["num_surrogates"] + 1, self.subspace_dim)

    def basis(self, st: dict[str, Any] | None = None) -> Tensor:
        """``U`` [D, k']: an orthonormal basis of the buffered surrogate gradients (k' <= k
        columns; zero columns while there are none, or for zero gradients)."""
        st = self._st if st is None else st
        g = st["surrogates"][: st["num_surrogates"]]
        if not len(g):
            return g.T  # [D, 0]
        q, r = torch.linalg.qr(g.T.to(torch.float64))
        d = r.diagonal().abs()
        keep = d > 1e-12 * float(d.max()) if bool((d > 0).any()) else d > 0
        return q[:, keep].to(g.dtype)

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, tuple]:
        self._read_surrogate(st)
        U = self.basis(st)
        n, H, k = self.num_params, self.popsize // 2, U.shape[1]
        alpha = self.alpha if k else 1.0
        mean = st["mean"]
        z = torch.randn(H, n, generator=gen, dtype=mean.dtype, device=mean.device)
        y = math.sqrt(alpha) * z  # sqrt(n) * (sqrt(alpha / n) z + sqrt((1 - alpha) / k) U w)
        if k:
            w = torch.randn(H, k, generator=gen, dtype=mean.dtype, device=mean.device)
            y = y + math.sqrt(n * (1 - alpha) / k) * (w @ U.T)
        eps = self.group_values("sigma") * y
        return torch.cat([mean + eps, mean - eps]), (eps, U)

    # ------------------------------------------------------------ update
    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, aux: tuple) -> None:
        eps, _ = aux
        H = self.popsize // 2
        sigma = self.group_values("sigma")
        diff = (losses[:H] - losses[H:]).to(eps.dtype)
        grad = (diff @ eps) * (self.beta / (2 * self.num_params * H)) / sigma**2
        self._apply_gradient(st, grad)
        for p in self.layout.params:  # the estimate is no surrogate for the next generation
            p.grad = None

    def _adapted_width(self, st: dict[str, Any]) -> Tensor:
        """Per coordinate: ``s_i sqrt(n Sigma_ii)`` with the basis the next ask will use
        (the buffer as it is: a ``.grad`` given before that ask is not counted yet)."""
        U = self.basis(st)
        k = U.shape[1]
        alpha = self.alpha if k else 1.0
        diag = torch.full((self.num_params,), alpha, dtype=torch.float64)
        if k:
            diag += self.num_params * (1 - alpha) / k * (U.to(torch.float64) ** 2).sum(1)
        return self.group_vector("sigma", torch.float64) * diag.sqrt()
