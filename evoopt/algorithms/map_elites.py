r"""MAP-Elites: quality diversity with a grid archive of elites.

Mouret & Clune (2015), "Illuminating search spaces by mapping elites",
https://arxiv.org/abs/1504.04909 (the algorithm, Fig. 2's pseudo-code), with the Iso+LineDD
variation of Vassiliades & Mouret (2018), "Discovering the elite hypervolume by leveraging
interspecies correlation", GECCO 2018, https://doi.org/10.1145/3205455.3205602 (eq. 1; the
default variation of pyribs' and QDax's MAP-Elites).

Each member ``x`` has a loss ``f(x)`` and a behaviour descriptor ``b(x)`` in ``R^k``, given by
the user (``tell(losses, descriptors=B)``, an objective returning ``(losses, descriptors)``,
or ``descriptor=fn`` at construction). The archive is a grid of ``N = prod_j cells_j`` cells
over ``descriptor_bounds`` ``[(lo_j, hi_j)]``; a descriptor falls in the cell (row-major
flat index of)::

    c_j(b) = min(cells_j - 1, max(0, floor((b_j - lo_j) / (hi_j - lo_j) * cells_j)))

(descriptors outside the bounds are clipped into the edge cells). Each cell keeps one elite,
the best member seen whose descriptor fell there. One generation, in the code's names (``P``
children, every draw independent, from the private generator in this order)::

    i_p ~ U{filled cells},  z_p ~ N(0, I_D)                                    p = 1..P
    j_p ~ U{filled cells},  t_p ~ N(0, 1)          (only with line_sigma > 0)
    x'_p = x_{i_p} + lr (sigma z_p + line_sigma t_p (x_{j_p} - x_{i_p}))     (Iso+LineDD)
    insertion: child p goes to cell c(b(x'_p)); it replaces the elite there if the cell is
        empty or f(x'_p) < f(elite) (strictly); of several children in one cell the best
        competes (ties: the lower index), so the batch equals inserting one by one

``line_sigma = 0`` (default) is the isotropic Gaussian mutation of Mouret & Clune; Vassiliades
& Mouret use ``sigma = 0.01``, ``line_sigma = 0.2`` in [0, 1]-scaled spaces. ``lr`` scales the
whole variation step (default 1: a torch lr scheduler anneals it); ``sigma`` (per group) is
also the spread of the first generation, ``x_0 + sigma z`` around the starting parameters,
which seeds the archive. ``lower`` / ``upper`` clip the children. Members with a non-finite
loss never enter the archive.

The center ``m`` (``st["mean"]``, what the parameters hold after each step) is the best
elite, so MAP-Elites also runs as a plain optimizer in a torch loop; :attr:`MAPElites.archive`
gives the elites, ``coverage`` (filled fraction of the cells) and the QD-score (Pugh et al.
2016; pyribs' ``qd_score`` with an offset)::

    qd_score = sum_{filled cells} (qd_offset - f(elite))      (minimising)
    qd_score = sum_{filled cells} (f(elite) - qd_offset)      (maximize=True: f is the value)

``qd_offset`` should bound the loss from above (the value from below) so that every term is
positive and a new elite can only raise the score. :attr:`current_sigma` reports the exact
RMS deviation of the next children from ``m`` (ignoring the bounds): with the elites ``x_e``
chosen uniformly, ``E (x' - m)^2 = mean_e (x_e - m)^2 + lr^2 (sigma^2 + 2 line_sigma^2
var_e(x_e))`` per coordinate.

``evoopt compare`` and ``bbob`` do not run it (their objectives return losses only and a
spec cannot carry a descriptor function): the missing ``cells`` / ``descriptor_bounds`` refuse
it at construction. The archive is dense, as pyribs' ``GridArchive``: ``N x D`` parameters
in the state (a checkpoint holds it), so keep ``N D`` within memory.

Example (the planar arm of Cully et al. 2015: the descriptor is the end effector)::

    import torch, evoopt
    angles = torch.zeros(10)                            # 10 joint angles
    def arm(pop):                                       # a population objective
        a = pop.flat.cumsum(1)
        xy = torch.stack([a.cos().sum(1), a.sin().sum(1)], 1) / 10
        return pop.flat.var(1), xy                      # (losses, descriptors)
    opt = evoopt.MAPElites([angles], sigma=0.1, cells=(20, 20),
                           descriptor_bounds=[(-1, 1), (-1, 1)], seed=0)
    for _ in range(100):
        opt.step(arm)
    opt.archive.coverage, opt.archive.qd_score          # the grid filled, and how well
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int, check_positive
from ..population import PopulationOptimizer
from ..registry import register
from ._steady_state import (
    box,
    check_group,
    check_loaded_population,
    check_start,
    initial_population,
    move_center,
)

__all__ = ["MAPElites", "Archive"]


@dataclass(frozen=True)
class Archive:
    """The elites of a :class:`MAPElites` archive (copies), in the order of their cells.

    Attributes:
        solutions: [n, D] the elites' flat parameters (``n`` filled cells).
        losses: [n] their losses, float64, in the user's sign.
        descriptors: [n, k] their descriptors, float64.
        cells: [n] int64 row-major flat cell indices (``numpy.unravel_index(cells, shape)``).
        shape: cells per descriptor dimension.
        coverage: ``n / prod(shape)``.
        qd_score: the QD-score (see :mod:`evoopt.algorithms.map_elites`) with ``qd_offset``.
        qd_offset: the offset of the QD-score.
    """

    solutions: Tensor
    losses: Tensor
    descriptors: Tensor
    cells: Tensor
    shape: tuple[int, ...]
    coverage: float
    qd_score: float
    qd_offset: float

    def __len__(self) -> int:
        return len(self.cells)


@register("map_elites")
class MAPElites(PopulationOptimizer):
    r"""MAP-Elites with a grid archive and Iso+LineDD variation (Mouret & Clune 2015;
    Vassiliades & Mouret 2018). See the module docstring for the maths and an example.

    Args:
        params: parameters or param groups to optimise.
        lr: scale of the whole variation step (default 1); schedulable.
        sigma: stdev of the isotropic mutation and spread of the first generation (per group;
            schedulable).
        cells: cells per descriptor dimension: an int (every dimension) or one int each.
        descriptor_bounds: ``[(lo, hi)]`` per descriptor dimension (finite, ``lo < hi``).
        descriptor: ``fn(pop) -> [P, k]`` descriptors from the population, used when the
            objective returns losses only (default None: the objective or ``tell`` gives them).
        line_sigma: stdev of the line (LineDD) step along the difference of two elites
            (default 0: isotropic mutation only).
        lower, upper: bounds that clip the children (default -inf / inf; per group).
        popsize: children per generation; ``None`` (default): 100.
        qd_offset: offset of :attr:`archive`'s QD-score (default 0).
        maximize: maximise the objective.
        seed: seed of the private generator.

    State (``state["population"]``): the archive ``solutions`` [N, D], ``fitness`` [N]
    (float64, minimising sign), ``descriptors`` [N, k] (float64), ``filled`` [N] (bool);
    ``mean`` (the best elite), ``center_loss``, ``initialized`` (the archive is not empty).
    """

    settings = ("cells", "descriptor_bounds", "line_sigma")
    param_dtype_state = ("solutions",)
    loss_dtype = torch.float64  # raw losses compared across generations
    nonfinite_loss = "inf"  # a non-finite loss must never enter the archive
    takes_descriptors = True
    plateau_invariant = False  # equal losses still fill new cells

    def __init__(self, params, lr: float = 1.0, *, sigma: float, cells,
                 descriptor_bounds: Sequence[tuple[float, float]],
                 descriptor: Callable | None = None, line_sigma: float = 0.0,
                 lower: float = -math.inf, upper: float = math.inf,
                 popsize: int | None = None, qd_offset: float = 0.0, maximize: bool = False,
                 seed: int | None = None):
        self.descriptor_bounds = _check_bounds(descriptor_bounds)
        self.num_descriptors = len(self.descriptor_bounds)
        self.cells = _check_cells(cells, self.num_descriptors)
        self.num_cells = math.prod(self.cells)
        if descriptor is not None and not callable(descriptor):
            raise ValueError(f"Invalid descriptor: {descriptor!r} (expected None or a function "
                             "of the population returning [P, k] descriptors)")
        self.descriptor = descriptor
        self.line_sigma = check_positive("line_sigma", line_sigma, allow_zero=True)
        if isinstance(qd_offset, bool) or not isinstance(qd_offset, numbers.Real) or (
                not math.isfinite(qd_offset)):
            raise ValueError(f"Invalid qd_offset: {qd_offset!r} (expected a finite number)")
        self.qd_offset = float(qd_offset)
        defaults = dict(lr=lr, sigma=sigma, lower=lower, upper=upper)
        super().__init__(params, defaults, popsize=popsize, maximize=maximize, seed=seed)

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        return 100

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        check_group(group, initial=initial)  # lr, sigma, lower < upper

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        check_start(self, mean)
        N, k, f64 = self.num_cells, self.num_descriptors, torch.float64
        st["solutions"] = mean.new_zeros(N, self.num_params)
        st["fitness"] = torch.zeros(N, dtype=f64, device=mean.device)
        st["descriptors"] = torch.zeros(N, k, dtype=f64, device=mean.device)
        st["filled"] = torch.zeros(N, dtype=torch.bool, device=mean.device)
        st["center_loss"], st["initialized"] = 0.0, False

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Any]:
        if not st["initialized"]:  # the first generation seeds the archive
            return initial_population(self, st, gen), None
        x = st["solutions"]
        opts = dict(generator=gen, device=x.device)
        idx = torch.nonzero(st["filled"])[:, 0]
        n, P = len(idx), self.popsize
        xi = x[idx[torch.randint(n, (P,), **opts)]]
        step = self.group_values("sigma") * torch.randn(P, self.num_params, dtype=x.dtype, **opts)
        if self.line_sigma > 0:
            xj = x[idx[torch.randint(n, (P,), **opts)]]
            t = torch.randn(P, 1, dtype=x.dtype, **opts)
            step = step + self.line_sigma * t * (xj - xi)
        kids = xi + self.group_values("lr") * step
        bx = box(self, x.dtype)
        return (kids if bx is None else torch.clamp(kids, bx[0], bx[1])), None

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Tensor, aux: Any, *,
                descriptors: Tensor) -> None:
        cells = self.cell_index(descriptors)
        winners = _best_per_cell(cells, losses)
        winners = winners[torch.isfinite(losses[winners])]
        c = cells[winners]
        new = ~st["filled"][c] | (losses[winners] < st["fitness"][c])
        winners, c = winners[new], c[new]
        st["solutions"][c] = rows[winners].to(st["solutions"].dtype)
        st["fitness"][c] = losses[winners]
        st["descriptors"][c] = descriptors[winners]
        st["filled"][c] = True
        filled = st["filled"]
        if bool(filled.any()):
            move_center(st, st["solutions"][filled], st["fitness"][filled])
            st["initialized"] = True

    # ---------------------------------------------------------------- archive
    def cell_index(self, descriptors: Tensor) -> Tensor:
        """[P] int64 row-major flat cell indices of [P, k] ``descriptors`` (module docstring:
        clipped into the grid)."""
        d = torch.as_tensor(descriptors, dtype=torch.float64)
        lo, hi = (torch.tensor(v, dtype=torch.float64, device=d.device)
                  for v in zip(*self.descriptor_bounds))
        n = torch.tensor(self.cells, dtype=torch.float64, device=d.device)
        c = torch.floor(torch.nan_to_num((d - lo) / (hi - lo) * n))  # NaN rows: never used
        c = torch.minimum(torch.clamp(c, min=0), n - 1).to(torch.int64)
        flat = torch.zeros(len(d), dtype=torch.int64, device=d.device)
        for j, nj in enumerate(self.cells):
            flat = flat * nj + c[:, j]
        return flat

    @property
    def archive(self) -> Archive:
        """The archive's elites (copies) with its coverage and QD-score."""
        st = self._st
        cells = torch.nonzero(st["filled"])[:, 0]
        f = st["fitness"][cells]
        losses = -f if self.maximize else f.clone()
        score = float((self.qd_offset - f).sum()) if not self.maximize else float(
            (losses - self.qd_offset).sum())
        return Archive(solutions=st["solutions"][cells].clone(), losses=losses,
                       descriptors=st["descriptors"][cells].clone(), cells=cells.cpu(),
                       shape=self.cells, coverage=len(cells) / self.num_cells,
                       qd_score=score, qd_offset=self.qd_offset)

    # ----------------------------------------------------------------- width
    def _adapted_width(self, st: dict[str, Any]) -> Tensor | None:
        """The exact RMS deviation from ``m`` of the next children, per coordinate (module
        docstring), ignoring the bounds; ``None`` before the archive has an elite."""
        if not st["initialized"]:
            return None
        f64 = torch.float64
        x = st["solutions"][st["filled"]].to(f64)
        d2 = ((x - st["mean"].to(f64)) ** 2).mean(0)
        var = x.var(0, unbiased=False)
        lr, sigma = self.group_vector("lr", f64), self.group_vector("sigma", f64)
        return torch.sqrt(d2 + lr**2 * (sigma**2 + 2 * self.line_sigma**2 * var))

    # ------------------------------------------------------------ checkpoint
    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        name, N, D, k = type(self).__name__, self.num_cells, self.num_params, self.num_descriptors
        check_loaded_population(name, st, self.popsize, D, {
            "solutions": (N, D), "fitness": (N,), "descriptors": (N, k), "filled": (N,)})
        if st["filled"].dtype != torch.bool:
            raise ValueError(f"{name}.load_state_dict: saved filled has dtype "
                             f"{st['filled'].dtype}, expected torch.bool")
        for key in ("solutions", "fitness", "descriptors"):
            v = st[key]
            if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name}.load_state_dict: saved {key} is not finite floats")
        if st["initialized"] != bool(st["filled"].any()):
            raise ValueError(f"{name}.load_state_dict: saved initialized="
                             f"{st['initialized']!r} disagrees with the filled cells")
        c = st.get("center_loss")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise ValueError(f"{name}.load_state_dict: saved center_loss {c!r} is not a "
                             "finite number")


