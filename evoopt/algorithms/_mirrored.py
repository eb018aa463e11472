"""Mirrored (antithetic) sampling shared by OpenAI-ES and PGPE, written for large D.

The members are ``[mean + scale * eps ; mean - scale * eps]`` (first half +, second half
-), so only the half noise ``eps`` [P/2, D] is drawn and kept until ``tell``.

Memory traffic, not arithmetic, is the cost at large D: on CPU, touching freshly
allocated pages costs about as much as drawing the noise. So the noise buffer is
private and reused, and the [P, D] population tensor is recycled from a pool of at most
two buffers -- but only a buffer that nothing outside the pool uses any more: callers
get views of the pool's buffers, so the storage's use count (``torch._C`` private API,
read-only) sees every population, member row or slice still alive. A population the
caller still holds (``pop = opt.ask()`` in a loop keeps the previous one alive during
the next ``ask``) is never overwritten; with the second buffer such loops recycle too.
Where the use count cannot be read, a fresh tensor is allocated every time. The cost:
up to two idle population buffers stay allocated between generations
(:meth:`MirroredSampler.clear` drops them).
"""

from __future__ import annotations

import torch
from torch import Tensor

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _unshared(buf: Tensor) -> bool:
    """True when no tensor but ``buf`` uses its storage. The pool hands out views of its
    buffers, never the buffers themselves, so every population, member or slice a caller
    still holds counts here."""
    if _use_count is None:
        return False
    # ``buf`` itself + the temporary Python storage object made by untyped_storage()
    return _use_count(buf.untyped_storage()._cdata) <= 2


class MirroredSampler:
    """Draws the half noise and builds the mirrored population with recycled buffers."""

    def __init__(self, pool_size: int = 2):
        self.eps: Tensor | None = None
        self._pool: list[Tensor] = []
        self._pool_size = pool_size

    def draw(self, H: int, D: int, like: Tensor, gen: torch.Generator) -> Tensor:
        """Standard normal [H, D] noise from ``gen`` into the private buffer (``self.eps``)."""
        eps = self.eps
        if (
            eps is None
            or eps.shape != (H, D)
            or eps.dtype != like.dtype
            or eps.device != like.device
        ):
            eps = self.eps = torch.empty(H, D, device=like.device, dtype=like.dtype)
        return torch.randn(H, D, generator=gen, out=eps)

    def _population_buffer(self, P: int, D: int, like: Tensor) -> Tensor:
        for buf in self._pool:
            if (
                buf.shape == (P, D)
                and buf.dtype == like.dtype
                and buf.device == like.device
                and _unshared(buf)
            ):
                return buf.view(P, D)
        buf = torch.empty(P, D, device=like.device, dtype=like.dtype)
        self._pool.append(buf)
        if len(self._pool) > self._pool_size:
            self._pool.pop(0)  # forget the oldest; whoever holds it keeps it
        return buf.view(P, D)

    def members(self, mean: Tensor, scale: float | Tensor) -> Tensor:
        """``[mean + scale * eps ; mean - scale * eps]`` ([P, D]), in two fused passes;
        ``scale`` is a float or a [D] tensor."""
        eps = self.eps
        H, D = eps.shape
        flat = self._population_buffer(2 * H, D, eps)
        if isinstance(scale, Tensor):
            torch.addcmul(mean, eps, scale, value=1.0, out=flat[:H])
            torch.addcmul(mean, eps, scale, value=-1.0, out=flat[H:])
        else:
            torch.add(mean, eps, alpha=scale, out=flat[:H])
            torch.add(mean, eps, alpha=-scale, out=flat[H:])
        return flat

    def clear(self) -> None:
        """Drop the cached buffers (they are rebuilt on the next generation)."""
        self.eps = None
        self._pool.clear()
