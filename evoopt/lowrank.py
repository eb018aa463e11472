r"""Low-rank evolution strategies for large models (EGGROLL): factored populations whose
noise is regenerated from ``(seed, generation, member)`` and never stored densely.

Reference: Sarkar, Fellows, Duque et al., "Evolution Strategies at the Hyperscale"
(EGGROLL: Evolution Guided GeneRal Optimisation via Low-rank Learning), 2025,
https://arxiv.org/abs/2511.16652 (the low-rank perturbation ``A B^T / sqrt(r)`` and its
population update; the maths is written out below in this module's names -- the paper's
equation numbers could not be checked here, so none are quoted), and Qiu et al.,
"Evolution Strategies at Scale: LLM Fine-Tuning Beyond Reinforcement Learning", 2025,
https://arxiv.org/abs/2509.24372 (noise regenerated from seeds instead of stored).

Perturbations. Every parameter of two or more dimensions ``W`` (``m x n``; a convolution
kernel ``[out, in, *k]`` is viewed as ``[out, in * prod(k)]``) gets, for member ``i``,
factors ``A_i [m, r]`` and ``B_i [n, r]`` with i.i.d. standard normal entries, and the
perturbation::

    E_i = A_i @ B_i.T / sqrt(r)          (r = min(rank, m, n) for this matrix)

Every entry of ``E_i`` has mean 0 and variance 1 and distinct entries are uncorrelated,
``Cov(vec E_i) = I`` (the ``1 / sqrt(r)`` scaling of EGGROLL's perturbation: entry
``(j, k)`` is ``sum_l A_jl B_kl / sqrt(r)``, a sum of ``r`` independent unit-variance
products), so ``E_i`` has the first two moments of the dense Gaussian noise of
OpenAI-ES; it tends to it as ``r`` grows (central limit). Parameters of fewer than two
dimensions (biases, norms' gains) get ordinary dense Gaussian noise ``e_i``. Member ``i``
is ``mean + sigma * eps_i`` with ``eps_i = (E_i for every matrix, e_i for the rest)``.
Sampling is mirrored: member ``i + P/2`` is ``mean - sigma * eps_i``.

Estimator. With shaped losses ``s`` and ``w_h = s_h - s_{h + P/2}`` (``H = P / 2`` pairs),
the OpenAI-ES estimate of the smoothed loss's gradient is, for a matrix ``W``::

    g_W = 1 / (P sigma) * sum_i s_i eps_i = 1 / (P sigma sqrt(r)) * sum_h w_h A_h B_h^T
        = 1 / (P sigma sqrt(r)) * A^T diag(w) B      (A: [H, m, r] and B: [H, n, r] seen
                                                      as [m, H r] and [n, H r]: ONE GEMM)

(EGGROLL's population update, with its ``1 / sqrt(r)`` scaling; the sum of ``H``
rank-``r`` terms has rank up to ``min(H r, m, n)``), and ``g_b = w @ e / (P sigma)``
for the other parameters. Cost: ``O(m n H r)`` flops and no ``[P, D]`` tensor; the
population itself is ``H * sum(r (m + n)) + H * d_small`` numbers.

Noise from seeds. Member pair ``h``'s noise (all its factors and small-parameter noise, one
row of ``K`` numbers) is drawn from a :class:`torch.Generator` seeded with
:func:`member_seed` ``(seed, generation, h)``, so a checkpoint holds no noise, a resumed run
redraws the same members, and any process can rebuild member ``i``
(:func:`member_noise`) from three integers.

Memory and materialising. :class:`FactoredPopulation` is a :class:`~evoopt.Population`:
``pop.flat`` and ``pop.params()`` still work but build the dense ``[P, D]`` members
(``P * D`` numbers: 51 GB for ``P = 256, D = 5e7`` in float32; refused above
:attr:`FactoredPopulation.materialize_limit` bytes); :meth:`FactoredPopulation.chunks` yields
them a few rows at a time and :meth:`FactoredPopulation.row` one member. The batched
objectives (:func:`evoopt.vmap_objective`, :func:`evoopt.batched_forward`) use the factors
instead (``evoopt/_fastpath.py``, :func:`factored_forward`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .population import ParamLayout, Population

__all__ = ["FactoredPopulation", "LowRankPlan", "factored_gradient", "member_noise",
           "member_seed", "sample_factored"]


def member_seed(seed: int, generation: int, member: int) -> int:
    """A 63-bit generator seed from ``(seed, generation, member)`` (BLAKE2b of the three:
    nearby triples give unrelated streams)."""
    key = f"{int(seed)}:{int(generation)}:{int(member)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class _Matrix:
    index: int  # parameter index in the layout
    m: int
    n: int
    r: int
    a_off: int  # offset of A (m * r numbers) in a noise row; B follows (n * r)


@dataclass(frozen=True)
class _Small:
    index: int
    off: int  # offset of its dense noise in a noise row
    numel: int


class LowRankPlan:
    """Where each parameter's noise lives in a member pair's row of ``K`` numbers.

    A parameter with ``dim >= 2`` is a matrix ``[shape[0], prod(shape[1:])]`` with rank
    ``min(rank, m, n)``; the others take dense noise. Raises ``ValueError`` when no
    parameter is a matrix (low rank has nothing to factor)."""

    def __init__(self, layout: ParamLayout, rank: int):
        self.layout, self.rank = layout, rank
        self.matrices: list[_Matrix] = []
        self.small: list[_Small] = []
        k = 0
        for i, shape in enumerate(layout.shapes):
            if len(shape) >= 2:
                m, n = shape[0], math.prod(shape[1:])
                r = min(rank, m, n)
                self.matrices.append(_Matrix(i, m, n, r, k))
                k += (m + n) * r
            else:
                self.small.append(_Small(i, k, layout.numels[i]))
                k += layout.numels[i]
        if not self.matrices:
            shapes = [list(s) for s in layout.shapes]
            raise ValueError(
                f"Invalid rank: {rank} (low-rank sampling factors parameters of two or more "
                f"dimensions, and these parameters have shapes {shapes}: use rank=None)"
            )
        self.num_noise = k
        self.by_index = {mx.index: mx for mx in self.matrices}
        self.by_index.update({s.index: s for s in self.small})


def member_noise(plan: LowRankPlan, seed: int, generation: int, member: int, *,
                 device=None, dtype=torch.float32, out: Tensor | None = None) -> Tensor:
    """The ``[K]`` noise row of member pair ``member`` (members ``member`` and
    ``member + P/2``) of ``generation``: the same numbers on every call and in every
    process with the same device type."""
    gen = torch.Generator(device=device or "cpu")
    gen.manual_seed(member_seed(seed, generation, member))
    if out is None:
        return torch.randn(plan.num_noise, generator=gen, device=device, dtype=dtype)
    return torch.randn(plan.num_noise, generator=gen, out=out)


class FactoredPopulation(Population):
    """A mirrored generation held as factors: see the module docstring.

    Attributes: ``layout``, ``plan`` (:class:`LowRankPlan`), ``center`` ([D]),
    ``sigmas`` (one float per parameter), ``noise`` ([P/2, K]: pair ``h``'s row), ``seed``,
    ``generation``. Member ``i < P/2`` is ``center + sigma * eps_i``, member ``i + P/2`` is
    ``center - sigma * eps_i``.
    """

    #: bytes above which :attr:`flat` refuses to build the dense members (use
    #: :meth:`chunks`, :meth:`row` or an objective that uses the factors)
    materialize_limit: int = 4 << 30

    def __init__(self, layout: ParamLayout, plan: LowRankPlan, center: Tensor,
                 sigmas: list[float], noise: Tensor, *, seed: int, generation: int):
        self.layout, self.plan, self.center, self.sigmas = layout, plan, center, list(sigmas)
        self.noise, self.seed, self.generation = noise, seed, generation
        self.half = noise.shape[0]

    def __len__(self) -> int:
        return 2 * self.half

    @property
    def popsize(self) -> int:
        return 2 * self.half

    def __repr__(self) -> str:
        return (f"FactoredPopulation(popsize={self.popsize}, num_params={self.layout.num_params}, "
                f"rank={self.plan.rank}, generation={self.generation})")

    # ----------------------------------------------------------------- factors
    def factors(self, index: int, members=None) -> tuple[Tensor, Tensor, float]:
        """``(A, B, scale)`` of parameter ``index`` (a matrix) for the members ``members``
        (default all ``P``; a slice or index tensor): ``A [c, m, r]`` already multiplied
        by the member's ``+-sigma / sqrt(r)``, and ``B [c, n, r]``, so member ``i``'s
        perturbation is ``A[i] @ B[i].T``. ``scale`` is ``sigma / sqrt(r)``."""
        mx = self.plan.by_index[index]
        H, row = self.half, self.noise
        A = row[:, mx.a_off:mx.a_off + mx.m * mx.r].view(H, mx.m, mx.r)
        B = row[:, mx.a_off + mx.m * mx.r:mx.a_off + (mx.m + mx.n) * mx.r].view(H, mx.n, mx.r)
        pair, sign = self._pairs(members)
        scale = self.sigmas[index] / math.sqrt(mx.r)
        return A[pair] * (sign * scale).view(-1, 1, 1), B[pair], scale

    def small_noise(self, index: int, members=None) -> Tensor:
        """``[c, numel]``: the members' (signed, sigma-scaled) perturbation of parameter
        ``index`` (a parameter with dense noise)."""
        s = self.plan.by_index[index]
        pair, sign = self._pairs(members)
        e = self.noise[:, s.off:s.off + s.numel][pair]
        return e * (sign * self.sigmas[index]).view(-1, 1)

    def _pairs(self, members) -> tuple[Tensor, Tensor]:
        """Pair index and sign (``+1`` first half, ``-1`` second) of the members."""
        idx = torch.arange(self.popsize, device=self.noise.device)
        if members is not None:
            idx = idx[members]
        sign = 1.0 - 2.0 * (idx >= self.half).to(self.noise.dtype)
        return idx % self.half, sign

    # ------------------------------------------------------------ materialising
    def rows(self, members) -> Tensor:
        """The dense members ``members`` (a slice or index tensor): ``[c, D]``."""
        c = len(self._pairs(members)[0])
        out = self.center.expand(c, -1).clone()
        for i, v in enumerate(self.layout.unflatten(out)):
            if isinstance(self.plan.by_index[i], _Matrix):
                A, B, _ = self.factors(i, members)
                v.view(v.shape[0], A.shape[1], -1).baddbmm_(A, B.transpose(1, 2))
            else:
                v.view(v.shape[0], -1).add_(self.small_noise(i, members))
        return out

    def row(self, i: int) -> Tensor:
        """Member ``i`` as a dense ``[D]`` vector (``D`` numbers, ``O(D r)`` work)."""
        return self.rows(slice(i, i + 1))[0]

    def chunks(self, size: int) -> Iterator[tuple[int, Tensor]]:
        """``(start, rows)`` for consecutive blocks of at most ``size`` members, each
        ``[c, D]`` (peak ``size * D`` numbers instead of ``P * D``)."""
        for a in range(0, self.popsize, size):
            yield a, self.rows(slice(a, min(a + size, self.popsize)))

    @property
    def flat(self) -> Tensor:
        """All members as a dense ``[P, D]`` tensor: ``P * D`` numbers, built on every
        access. Refused with a ``ValueError`` above :attr:`materialize_limit` bytes."""
        size = self.popsize * self.layout.num_params * self.center.element_size()
        if size > self.materialize_limit:
            raise ValueError(
                f"Invalid use of a factored population: pop.flat would materialise "
                f"{self.popsize} x {self.layout.num_params} numbers ({size / 2**30:.1f} GiB, "
                f"above FactoredPopulation.materialize_limit = {self.materialize_limit / 2**30:.1f}"
                " GiB); evaluate it with evoopt.vmap_objective / evoopt.batched_forward, which "
                "use the factors, or iterate over pop.chunks(n) / pop.row(i)"
            )
        return self.rows(slice(None))

    def member(self, i: int) -> list[Tensor]:
        return self.layout.unflatten(self.row(i))


def draw_noise(plan: LowRankPlan, seed: int, generation: int, half: int, like: Tensor,
               out: Tensor | None = None) -> Tensor:
    """``[half, K]``: every member pair's noise row (:func:`member_noise`), into ``out``
    when it has the right shape, dtype and device."""
    if out is None or out.shape != (half, plan.num_noise) or out.dtype != like.dtype \
            or out.device != like.device:
        out = torch.empty(half, plan.num_noise, device=like.device, dtype=like.dtype)
    for h in range(half):
        member_noise(plan, seed, generation, h, device=like.device, out=out[h])
    return out


def sample_factored(plan: LowRankPlan, center: Tensor, sigmas: list[float], popsize: int,
                    seed: int, generation: int, out: Tensor | None = None) -> FactoredPopulation:
    """A mirrored :class:`FactoredPopulation` of ``popsize`` members around ``center``."""
    noise = draw_noise(plan, seed, generation, popsize // 2, center, out)
    return FactoredPopulation(plan.layout, plan, center, sigmas, noise, seed=seed,
                              generation=generation)


def factored_gradient(pop: FactoredPopulation, w: Tensor) -> Tensor:
    r"""``[D]``: ``sum_h w_h eps_h / (P sigma)`` per parameter, formed from the factors (one
    GEMM per matrix, see the module docstring); ``w`` ([P/2]) are the mirrored pairs'
    shaped-loss differences ``s_h - s_{h+P/2}``. Half-precision parameters accumulate in
    float32."""
    plan, H, P = pop.plan, pop.half, pop.popsize
    dtype = pop.center.dtype
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    w = w.to(device=pop.noise.device, dtype=acc)
    grad = torch.empty(pop.layout.num_params, device=pop.center.device, dtype=dtype)
    views = pop.layout.unflatten(grad)
    for mx in plan.matrices:  # the scale rides on w: the GEMM writes the final numbers
        ws = (w / (P * pop.sigmas[mx.index] * math.sqrt(mx.r))).view(H, 1, 1)
        a = pop.noise[:, mx.a_off:mx.a_off + mx.m * mx.r].view(H, mx.m, mx.r)
        b = pop.noise[:, mx.a_off + mx.m * mx.r:mx.a_off + (mx.m + mx.n) * mx.r]
        aw = (a.to(acc) * ws).permute(1, 0, 2).reshape(mx.m, H * mx.r)
        bt = b.view(H, mx.n, mx.r).to(acc).permute(0, 2, 1).reshape(H * mx.r, mx.n)
        out = views[mx.index].view(mx.m, mx.n)
        if acc == dtype:
            torch.mm(aw, bt, out=out)  # [m, n] = A^T diag(w) B, into the gradient itself
        else:
            out.copy_(aw @ bt)
    for s in plan.small:
        e = pop.noise[:, s.off:s.off + s.numel].to(acc)
        views[s.index].copy_((w @ e / (P * pop.sigmas[s.index])).view(views[s.index].shape))
    return grad
