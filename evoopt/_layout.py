"""The flat search vector and a generation's members: :class:`ParamLayout` maps a list of
parameter tensors to one vector of ``D`` numbers, :class:`Population` holds ``P`` such
vectors, :class:`Generation` records what the last ``tell`` saw."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Generation", "ParamLayout", "Population"]


def _numpy_ok(t: Tensor) -> bool:
    """A CPU tensor whose dtype numpy has: a numpy view skips torch's dispatch (which costs
    10-25 us per small op right after an algorithm's numpy work, e.g. pycma's)."""
    return t.is_cpu and t.dtype in (torch.float32, torch.float64, torch.float16)  # is_cpu: no
    # torch.device object (t.device.type costs a few microseconds there)


class ParamLayout:
    """The map between a list of parameter tensors and one flat vector of ``D`` numbers."""

    def __init__(self, params: list[Tensor], names: list[str] | None = None):
        self.params = list(params)
        self.names = names if names is not None else [str(i) for i in range(len(self.params))]
        self.shapes = [tuple(p.shape) for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.num_params = self.offsets[-1]

    def flatten(self, tensors: Iterable[Tensor] | None = None) -> Tensor:
        """Concatenate ``tensors`` (default: the parameters) into one detached [D] vector."""
        tensors = self.params if tensors is None else tensors
        return torch.cat([t.detach().reshape(-1) for t in tensors])

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        """Split ``flat`` of shape [..., D] into views of shape [..., *param_shape]."""
        lead = tuple(flat.shape[:-1])
        return [  # tuple shapes: a 0-dim parameter (a learnable scalar) has shape ()
            flat[..., a:b].reshape(lead + shape)
            for a, b, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes)
        ]

    def load_(self, flat: Tensor) -> None:
        """Copy the [D] vector ``flat`` into the parameters in place (never rebinds them)."""
        if len(self.params) == 1:  # the common black-box case: skip the split
            dst, src = self._param_view(), self.numpy_view(flat)
            if dst is not None and src is not None and dst.dtype == src.dtype:
                np.copyto(dst, src)  # in place, no torch dispatch
                return
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.load_(flat)
        if len(self.params) == 1:
            self.params[0].copy_(flat.view(self.shapes[0]))
            return
        for p, v in zip(self.params, self.unflatten(flat)):
            p.copy_(v)

    # numpy views for load_, kept between calls: ``Tensor.numpy()`` costs ~10 us right
    # after an algorithm's numpy work (pycma), a ``data_ptr`` check a fraction of that
    _dst: tuple | None = None
    _src: tuple | None = None

    def __getstate__(self) -> dict:
        """Without the numpy views (a copy's tensors live elsewhere; an address that
        happened to match would write a stale array)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_dst", "_src")}

    def _param_view(self) -> np.ndarray | None:
        """A flat numpy view of the single parameter, None where numpy cannot write it;
        made again whenever the parameter's storage changes (``p.data = ...``)."""
        p = self.params[0]
        if not p.is_contiguous():
            return None
        ptr, cached = p.data_ptr(), self._dst
        if cached is None or cached[0] != ptr:
            view = p.detach().numpy().reshape(-1) if _numpy_ok(p) else None
            cached = self._dst = (ptr, view)
        return cached[1]

    def numpy_view(self, flat: Tensor) -> np.ndarray | None:
        """A flat numpy view of ``flat`` (None where numpy has no such tensor), kept while
        ``flat`` is the same tensor over the same storage (the state's ``mean``, which
        :meth:`load_` reads and CMA-ES writes every generation)."""
        cached = self._src
        if cached is None or cached[0] is not flat or cached[1] != flat.data_ptr():
            view = flat.detach().numpy().reshape(-1) if _numpy_ok(flat) else None
            cached = self._src = (flat, flat.data_ptr(), view)
        return cached[2]

    def member_loader(self, flat: Tensor) -> Callable[[int], None]:
        """A function ``load(i)`` that copies row ``i`` of the [P, D] ``flat`` into the
        parameters in place, as :meth:`load_` does. The checks run once here, not per
        member: with CPU parameters numpy has, each row is copied through numpy views
        (no torch dispatch). Valid while the parameters are not rebound."""
        ps = self.params
        if (_numpy_ok(flat) and not flat.requires_grad and flat.is_contiguous()
                and all(_numpy_ok(p) and p.dtype == flat.dtype and p.is_contiguous() for p in ps)):
            rows = flat.numpy()
            if len(ps) == 1:
                dst = ps[0].data.numpy().reshape(-1)
                return lambda i: np.copyto(dst, rows[i])
            views = [(p.data.numpy().reshape(-1), a, b)
                     for p, a, b in zip(ps, self.offsets[:-1], self.offsets[1:])]

            def load(i: int) -> None:
                row = rows[i]
                for dst, a, b in views:
                    np.copyto(dst, row[a:b])

            return load
        return lambda i: self.load_(flat[i])


