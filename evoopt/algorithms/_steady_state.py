"""What the steady-state population methods (DE, PSO, GA) share: a population of points
lives in the state with its losses, the first generation evaluates an initial population
spread around the parameters, the center is the best point seen (moved only on strict
improvement), and optional per-group box bounds."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_lr_sigma
from .._state import check_saved_shapes
from ..population import PopulationOptimizer
from ..shaping import all_tied


def check_group(group: dict[str, Any], *, initial: bool) -> None:
    """A group of a steady-state algorithm: ``lr`` > 0 (0 allowed once running: a schedule
    may reach it), ``sigma`` > 0 and the box (:func:`check_box`)."""
    check_lr_sigma(group, initial=initial)
    check_box(group)


def check_box(group: dict[str, Any]) -> None:
    """``lower`` < ``upper``, each a number (+-inf: no bound)."""
    low, up = group["lower"], group["upper"]
    for name, v in (("lower", low), ("upper", up)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise ValueError(f"Invalid {name}: {v!r} (expected a number, or +-inf for none)")
    if not low < up:
        raise ValueError(f"Invalid bounds: lower={low!r}, upper={up!r} (expected lower < upper)")


def box(opt: PopulationOptimizer, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
    """The groups' ``(lower, upper)`` as [D] tensors, or None when nothing is bounded."""
    low, up = opt.group_values("lower"), opt.group_values("upper")
    if isinstance(low, float) and isinstance(up, float) and -low == up == math.inf:
        return None  # every group unbounded (floats: no [D] tensors built)
    return opt.group_vector("lower", dtype), opt.group_vector("upper", dtype)


def check_start(opt: PopulationOptimizer, mean: Tensor) -> None:
    """The starting parameters must lie in the box (raised at the first ask)."""
    b = box(opt, mean.dtype)
    if b is None:
        return
    out = torch.nonzero((mean < b[0]) | (mean > b[1]))
    if len(out):
        j = int(out[0])
        raise ValueError(
            f"Invalid parameters: coordinate {j} is {float(mean[j])!r}, outside the bounds "
            f"[{float(b[0][j])!r}, {float(b[1][j])!r}] (start inside lower..upper)"
        )


def initial_population(opt: PopulationOptimizer, st: dict[str, Any], gen) -> Tensor:
    """``x_0 + sigma z_i`` ([P, D], z ~ N(0, I)), clipped to the box."""
    z = torch.randn(opt.popsize, opt.num_params, generator=gen, dtype=st["mean"].dtype,
                    device=st["mean"].device)
    rows = st["mean"] + opt.group_values("sigma") * z
    b = box(opt, rows.dtype)
    return rows if b is None else torch.clamp(rows, b[0], b[1])


def finite_losses(u: Tensor) -> Tensor:
    """Losses of an initial population with ``+inf`` (a non-finite loss) replaced by the
    worst finite one plus the spread (at least 1): ranked worst, and finite in the state."""
    ok = torch.isfinite(u)
    if bool(ok.all()):
        return u.clone()
    good = u[ok]
    worst = good.max() + torch.clamp(good.max() - good.min(), min=1.0)
    return torch.where(ok, u, worst)


def start_or_skip(st: dict[str, Any], losses: Tensor) -> bool:
    """The first generation: False (and nothing changes) when its losses are all equal or
    none is finite, else True."""
    return not all_tied(losses) and bool(torch.isfinite(losses).any())


def move_center(st: dict[str, Any], points: Tensor, losses: Tensor) -> None:
    """``m`` <- the best of ``points`` if it is strictly better than ``m``'s loss."""
    i = int(torch.argmin(losses))
    if not st["initialized"] or float(losses[i]) < st["center_loss"]:
        st["mean"] = points[i].clone()
        st["center_loss"] = float(losses[i])


def check_loaded_population(name: str, st: dict[str, Any], P: int, D: int,
                            shapes: dict[str, tuple]) -> None:
    """Shapes of a checkpoint's population entries (``shapes``: key -> shape with ``P``/
    ``D`` filled in), and the flag that says whether the population exists."""
    if not isinstance(st.get("initialized"), bool):
        raise ValueError(f"{name}.load_state_dict: saved initialized is not True or False")
    check_saved_shapes(name, st, shapes, f" (popsize {P}, {D} coordinates)")