def _best_per_cell(cells: Tensor, losses: Tensor) -> Tensor:
    """Indices of the best member of each cell that the members fall in (ties: the lower
    index): sort by loss, then stably by cell, and take each cell's first."""
    by_loss = torch.argsort(losses, stable=True)
    order = by_loss[torch.argsort(cells[by_loss], stable=True)]
    c = cells[order]
    first = torch.ones_like(c, dtype=torch.bool)
    first[1:] = c[1:] != c[:-1]
    return order[first]


def _check_bounds(bounds) -> tuple[tuple[float, float], ...]:
    """``descriptor_bounds`` as a tuple of ``(lo, hi)`` float pairs, finite, ``lo < hi``."""
    expected = ("expected a non-empty sequence of (low, high) pairs, finite numbers with "
                "low < high, one per descriptor dimension")
    try:
        pairs = tuple((lo, hi) for lo, hi in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid descriptor_bounds: {bounds!r} ({expected})") from None
    ok = len(pairs) > 0 and all(
        not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)
        for p in pairs for v in p) and all(lo < hi for lo, hi in pairs)
    if not ok:
        raise ValueError(f"Invalid descriptor_bounds: {bounds!r} ({expected})")
    return tuple((float(lo), float(hi)) for lo, hi in pairs)


def _check_cells(cells, k: int) -> tuple[int, ...]:
    """``cells`` as ``k`` ints >= 1 (an int applies to every dimension)."""
    if isinstance(cells, numbers.Integral) and not isinstance(cells, bool):
        cells = (cells,) * k
    if not isinstance(cells, Sequence) or len(cells) != k:
        raise ValueError(f"Invalid cells: {cells!r} (expected an integer >= 1 or {k} of them, "
                         "one per descriptor dimension)")
    return tuple(check_int("cells", c, minimum=1) for c in cells)