@dataclass
class Population:
    """One generation's members.

    ``flat`` is a [P, D] tensor; :meth:`tensors` splits it per parameter ([P, *shape]),
    :meth:`params` returns ``{name: [P, *shape]}`` (names from ``named_parameters()``
    when the optimizer was built from them, else the parameter's index), and
    ``layout.params`` holds the parameter tensors themselves, so an evaluator can match
    them to a module's by identity.
    """

    flat: Tensor
    layout: ParamLayout

    def __len__(self) -> int:
        return self.flat.shape[0]

    @property
    def popsize(self) -> int:
        return self.flat.shape[0]

    def tensors(self) -> list[Tensor]:
        return self.layout.unflatten(self.flat)

    def params(self) -> dict[str, Tensor]:
        return dict(zip(self.layout.names, self.tensors()))

    def member(self, i: int) -> list[Tensor]:
        return self.layout.unflatten(self.flat[i])


    def row(self, i: int) -> Tensor:
        """Member ``i`` as a flat [D] vector (a view of ``flat``). A population that holds
        its members in another form (factored noise, say) overrides this and
        :attr:`flat`; the base optimizer reads members only through the two."""
        return self.flat[i]


@dataclass
class Generation:
    """What the last ``tell`` saw, in the user's sign (losses as given).

    ``losses``: [P] (non-finite values kept as given); ``mean_loss``: mean of the finite
    losses; ``best_loss``/``best_index``: the best member of this generation.
    """

    generation: int
    losses: Tensor
    mean_loss: float
    best_loss: float
    best_index: int
    num_evals: int
    num_nonfinite: int



def is_searched(p: Tensor) -> bool:
    """False for a frozen parameter: an ``nn.Parameter`` with ``requires_grad=False``."""
    return p.requires_grad or not isinstance(p, torch.nn.Parameter)


@dataclass
class SearchVector:
    """What :func:`search_vector` finds in an optimizer's groups: the layout of the searched
    parameters, those parameters per group, every parameter's searched flag (in group
    order) and each group's coordinate slice ``[a, b)`` of the flat vector."""

    layout: ParamLayout
    searched: list[list[Tensor]]
    flags: list[bool]
    group_slices: list[tuple[int, int]]


def search_vector(param_groups: list[dict]) -> SearchVector:
    """The search vector of ``param_groups``: every parameter of every group but the frozen
    ones, in order; all on one device with one floating dtype, each tensor once.
    Raises ``ValueError`` naming the parameter otherwise."""
    params, names, searched, flags = [], [], [], []
    count = 0
    for g in param_groups:
        gnames = g.get("param_names")
        searched.append([])
        for pi, p in enumerate(g["params"]):
            name = gnames[pi] if gnames else str(count)
            count += 1
            flags.append(is_searched(p))
            if flags[-1]:
                params.append(p)
                names.append(name)
                searched[-1].append(p)
    if not params and count:
        raise ValueError(
            f"optimizer got no parameter to search: all {count} are nn.Parameters with "
            "requires_grad=False (frozen parameters are left alone, as torch's optimizers "
            "leave them)"
        )
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    _check_params(params, names)
    slices, a = [], 0
    for group_params in searched:
        b = a + sum(p.numel() for p in group_params)
        slices.append((a, b))
        a = b
    return SearchVector(ParamLayout(params, names), searched, flags, slices)


def _check_params(params: list[Tensor], names: list[str]) -> None:
    seen: dict[int, str] = {}
    for n, p in zip(names, params):
        if id(p) in seen:  # torch refuses it across groups; within a group D would double
            raise ValueError(
                f"Invalid parameter {n!r}: the same tensor as parameter {seen[id(p)]!r} "
                "(some parameters appear more than once in the optimizer's groups; "
                "expected each parameter once)"
            )
        seen[id(p)] = n
    dev, dt = params[0].device, params[0].dtype
    for n, p in zip(names, params):
        if p.device.type == "meta":
            raise ValueError(
                f"Invalid parameter {n!r}: on the meta device (no values to search from; "
                "materialise the model first, e.g. model.to_empty(device='cpu') and "
                "initialise it, or build it without device='meta')"
            )
        if not p.is_floating_point():
            raise ValueError(
                f"Invalid parameter {n!r}: dtype {p.dtype} (expected a floating point dtype)"
            )
        if p.device != dev or p.dtype != dt:
            raise ValueError(
                f"Invalid parameter {n!r}: {p.dtype} on {p.device}, but the first parameter "
                f"is {dt} on {dev} (expected all parameters on one device with one dtype)"
            )
