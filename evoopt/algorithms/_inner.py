"""Shared by OpenAI-ES and PGPE: an ES gradient estimate is written into ``p.grad`` of the
optimizer's own parameters and applied by an *inner* torch optimizer (Adam, SGD, ClipUp,
...). Estimating the gradient is the algorithm's job; applying it is this mixin's.

- The inner optimizer has one param group per outer group, over the same tensors. The
  outer group's ``lr`` is copied into its inner group before every inner step, so an
  ``lr_scheduler`` on the *outer* optimizer drives the step size.
- The inner optimizer's ``state_dict`` is nested in the outer state_dict's ``"evoopt"``
  entry (keys ``"inner"`` and ``"inner_class"``) next to the RNG state, outside the
  per-parameter state, so nothing in it is cast or rebuilt by the outer load and
  ``torch.load(weights_only=True)`` restores it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .._state import META_KEY, clone_tree
from ..population import PopulationOptimizer


#: Per-parameter state entries of torch's optimizers (and ClipUp) that have the parameter's
#: shape; a checkpoint's entries under these keys are checked against it.
_PARAM_SHAPED = frozenset({
    "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "exp_inf", "momentum_buffer", "velocity",
    "sum", "square_avg", "acc_delta", "grad_avg", "prev", "step_size", "ax",
})


def _needs_closure(opt: Optimizer) -> bool:
    """True when ``opt.step`` has a required ``closure`` argument (LBFGS)."""
    try:
        params = inspect.signature(type(opt).step).parameters
    except (TypeError, ValueError):
        return False
    closure = params.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


class InnerOptimizerMixin:
    """Mixin for a :class:`PopulationOptimizer` whose center moves by an inner optimizer."""

    _inner: Optimizer | None = None

    def _build_inner(self, optimizer) -> None:
        # over the searched parameters only: frozen ones are not touched, even with a grad
        groups = [{"params": ps, "lr": g["lr"]} for g, ps in zip(self.param_groups, self._searched)]
        what = "a torch.optim.Optimizer class or a callable(params) -> Optimizer"
        if isinstance(optimizer, type):
            if not issubclass(optimizer, Optimizer) or issubclass(optimizer, PopulationOptimizer):
                raise ValueError(
                    f"Invalid optimizer: {optimizer!r} "
                    f"(expected {what}, not a population optimizer)"
                )
        elif not callable(optimizer):
            raise ValueError(f"Invalid optimizer: {optimizer!r} (expected {what})")
        inner = optimizer(groups)
        if not isinstance(inner, Optimizer) or isinstance(inner, PopulationOptimizer):
            raise ValueError(
                f"Invalid optimizer: the factory returned {type(inner).__name__} "
                "(expected a gradient "
                "torch.optim.Optimizer)"
            )
        if _needs_closure(inner):
            raise ValueError(
                f"Invalid optimizer: {type(inner).__name__} needs a closure at every step (it "
                "re-evaluates the loss, e.g. LBFGS's line search); the inner optimizer only "
                "receives a gradient estimate in p.grad: use one that steps without a closure "
                "(Adam, SGD, evoopt.ClipUp, ...)"
            )
        outer_ids = [[id(p) for p in ps] for ps in self._searched]
        inner_ids = [[id(p) for p in g["params"]] for g in inner.param_groups]
        if outer_ids != inner_ids:
            raise ValueError(
                "Invalid optimizer: the inner optimizer must have one param group per outer group, "
                "over the same parameters in the same order (build it from the params it is given)"
            )
        for g in inner.param_groups:
            if g.get("maximize", False):
                raise ValueError(
                    "Invalid optimizer: the inner optimizer has maximize=True; it receives the "
                    "gradient of the loss to minimise (set maximize on the outer optimizer instead)"
                )
        self._inner = inner

    @property
    def inner_optimizer(self) -> Optimizer:
        """The torch optimizer that applies the gradient estimate to the center."""
        return self._inner

    def _group_added(self) -> None:
        super()._group_added()
        if self._inner is not None:
            g = self.param_groups[-1]
            self._inner.add_param_group({"params": self._searched[-1], "lr": g["lr"]})

    @torch.no_grad()
    def _apply_gradient(self, st: dict[str, Any], grad: Tensor) -> None:
        """Put the center into the parameters, write ``grad`` ([D], of the loss to minimise)
        into ``p.grad``, run one inner step with the outer groups' ``lr``, and store the new
        center in ``st["mean"]``."""
        self.layout.load_(st["mean"])
        for p, g in zip(self.layout.params, self.layout.unflatten(grad)):
            p.grad = g
        for outer, inner in zip(self.param_groups, self._inner.param_groups):
            inner["lr"] = outer["lr"]
        self._inner.step()
        st["mean"] = self.layout.flatten()

    # -------------------------------------------------------------- state_dict
    def _meta(self) -> dict[str, Any]:
        meta = super()._meta()
        meta["inner_class"] = type(self._inner).__name__
        meta["inner"] = clone_tree(self._inner.state_dict())
        return meta

    def _check_checkpoint(self, state_dict) -> None:
        meta = state_dict.get(META_KEY) if isinstance(state_dict, dict) else None
        same_shapes = (isinstance(meta, dict)
                       and meta.get("shapes") == [list(s) for s in self.layout.shapes])
        if same_shapes and meta.get("optimizer") == type(self).__name__:
            self._check_inner(meta)  # (other mismatches get the base class's message)
        super()._check_checkpoint(state_dict)

    def _apply_checkpoint(self, state_dict: dict[str, Any]) -> None:
        super()._apply_checkpoint(state_dict)
        # torch's load_state_dict keeps the given tensors (``.to`` is a no-op when the dtype
        # and device match): clone, or two optimizers loaded from one state_dict would share
        # (and update in place) the same Adam moments / ClipUp velocities, and the caller's
        # checkpoint would change under it
        self._inner.load_state_dict(clone_tree(state_dict[META_KEY]["inner"]))

    def _check_inner(self, meta: dict[str, Any]) -> None:
        name = type(self).__name__
        inner_sd, saved = meta.get("inner"), meta.get("inner_class")
        if not isinstance(inner_sd, dict) or "param_groups" not in inner_sd:
            raise ValueError(f"{name}.load_state_dict: the checkpoint has no inner optimizer state")
        if saved != type(self._inner).__name__:
            raise ValueError(
                f"{name}.load_state_dict: the checkpoint's inner optimizer is {saved!r}, this "
                f"optimizer's is {type(self._inner).__name__!r}"
            )
        sizes = [len(g["params"]) for g in inner_sd["param_groups"]]
        mine = [len(g["params"]) for g in self._inner.param_groups]
        if sizes != mine:
            raise ValueError(
                f"{name}.load_state_dict: inner optimizer groups hold {sizes} parameters, this "
                f"optimizer's hold {mine}"
            )
        # torch's load_state_dict checks none of the per-parameter state: a NaN moment would
        # turn the center into NaN at the next step, a wrong shape fail only then
        params = [p for g in self._inner.param_groups for p in g["params"]]
        state = inner_sd.get("state", {})
        if not isinstance(state, dict):
            raise ValueError(f"{name}.load_state_dict: the inner optimizer's 'state' is not a dict")
        for k, entry in state.items():
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(params):
                raise ValueError(
                    f"{name}.load_state_dict: inner optimizer state for parameter {k!r} "
                    f"(expected indices 0..{len(params) - 1})"
                )
            if not isinstance(entry, dict):
                raise ValueError(f"{name}.load_state_dict: inner optimizer state {k} is not a dict")
            for key, v in entry.items():
                if not isinstance(v, Tensor):
                    continue
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    raise ValueError(
                        f"{name}.load_state_dict: inner optimizer state {k} {key!r} has NaN or "
                        "infinite entries"
                    )
                if key in _PARAM_SHAPED and v.shape != params[k].shape:
                    raise ValueError(
                        f"{name}.load_state_dict: inner optimizer state {k} {key!r} has shape "
                        f"{tuple(v.shape)}, expected the parameter's {tuple(params[k].shape)}"
                    )
