r"""CMA-ES: the Covariance Matrix Adaptation Evolution Strategy, driven through pycma.

Hansen & Ostermeier (2001), "Completely Derandomized Self-Adaptation in Evolution
Strategies", Evolutionary Computation 9(2), https://doi.org/10.1162/106365601750190398;
defaults and notation from Hansen (2016), "The CMA Evolution Strategy: A Tutorial",
https://arxiv.org/abs/1604.00772 (Table 1). Diagonal mode (sep-CMA): Ros & Hansen
(2008), PPSN X, https://doi.org/10.1007/978-3-540-87700-4_30. Restarts: IPOP, Auger &
Hansen (2005), CEC, https://doi.org/10.1109/CEC.2005.1554902; BIPOP, Hansen (2009),
GECCO BBOB workshop, https://doi.org/10.1145/1570256.1570333.

The maths lives in pycma (``cma.CMAEvolutionStrategy``, package ``cma`` 4.x); this file
is the bridge to the :class:`~evoopt.PopulationOptimizer` contract. One generation, in
pycma's names (``es.sm.B``, ``es.sm.D``, ``es.pc``, ``es.adapt_sigma.ps``)::

    z_k  ~ N(0, I)                        drawn by evoopt's private generator (option randn)
    y_k  = B D z_k                        D**2: eigenvalues of C (diagonal: y_k = sigma_vec * z_k)
    x_k  = mean + sigma y_k               k = 1..popsize          <- ask()
    mean <- mean + c_m sigma sum_i w_i y_{i:lambda}               <- tell(losses)
    ps, pc: evolution paths; C <- rank-one (pc) + rank-mu (+ active) update
    sigma <- sigma exp(c_s/d_s (|ps| / E|N(0,I)| - 1))            (CSA; TPA for D >= 300)

Defaults are pycma's, i.e. Table 1 of the tutorial: ``popsize = 4 + floor(3 ln D)``,
``mu = popsize // 2``, ``w_i ~ ln((popsize + 1) / 2) - ln i``, ``c_m = 1`` (``lr`` here),
and pycma's ``c_s, d_s, c_c, c_1, c_mu`` (plus active CMA's negative weights).

Param groups:

- ``lr`` is ``c_m``, the learning rate of the mean (pycma's ``CMA_cmean``), read every
  generation (so ``torch.optim.lr_scheduler`` drives it). One value for all groups.
- ``sigma`` is the initial step size ``sigma0``. Groups may differ: pycma then gets
  ``sigma0 = max`` and per-coordinate factors ``CMA_stds = sigma_group / sigma0``. If the
  groups' ``sigma`` change between generations, the adapted step size is multiplied by
  ``new / old`` before the next ``ask`` (so a schedule on ``sigma`` rescales what CMA
  learned instead of overwriting it); all groups must then change by the same factor.
  A restart starts from the groups' current ``sigma``.

Bounds use pycma's ``BoundTransform``: ``ask`` returns feasible (transformed) members and
``tell`` hands pycma back the very arrays it asked, so pycma maps them to its internal
(genotype) mean. The center written into the parameters is then the feasible image of
pycma's mean (``es.result.xfavorite``); without bounds it is ``es.mean`` itself.

Restarts (``restarts > 0``): when pycma's ``es.stop()`` is non-empty and none of its
entries is a user-level one (``ftarget``, ``maxfevals``, ``timeout``, ``callback``: these
end the search, as in pycma's ``fmin``), a
new run starts from the initial parameters with a larger population: ``"ipop"`` doubles
``popsize`` at each restart; ``"bipop"`` interleaves such runs with short runs of a
random small population and step size, as pycma's ``fmin(..., bipop=True)`` does.
``restarts`` counts the large-population restarts (small BIPOP runs are not counted).
**``self.popsize`` then changes between generations**: the base class reads it when
``tell`` checks the losses, so ``ask`` and ``tell`` of one generation always agree;
evaluators must size their work from ``len(pop)``, not from the constructor argument.

Stopping for good: once ``es.stop()`` is non-empty after a ``tell`` and no restart follows
(``restarts=0``, restarts used up, or a user-level condition), the search is over. The
parameters keep the final run's center (pycma's ``es.result.xfavorite``: the mean, the
estimate pycma recommends; ``load_best_()`` loads the best member evaluated instead),
one ``RuntimeWarning`` says so, and :attr:`CMAES.stopped` holds pycma's conditions
(reason -> pycma's value: the threshold, or the measured value for ``tolx``,
``tolupsigma``, ...; values that are not numbers become None). Further ``step`` calls are
no-ops, as torch's LBFGS's once converged: nothing is evaluated, the last generation's mean
loss is returned, so a ``for epoch in range(n)`` loop keeps its model at the final center;
``ask`` raises ``RuntimeError`` (ask/tell loops end on ``opt.stopped`` as pycma's on
``es.stop()``). A loop on ``opt.num_evals < budget`` must also end on ``opt.stopped``
(the count no longer grows); ``evoopt compare`` and ``evoopt train`` do. Which of pycma's
conditions are final: pycma clears and recomputes its dict at every check
(``_CMAStopDict._update``), so none is latched by pycma; ``maxiter``, ``maxfevals``,
``ftarget`` and ``timeout`` are monotone (a counter, the best f so far, the clock) and stay
true; the others (``tolfun``, ``tolfunhist``, ``tolx``,
``tolflatfitness``, ``tolstagnation``, ``tolxstagnation``, ``tolupsigma``, ``tolfacupx``,
``tolconditioncov``, ``noeffectaxis``, ``noeffectcoord`` and ``callback``, the user's
``termination_callback`` called again at every check) describe the current generation and
could clear if the run went on. evoopt latches the first non-empty dict that no restart
follows; ``stopped`` survives ``state_dict``/``load_state_dict`` and pickling. pycma's own
default ``tolflatfitness=1`` ends a run after two generations whose best quarter is flat.

Exact plateaus: pycma ranks equal losses by member index (``np.argsort``), so a
generation whose losses are all equal used to move the mean by a random step (the mean of
the first ``mu`` members), and the paths, covariance and step size with it: 20 such
generations moved the center by 0.55 (issue 12). A generation carries no information then;
evoopt still tells pycma (counters, evaluations, the fitness history its termination tests
read: ``tolfun``, ``tolflatfitness``), then writes the distribution (mean, step size,
evolution paths, covariance, step-size adaptation) back as it was before that ``tell``.
The next generation samples fresh members from the same distribution. With pycma's default
tolerances an exact plateau therefore ends the run at once (``tolfun``), without a move.
Partial ties (some losses equal, not all) are left to pycma: ranked by member index.

Dtypes and size: the search runs in float64 (pycma); members are cast to the parameters'
dtype (float64, float32, float16, bfloat16) and the center is the float64 mean rounded
to it. A checkpoint taken with parameters of one dtype loads into parameters of another
(its ``mean``/``best`` are cast; pycma's state is float64 either way). Full CMA keeps
``D x D`` matrices: more than :attr:`CMAES.max_full_params` coordinates are refused
(``ValueError``) unless ``diagonal=True``.

Pickle / deepcopy: ``CMAES`` defines its own ``__getstate__``/``__setstate__``: pycma's
live object (its ``randn`` option is bound to a ``torch.Generator``, which does not
pickle) travels as the checkpoint snapshot below and the generators as their states; a
copy samples the same next generation. A pending ask is dropped, as in a checkpoint.

Determinism and checkpoints: pycma samples through its ``randn`` option, which here
draws from a private CPU ``torch.Generator`` seeded from ``seed`` (numpy's global RNG is
never used; options that would make pycma use it are refused). pycma has no state API:
``state_dict`` holds a snapshot of the live instance as tensors and plain numbers
(``evoopt/algorithms/_pycma.py``), written onto a fresh instance on load, so a resumed run
continues with identical numbers. A checkpoint taken between ``ask`` and ``tell`` resumes
as of after that ``ask``, as for every population optimizer. Constructor arguments
(``options``, ``bounds``, ``diagonal``, restarts) are not saved: pass the same.

Performance: the bridge adds a few tens of microseconds per generation to pycma's own
ask + tell (``bench/bench_cmaes.py``). pycma's eigendecomposition (``np.linalg.eigh``) runs
on numpy's BLAS threads; on a loaded machine set ``OPENBLAS_NUM_THREADS=1`` (or pass
``options={"CMA_eigenmethod": ...}``): oversubscribed BLAS threads slow full CMA 5-10x.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer

from ..checks import check_choice, check_int, check_positive
from .._state import STATE_KEY
from ..population import PopulationOptimizer
from ..registry import register
from ._defaults import standard_popsize
from ._stopping import StopsForGood
from ._pycma import (  # noqa: F401  (_QUIET, _SMALL, _LARGE: read by tests and benches)
    _DISTRIBUTION,
    _LARGE,
    _PICKLED,
    _QUIET,
    _SMALL,
    _USER_STOPS,
    _check_bounds,
    _check_options,
    _free_form,
    _no_check,
    _plain_stop,
    restart_schedule,
    _write_attrs,
    restore_pycma,
    snapshot_pycma,
)

__all__ = ["CMAES", "cmaes_default_popsize"]

#: ``4 + floor(3 ln D)`` (Hansen 2016, Table 1), as pycma computes it
cmaes_default_popsize = standard_popsize


@register("cmaes")
class CMAES(StopsForGood, PopulationOptimizer):
    r"""CMA-ES (Hansen & Ostermeier 2001) through pycma, with IPOP/BIPOP restarts.

    Args:
        params: parameters or param groups to optimise.
        lr: ``c_m``, the learning rate of the mean (default 1.0, Table 1); schedulable.
            One value for every group.
        sigma: initial step size ``sigma0`` (default 0.1; per group, see the module
            docstring for groups that differ and for changes between generations).
        popsize: members per generation; ``None`` (default): ``4 + floor(3 ln D)``.
            At least 2. Restarts change ``self.popsize``.
        diagonal: sep-CMA (pycma's ``CMA_diagonal=True``): a diagonal covariance learned
            in ``es.sigma_vec``; O(D) time and memory per member instead of O(D^2).
        bounds: ``(lower, upper)``, each a number, a sequence of D numbers or None;
            handled by pycma's ``BoundTransform``. The initial parameters must lie inside.
        restarts: maximum number of large-population restarts (default 0: none).
        restart_strategy: ``"ipop"`` (Auger & Hansen 2005) or ``"bipop"`` (Hansen 2009).
        options: further pycma options (``cma.CMAOptions()``), e.g.
            ``{"CMA_active": False, "tolfun": 1e-12}``. Logging, seeding, popsize, bounds
            and the sampler are set by the arguments above and refused here.
        maximize: maximise the objective.
        seed: seed of the private generators.

    Attributes: ``es`` (the live ``cma.CMAEvolutionStrategy``, built at the first
    generation), ``stop_conditions`` (pycma's termination dict of the current run, checked
    after every ``tell``), ``stopped`` (empty until the search ends for good, then pycma's
    reasons; ``step`` is a no-op and ``ask`` raises from then on), ``sigma`` (pycma's current
    step size), ``current_sigma`` (the next generation's width in parameter units, one number),
    ``num_restarts`` (all restarts so far, BIPOP's small runs included), ``popsize`` (the
    current run's). At most ``max_full_params`` coordinates unless ``diagonal=True``.

    State (``state["population"]``): ``mean`` [D] (params' dtype), ``x0`` [D] float64
    (the initial point restarts go back to), ``group_sigma`` (the groups' ``sigma`` the
    step size refers to), run bookkeeping (``popsize``, ``run_sigma0``, ``run_maxiter``,
    ``num_restarts``, ``runs``, ...), ``stopped`` (see above) and, in a ``state_dict``,
    ``pycma`` (a snapshot of the pycma objects) and ``sampler_rng`` (the sampler
    generator's state).
    """

    min_popsize = 2
    #: state entries whose keys depend on the run (pycma's termination reasons)
    free_form_state = ("last_stop", "stopped", "stop")
    stop_what = "pycma's termination conditions"
    stop_remedy = "pass restarts= or looser options (tolfun, tolx, ...)"
    loss_dtype = torch.float64  # pycma ranks and stops on unrounded fitness values
    numpy_update = True  # pycma takes numpy
    #: the largest D for full (non-diagonal) CMA: pycma holds C and B (D x D float64) plus
    #: eigh's workspace, about 4 * 8 * D**2 bytes (3 GiB at 1e4, 12 GiB at 2e4), and one
    #: eigendecomposition costs O(D**3) (about 0.9 s per generation at D = 5000 on one core)
    max_full_params: int = 10_000

    def __init__(
        self,
        params,
        lr: float = 1.0,
        sigma: float = 0.1,
        *,
        popsize: int | None = None,
        diagonal: bool = False,
        bounds=None,
        restarts: int = 0,
        restart_strategy: str = "ipop",
        options: dict[str, Any] | None = None,
        maximize: bool = False,
        seed: int | None = None,
    ):
        if not isinstance(diagonal, bool):
            raise ValueError(f"Invalid diagonal: {diagonal!r} (expected True or False)")
        self.restarts = check_int("restarts", restarts, minimum=0)
        check_choice("restart_strategy", restart_strategy, {"ipop", "bipop"})
        self.restart_strategy = restart_strategy
        self.diagonal = diagonal
        self.options = _check_options(options)
        super().__init__(
            params, dict(lr=lr, sigma=sigma), popsize=popsize, maximize=maximize, seed=seed
        )
        self._check_size()
        self._bounds_arg = bounds
        self.bounds = self._checked_bounds()
        self._sampler_gen = torch.Generator()
        self._sampler_gen.manual_seed(self.seed)
        self._lr_seen: list | None = None
        self.es = None

    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        """``4 + floor(3 ln D)`` (Hansen 2016, Table 1), as pycma computes it."""
        return cmaes_default_popsize(num_params)

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        if initial:  # at each ask _sample checks a changed lr or sigma across the groups
            check_positive("lr", group["lr"])
            check_positive("sigma", group["sigma"])

    def _group_added(self) -> None:  # D grew: the size and the bounds again
        self._check_size()
        self.bounds = self._checked_bounds()

    def _checked_bounds(self) -> list | None:
        bounds = _check_bounds(self._bounds_arg, self.num_params)
        if bounds is not None:
            lo, up = bounds
            self._check_inside(self.layout.flatten().double().cpu(), lo, up)
        return bounds

    def _check_size(self) -> None:
        D = self.num_params
        if not self.diagonal and D > self.max_full_params:
            raise ValueError(
                f"Invalid number of parameters for full CMAES: {D} (expected at most "
                f"CMAES.max_full_params={self.max_full_params}: full CMA-ES keeps D x D matrices, "
                f"{4 * 8 * D**2 / 2**30:.3g} GiB here, and decomposes one every few generations); "
                "pass diagonal=True (sep-CMA, O(D) per member)"
            )

    def _check_inside(self, x: Tensor, lo, up) -> None:
        bad = torch.zeros(x.shape, dtype=torch.bool)
        if lo is not None:
            bad |= x < torch.as_tensor(lo, dtype=torch.float64)
        if up is not None:
            bad |= x > torch.as_tensor(up, dtype=torch.float64)
        idx = bad.nonzero().flatten().tolist()
        if idx:
            raise ValueError(
                f"Invalid bounds: the initial parameters lie outside them at coordinates "
                f"{idx[:10]} (expected lower <= params <= upper)"
            )

    # ------------------------------------------------------------ pycma glue
    def _generators(self) -> list[torch.Generator]:
        """pycma draws from the private CPU sampler only (``self._gen`` is never used):
        that is the stream a failed generation rewinds."""
        return [self._sampler_gen]

    def _pycma_randn(self, *shape: int) -> np.ndarray:
        """pycma's ``randn`` option: N(0, 1) numbers from the private CPU generator."""
        return torch.randn(*shape, generator=self._sampler_gen, dtype=torch.float64).numpy()

    def _group_sigmas(self) -> list[float]:
        return [check_positive("sigma", g["sigma"]) for g in self.param_groups]

    def _group_lr(self) -> float:
        """The groups' common ``lr`` (c_m), validated; remembered so that an unchanged lr
        is not validated again every generation."""
        lrs = [check_positive("lr", g["lr"]) for g in self.param_groups]
        if any(v != lrs[0] for v in lrs):
            raise ValueError(
                f"Invalid lr: {lrs} differ between param groups (expected one value: "
                "CMA-ES has one learning rate c_m for the mean)"
            )
        self._lr_seen = [g["lr"] for g in self.param_groups]
        return lrs[0]

    def _make_es(self, x0: np.ndarray, sigmas: list[float], popsize: int, maxiter, sigma0=None):
        """A pycma instance for one run; ``sigma0`` defaults to the largest group sigma."""
        import cma

        opts = dict(self.options)
        opts.update(_QUIET)
        opts.update(randn=self._pycma_randn, popsize=popsize, CMA_diagonal=self.diagonal)
        if maxiter is not None:
            opts["maxiter"] = maxiter
        if self.bounds is not None:
            opts["bounds"] = self.bounds
        top = max(sigmas)
        if min(sigmas) != top:
            stds = np.empty(self.num_params)
            for s, (a, b) in zip(sigmas, self._group_slices):
                stds[a:b] = s / top
            opts["CMA_stds"] = stds
        es = cma.CMAEvolutionStrategy(x0, top if sigma0 is None else sigma0, opts)
        es.sp.cmean = self._group_lr()
        if isinstance(es.adapt_sigma, cma.sigma_adaptation.CMAAdaptSigmaTPA):
            es.adapt_sigma.check_consistency = _no_check
        return es

    def _center(self) -> np.ndarray:
        es = self.es
        if self.bounds is None:
            return es.mean
        return es.gp.pheno(es.mean, into_bounds=es.boundary_handler.repair)

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:
        x0 = mean.detach().to(device="cpu", dtype=torch.float64).clone()
        sigmas = self._group_sigmas()
        self.popsize = self.initial_popsize
        self.es = self._make_es(x0.numpy(), sigmas, self.popsize, None)
        st.update(
            x0=x0,
            group_sigma=sigmas,
            diagonal=self.diagonal,
            bounded=self.bounds is not None,
            popsize=self.popsize,
            run_sigma0=float(self.es.sigma0),
            run_maxiter=None,
            maxiter0=float(self.es.opts["maxiter"]),
            num_restarts=0,
            runs=0,
            runs_with_small=0,
            regime=_SMALL,
            small_evals=[],
            large_evals=[],
            run_start_evals=0,
            **_free_form(),
        )

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, list]:
        es = self.es
        if [g["lr"] for g in self.param_groups] != self._lr_seen:  # checked before sigma moves
            es.sp.cmean = self._group_lr()
        old = st["group_sigma"]
        if [g["sigma"] for g in self.param_groups] != old:  # a schedule moved sigma: rescale
            sigmas = self._group_sigmas()
            ratios = [n / o for n, o in zip(sigmas, old)]
            if any(not math.isclose(r, ratios[0], rel_tol=1e-12) for r in ratios):
                raise ValueError(
                    f"Invalid sigma: the groups' sigma changed from {old} to {sigmas} by different "
                    "factors (expected one common factor: CMA-ES adapts one global step size)"
                )
            es.sigma *= ratios[0]
            st["group_sigma"] = sigmas
        X = es.ask()
        flat = torch.from_numpy(np.array(X))  # float64 on the CPU
        if not self._cpu_float64:
            flat = flat.to(device=self._device, dtype=self._dtype)
        return flat, X

    def _update(self, st: dict[str, Any], un: np.ndarray, rows: Tensor, X: list) -> None:
        es = self.es
        vals = un.tolist()  # (Python's min/max: two numpy reductions cost more at small P)
        if min(vals) == max(vals):  # an exact plateau: no information, no move (docstring)
            before = snapshot_pycma(es)
            es.tell(X, un)
            _write_attrs(es, before, only=_DISTRIBUTION)
        else:
            es.tell(X, un)
        stop = es.stop()
        if stop:
            restart = self.restarts and not _USER_STOPS & stop.keys()
            if not (restart and self._restart(st, stop)):
                note = " and no restart is left" if self.restarts else ""
                self._stop_for_good(st, _plain_stop(stop), note)
        view = self.layout.numpy_view(st["mean"])  # cached between generations
        if view is not None:  # no dispatch; bfloat16 (no numpy dtype) takes the torch copy
            np.copyto(view, self._center(), casting="unsafe")
        else:
            st["mean"].copy_(torch.from_numpy(np.asarray(self._center(), dtype=np.float64)))

    def _restart(self, st: dict[str, Any], stop) -> bool:
        """IPOP / BIPOP as in pycma's ``fmin`` (``incpopsize=2``); False when no restart
        is left."""
        es = self.es
        runs = st["runs"] + 1
        if runs - st["runs_with_small"] > self.restarts:
            return False
        popsize, maxiter, sigma_factor = restart_schedule(
            st, self.restart_strategy, self.initial_popsize, es.countevals, self._sampler_gen
        )
        st["last_stop"] = _plain_stop(stop)
        countevals = es.countevals
        sigmas = self._group_sigmas()
        self.es = self._make_es(
            st["x0"].cpu().numpy(), sigmas, popsize, maxiter, max(sigmas) * sigma_factor
        )
        self.es.countevals = countevals
        self.popsize = popsize
        st.update(
            popsize=popsize,
            run_sigma0=float(self.es.sigma0),
            run_maxiter=maxiter,
            runs=runs,
            num_restarts=st["num_restarts"] + 1,
            run_start_evals=countevals,
            group_sigma=sigmas,
        )
        return True

    # ------------------------------------------------------------ properties
    @property
    def current_sigma(self) -> float:
        """The search width the next generation samples with, as one number: the
        root-mean-square over coordinates of ``sigma * sigma_vec_i * sqrt(C_ii)`` (pycma's
        per-coordinate standard deviations), times a pending change of the groups' ``sigma``.
        Once :attr:`stopped`, the final run's width."""
        st = self._st
        es = self.es
        stds = es.sigma * es.sigma_vec.scaling * np.sqrt(es.dC)
        rms = math.sqrt(float(np.mean(np.square(stds))))
        return rms * self.param_groups[0]["sigma"] / st["group_sigma"][0]

    @property
    def stop_conditions(self) -> dict[str, Any]:
        """pycma's termination conditions of the current run (empty while it goes on)."""
        _ = self._st  # builds the run if needed
        return dict(self.es.stop(check=False))

    @property
    def sigma(self) -> float:
        """pycma's current step size."""
        _ = self._st
        return float(self.es.sigma)

    @property
    def num_restarts(self) -> int:
        return self._st["num_restarts"]

    # ------------------------------------------------------------- state_dict
    def state_dict(self) -> dict[str, Any]:
        st = self.state.get(STATE_KEY)
        if not st:
            return super().state_dict()
        st["pycma"] = snapshot_pycma(self.es)
        st["sampler_rng"] = self._checkpoint_rng(self._sampler_gen)  # before a pending ask
        try:
            return super().state_dict()
        finally:
            del st["pycma"], st["sampler_rng"]

    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        name = type(self).__name__
        missing = [
            k
            for k in ("pycma", "sampler_rng", "x0", "group_sigma", "popsize", "run_sigma0")
            if k not in st
        ]
        if missing:
            raise ValueError(f"{name}.load_state_dict: the saved state lacks {missing}")
        for key, mine in (("diagonal", self.diagonal), ("bounded", self.bounds is not None)):
            if st.get(key) != mine:
                raise ValueError(
                    f"{name}.load_state_dict: saved with {key}={st.get(key)!r}, this optimizer "
                    f"has {key}={mine!r}"
                )
        if st["num_restarts"] and not self.restarts:
            raise ValueError(
                f"{name}.load_state_dict: the saved run restarted {st['num_restarts']} times, "
                "this optimizer has restarts=0"
            )
        for key, ref in _free_form().items():
            v = st.get(key, ref)
            if type(v) is not type(ref):
                raise ValueError(f"{name}.load_state_dict: saved {key}={v!r} is malformed")

    def _apply_checkpoint(self, state_dict: dict[str, Any]) -> None:
        super()._apply_checkpoint(state_dict)
        st = self.state.get(STATE_KEY)
        if not st:  # saved before the first generation: start afresh from the saved seed
            self.es = None
            self.popsize = self.initial_popsize
            self._sampler_gen.manual_seed(self.seed)
            return
        for key, value in _free_form().items():  # checkpoints from before these entries
            st.setdefault(key, value)
        for key in ("mean", "best"):  # saved from parameters of another dtype: cast (pycma's
            st[key] = st[key].to(self._dtype)  # own state is float64 whatever the dtype)
        snap = st.pop("pycma")
        self._sampler_gen.set_state(st.pop("sampler_rng").cpu())
        self._rebuild_es(st, snap)

    def _rebuild_es(self, st: dict[str, Any], snap: dict[str, Any]) -> None:
        """The current run's pycma instance, built afresh and set to the snapshot."""
        self.popsize = st["popsize"]
        es = self._make_es(
            st["x0"].cpu().numpy(),
            st["group_sigma"],
            st["popsize"],
            st["run_maxiter"],
            st["run_sigma0"],
        )
        restore_pycma(es, snap)
        self.es = es

    # ------------------------------------------------------------ pickle / deepcopy
    def __getstate__(self) -> dict[str, Any]:
        """Everything, with pycma's live object (its ``randn`` option is bound to a
        ``torch.Generator``, which does not pickle) as a :func:`snapshot_pycma` and the
        generators as their states. A pending ask (no tell yet) is dropped, as in a
        checkpoint: the copy asks that generation again (the same members)."""
        d = dict(self.__dict__)
        d["es"] = snapshot_pycma(self.es) if self.es is not None else None
        d["_gen"] = (self._gen.device, self._gen.get_state())
        d["_sampler_gen"] = self._checkpoint_rng(self._sampler_gen)
        d["_pending"] = d["_rng_before_ask"] = d["_rng_after_ask"] = None
        d[_PICKLED] = True
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        if _PICKLED not in d:  # torch's load_state_dict calls it with state and param_groups
            return super().__setstate__(d)
        d = dict(d)
        del d[_PICKLED]
        snap, (device, gen_state), sampler_state = d.pop("es"), d.pop("_gen"), d.pop("_sampler_gen")
        Optimizer.__setstate__(self, d)  # torch's own: hooks, step patch (not the base's)
        self._gen = torch.Generator(device=device)
        self._gen.set_state(gen_state)
        self._sampler_gen = torch.Generator()
        self._sampler_gen.set_state(sampler_state)
        self.es = None
        if snap is not None:
            self._rebuild_es(self.state[STATE_KEY], snap)
