"""The param groups of a population optimizer (a mixin of
:class:`~evoopt.population.PopulationOptimizer`): the search vector they make up (the
layout, fixed at construction, and groups added later) and the hyperparameters read from
them, per coordinate of the search vector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._layout import is_searched, search_vector
from ._state import STATE_KEY


def _rms(v: Tensor) -> float:
    """Root-mean-square of a tensor's entries, as a float."""
    v = v.detach().to(torch.float64)
    return float(torch.sqrt(torch.mean(v * v)))


class GroupMixin:
    """The search vector of the groups, their hyperparameters as numbers or [D] vectors,
    and the search width."""

    def _build_layout(self) -> None:
        """The search vector: every parameter of every group but the frozen ones, in
        order. A frozen parameter (an ``nn.Parameter`` with ``requires_grad=False``) is left
        out and never written, as torch's optimizers leave it alone; a plain tensor is
        always searched (tensors default to ``requires_grad=False``: a black-box vector).
        The set is fixed here (see :meth:`ask`)."""
        sv = search_vector(self.param_groups)
        self.layout = sv.layout
        self._device, self._dtype = sv.layout.params[0].device, sv.layout.params[0].dtype
        self._on_cpu = self._device.type == "cpu"  # (cached: read every generation)
        self._cpu_float64 = self._on_cpu and self._dtype == torch.float64
        self._searched, self._requires_grad = sv.searched, sv.flags
        self._group_slices = sv.group_slices  # coordinate slice [a, b) of each group

    def _check_frozen_unchanged(self) -> None:
        """The search vector is fixed when the optimizer is built: a parameter frozen or
        unfrozen since then would be written against the user's intent or never searched."""
        flags = [is_searched(p) for g in self.param_groups for p in g["params"]]
        if flags == self._requires_grad:
            return
        params = [p for g in self.param_groups for p in g["params"]]
        i = next(i for i, (a, b) in enumerate(zip(flags, self._requires_grad)) if a != b)
        names = [n for g in self.param_groups for n in (g.get("param_names") or [])]
        name = names[i] if names else str(i)
        change = ("frozen (requires_grad=False)" if not flags[i]
                  else "unfrozen (requires_grad=True)")
        raise ValueError(
            f"Invalid parameter {name!r} (shape {tuple(params[i].shape)}): {change} after "
            f"{type(self).__name__} was built; the search vector is fixed at construction. "
            "Restore requires_grad, or build a new optimizer over the parameters to search"
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        built = self.layout is not None
        if built and self.state.get(STATE_KEY):
            raise ValueError(
                f"{type(self).__name__}: cannot add a param group after the first generation "
                "(the search distribution is already built); add all groups before stepping"
            )
        self._check_group({**self.defaults, **param_group}, initial=True)  # before adding
        super().add_param_group(param_group)
        if not built:
            return
        try:
            self._build_layout()
            self._group_added()
        except ValueError:  # refused (dtype, device, size...): leave the optimizer as it was
            self.param_groups.pop()
            self._build_layout()
            raise
        self.popsize = self.initial_popsize = self._resolve_popsize()  # D grew

    @property
    def num_params(self) -> int:
        """D, the length of the flat search vector."""
        return self.layout.num_params

    # ------------------------------------------------------- group hyperparameters

    def group_values(self, key: str | Callable[[dict[str, Any]], float]) -> float | Tensor:
        """A hyperparameter read from the groups now: a float when all groups agree, else a
        [D] tensor with each group's value on its coordinates. ``key`` is a group key or a
        function of the group (for values derived from several keys)."""
        vals = [float(key(g)) if callable(key) else g[key] for g in self.param_groups]
        if all(v == vals[0] for v in vals):
            return float(vals[0])
        out = torch.empty(self.num_params, device=self._device, dtype=self._dtype)
        for v, (a, b) in zip(vals, self._group_slices):
            out[a:b] = v
        return out

    def group_vector(self, key: str, dtype: torch.dtype | None = None) -> Tensor:
        """Like :meth:`group_values`, always as a fresh [D] tensor (``dtype`` default: the
        parameters')."""
        v = self.group_values(key)
        dtype = dtype or self._dtype
        return torch.as_tensor(v, device=self._device, dtype=dtype).expand(self.num_params).clone()

    def sigma_ratio(self, st: dict[str, Any], dtype: torch.dtype | None = None) -> Tensor | None:
        """For algorithms that adapt the search width themselves, ``group["sigma"]`` is the
        initial width and a later change to it (a scheduler, the user) rescales what was
        learned by new/old. Returns that [D] ratio and records the new values in
        ``st["sigma_group"]``, or returns ``None`` when no group's sigma changed."""
        new = self.group_vector("sigma", dtype)
        old = st.get("sigma_group")
        if old is None:
            st["sigma_group"] = new
            return None
        if torch.equal(new, old):
            return None
        st["sigma_group"] = new
        return new / old

    def noise_buffer(self, rows: int) -> Tensor:
        """A [rows, D] buffer kept between generations, to draw noise into with
        ``out=`` (a fresh P x D tensor page-faults every generation: about a third of the
        sampling time at large D). Valid until the next call."""
        buf = getattr(self, "_noise_buf", None)
        if buf is None or buf.shape != (rows, self.num_params):
            buf = torch.empty(rows, self.num_params, device=self._device, dtype=self._dtype)
            self._noise_buf = buf
        return buf

    @property
    def current_sigma(self) -> float:
        r"""The search width the next generation samples with, as one number in parameter
        units: the root-mean-square of the per-coordinate standard deviations,
        ``sqrt(mean_i std_i**2)``. Without an adapted width (:meth:`_adapted_width`) it is
        the groups' ``sigma`` (weighted by each group's number of coordinates); an adapted
        one is rescaled by a pending change of the groups' ``sigma``."""
        st = self.state.get(STATE_KEY)
        width = self._adapted_width(st) if st else None
        if width is None:
            return _rms(self._group_sigma_vector())
        return _rms(self._scheduled(st, width))

    def _adapted_width(self, st: dict[str, Any]) -> Tensor | None:
        """Hook: the [D] per-coordinate standard deviations the algorithm has adapted (in
        the groups' current scale), or None when the width is the groups' ``sigma``."""
        return None

    def _group_sigma_vector(self) -> Tensor:
        """[D] float64: each coordinate's group ``sigma`` (as read now)."""
        return self.group_vector("sigma", torch.float64)

    def _scheduled(self, st: dict[str, Any], width: Tensor) -> Tensor:
        """``width`` ([D], learned) rescaled by a pending change of the groups' ``sigma``
        (``new / old``, as :meth:`sigma_ratio` applies it at the next ask), without
        recording anything."""
        old = st.get("sigma_group")
        if old is None:
            return width
        return width.to(torch.float64) * (self._group_sigma_vector() / old.to(torch.float64))
