r"""The base of every population optimizer: a :class:`torch.optim.Optimizer` with
``ask`` / ``tell`` / ``step``, and the contract an algorithm implements.

All parameters of all groups form one flat search vector of ``D`` coordinates. An
algorithm keeps a search distribution over that vector (its center is ``mean``),
:meth:`PopulationOptimizer.ask` samples ``popsize`` members from it, and
:meth:`PopulationOptimizer.tell` takes one loss per member and updates the
distribution. :meth:`PopulationOptimizer.step` does both around a closure:

- a zero-argument closure (the torch convention) is called once per member, with
  the member loaded into the parameters and gradients disabled;
- a *population objective* -- a callable that takes a :class:`Population` and
  returns ``P`` losses (e.g. :func:`evoopt.vmap_objective`) -- is called once.

After ``step`` (and after ``tell``) the parameters hold the center. A generation that
fails (every loss non-finite, the closure raising for every member) leaves the optimizer
as it was before its ask: the center in the parameters, the state, the random stream.

Frozen parameters (an ``nn.Parameter`` with ``requires_grad=False`` when the optimizer is
built) are left alone, as torch's optimizers leave them: they are not in the search vector
and never written. (A plain tensor is always searched: tensors default to
``requires_grad=False``, so the flag says nothing there.) The search vector is fixed at
construction (and :meth:`add_param_group`): freezing or unfreezing a parameter later is
refused at the next generation with a ``ValueError`` (build a new optimizer to search
another set).

Hyperparameters (``lr``, ``sigma``, ...) live in ``param_groups`` and are read at every
generation, so ``torch.optim.lr_scheduler`` drives ``lr`` and :mod:`evoopt.schedulers`
drives ``sigma``; a group's value applies to the coordinates of that group's parameters.
Step hooks fire once per generation (pre at ``ask``, post after ``tell``; once each for
``step``). Pickle and ``copy.deepcopy`` copy the whole optimizer (generators by state).

The algorithm contract (a subclass implements these; data flows through the arguments,
never through attributes)::

    default_popsize(num_params) -> int        # classmethod: P when popsize=None
    _check_group(group, initial)              # validate one group's hyperparameters
    _init_state(st, mean)                     # fill the algorithm's entries of `st`
    _sample(st, gen) -> (rows, aux)           # rows: [P, D] members (or a Population);
                                              # aux: whatever _update needs of this draw
    _update(st, losses, rows, aux)            # losses: [P] to minimise, finite (a
                                              # tensor; numpy float64 if numpy_update)
    # quality diversity (takes_descriptors): _update(..., descriptors=[P, k]), see the docs

The base class calls ``_check_group(group, initial=True)`` on construction and
:meth:`add_param_group` (the values as given), and ``_check_group(group, initial=False)``
for every group at every ask before ``_sample`` (the values a scheduler set). Between
ask and tell it keeps ``(rows, aux)`` and hands them back to ``_update``.

Everything an algorithm needs to resume lives in ``st = self.state["population"]``:
tensors and plain Python values only, so ``torch.load(weights_only=True)`` reads a
checkpoint back. (A non-parameter key keeps torch from casting the state to the
parameters' dtype on load.) Checkpoints are validated and loaded all or nothing by
:mod:`evoopt._state`, driven by the declared ``settings`` and ``vector_state``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer

from ._closure import (
    AllNonFinite,
    check_losses,
    descriptor_kwargs,
    evaluate_members,
    global_hooks,
    is_population_objective,
    no_grad,
    profiler_enabled,
    set_rng,
    split_descriptors,
    utilities,
)
from ._groups import GroupMixin
from ._layout import (
    Generation,
    ParamLayout,
    Population,
    _numpy_ok,
)
from ._state import STATE_KEY, CheckpointMixin
from .checks import check_int

__all__ = [
    "Generation", "ParamLayout", "Population", "PopulationOptimizer", "is_population_objective",
]


class PopulationOptimizer(GroupMixin, CheckpointMixin, Optimizer):
    """Base class: see the module docstring for the contract.

    Args:
        params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
        defaults: per-group hyperparameters (validated by :meth:`_check_group`).
        popsize: number of members per generation; ``None``: :meth:`default_popsize`
            (rounded up to even for mirrored sampling).
        maximize: maximise the objective instead of minimising it.
        seed: seed of the optimizer's private :class:`torch.Generator` (``None``: a
            random seed from the OS; the global RNGs are never touched).
    """

    #: True when members come in antithetic pairs (+eps, -eps): popsize must be even.
    mirrored: bool = False
    #: why popsize must be even, for the message (when ``mirrored``)
    pairs_why: str = "mirrored sampling draws pairs"
    #: the smallest popsize the algorithm works with (2 where it ranks or needs a spread)
    min_popsize: int = 1
    #: constructor settings a checkpoint must match (saved in the meta, checked on load)
    settings: tuple[str, ...] = ()
    #: entries of the population state that are [D] vectors (their shape is checked on load)
    vector_state: tuple[str, ...] = ()
    #: entries of the population state kept in the parameters' dtype (besides ``mean`` and
    #: ``best``): a checkpoint of another dtype is cast to it on load, as torch's optimizers
    #: cast their state; every other entry keeps its saved dtype (float64 by design)
    param_dtype_state: tuple[str, ...] = ()
    #: entries of the state (at any depth) whose form depends on the run (e.g. CMA-ES's
    #: termination reasons): a checkpoint need only have them
    free_form_state: tuple[str, ...] = ()
    #: what a non-finite loss becomes before ``_update``: ``"worst"`` (worse than every
    #: finite loss of the generation) or ``"inf"`` (for algorithms that compare with losses
    #: of earlier generations, e.g. DE's targets)
    nonfinite_loss: str = "worst"
    #: dtype of the losses ``_update`` receives (``None``: the parameters' dtype). CMA-ES
    #: asks for float64 so that pycma ranks and stops on unrounded fitness values.
    loss_dtype: torch.dtype | None = None
    #: ``_update`` receives the losses as a [P] float64 numpy array instead of a tensor
    #: (an update that runs in numpy, as pycma's: two conversions fewer per generation,
    #: each ~10 us right after the algorithm's own numpy work)
    numpy_update: bool = False
    takes_descriptors: bool = False  #: _update takes descriptors=[P, k] (quality diversity)
    plateau_invariant: bool = True  #: equal losses leave center and width (not MAP-Elites)

    def __init__(
        self,
        params,
        defaults: dict[str, Any],
        *,
        popsize: int | None,
        maximize: bool = False,
        seed: int | None = None,
    ):
        if popsize is not None:
            popsize = self._check_popsize(popsize)  # an int (a numpy integer becomes one)
        if not isinstance(maximize, bool):
            raise ValueError(f"Invalid maximize: {maximize!r} (expected True or False)")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"Invalid seed: {seed!r} (expected a non-negative integer or None)")
        self._check_group(dict(defaults), initial=True)
        self.maximize = maximize
        self.seed = secrets.randbits(63) if seed is None else seed
        self.layout: ParamLayout | None = None
        super().__init__(params, defaults)  # each group through add_param_group
        self._build_layout()
        self._popsize_arg = popsize
        #: members per generation (an algorithm that resizes its population, as CMA-ES's
        #: restarts do, changes it; :attr:`initial_popsize` stays the constructor's)
        self.popsize = self.initial_popsize = self._resolve_popsize()
        self._gen = torch.Generator(device=self._device)
        self._gen.manual_seed(self.seed)
        # the pending ask: (population, rows, aux) until tell
        self._pending: tuple[Population, Any, Any] | None = None
        # generator states around the pending ask, to rewind a failed generation
        self._rng_before_ask: list | None = None
        self._rng_after_ask: list | None = None
        self.last: Generation | None = None

    # ------------------------------------------------------ the contract: setup
    @classmethod
    def default_popsize(cls, num_params: int) -> int:
        """The population size when the constructor gets ``popsize=None``."""
        raise ValueError(
            f"Invalid popsize: None ({cls.__name__} has no default population size; "
            "pass popsize=)"
        )

    def _check_popsize(self, popsize) -> int:
        return check_int("popsize", popsize, minimum=max(self.min_popsize, 2 * self.mirrored),
                         even=self.mirrored, why=self.pairs_why)

    def _resolve_popsize(self) -> int:
        if self._popsize_arg is not None:
            return self._popsize_arg
        p = self.default_popsize(self.num_params)
        return p + p % 2 if self.mirrored else p

    def _check_group(self, group: dict[str, Any], *, initial: bool) -> None:
        """Hook: raise ``ValueError`` if a group's hyperparameters are invalid.
        ``initial``: True for the values given to the constructor or
        :meth:`add_param_group`, False for the values read at each ask (a scheduler may
        have set them: e.g. ``lr`` may anneal to 0, but not start there)."""

    def _group_added(self) -> None:
        """Hook: a group was added after construction (the layout is already rebuilt);
        raise ``ValueError`` to refuse it (the group is taken back out)."""

    # ------------------------------------------------------------------- state
    @property
    def _st(self) -> dict[str, Any]:
        st = self.state.get(STATE_KEY)
        if not st:
            mean = self.layout.flatten().clone()
            st = {"mean": mean, "generation": 0, "num_evals": 0,
                  "best_loss": math.nan, "best": mean.clone()}
            self._init_state(st, mean)
            self.state[STATE_KEY] = st
        return st

    @property
    def mean(self) -> Tensor:
        """The center of the search distribution, a [D] tensor."""
        return self._st["mean"]

    @property
    def generation(self) -> int:
        return self._st["generation"]

    @property
    def num_evals(self) -> int:
        return self._st["num_evals"]

    @property
    def best_loss(self) -> float:
        """Best loss seen so far (user's sign), NaN before the first generation."""
        return self._st["best_loss"]

    @property
    def best(self) -> Tensor:
        """The flat parameters of the best member seen so far."""
        return self._st["best"]

    def load_best_(self) -> None:
        """Copy the best member seen so far into the parameters."""
        self.layout.load_(self.best)

    @property
    def stopped(self) -> dict[str, Any]:
        """Why the optimizer has stopped for good: empty while it can go on, else
        ``{reason: value}`` (e.g. CMA-ES's termination criteria once its restarts are spent).
        Training loops end a run when it is non-empty. The base class never stops."""
        return {}

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:  # pragma: no cover
        """Fill the algorithm's entries of the fresh state ``st`` (``mean``: the center)."""
        raise NotImplementedError

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> tuple[Any, Any]:
        """Draw a generation from ``gen``: ``(rows, aux)`` with ``rows`` the [P, D] members
        (or a :class:`Population`) and ``aux`` what :meth:`_update` needs of this draw."""
        raise NotImplementedError  # pragma: no cover

    def _update(self, st: dict[str, Any], losses: Tensor, rows: Any, aux: Any) -> None:
        """Update ``st`` from ``losses`` ([P], to minimise, finite) of the members ``rows``
        that :meth:`_sample` drew with ``aux``."""
        raise NotImplementedError  # pragma: no cover

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self._gen, device=self._device, dtype=self._dtype)

    # ------------------------------------------------------------- ask / tell
    def ask(self) -> Population:
        """Sample a generation of ``popsize`` members from the current distribution.

        Step hooks fire once per generation whichever way it runs: the step pre-hooks
        (:meth:`register_step_pre_hook` and torch's global ones) here at ``ask`` -- called
        as ``hook(optimizer, (optimizer,), {})``, their return value ignored -- and the
        post-hooks at the end of a successful :meth:`tell`; :meth:`step` fires each once,
        as torch does (a failed generation fires no post-hook)."""
        for hook in (*global_hooks('pre'), *self._optimizer_step_pre_hooks.values()):
            hook(self, (self,), {})
        return self._ask()

    def tell(self, losses, descriptors=None) -> Tensor:
        """Update the distribution from one loss per member of the last :meth:`ask` (and,
        for a quality-diversity algorithm, ``descriptors`` [P, k], one row per member).

        Non-finite losses rank worst (with a warning). If every loss is non-finite, a
        ``ValueError`` is raised and the optimizer is left as it was before the
        :meth:`ask`: its state, the parameters (the center) and its random generators
        (the next :meth:`ask` draws what the abandoned one drew). The generation stays
        pending, so ``tell`` may be called again with finite losses.
        Returns the generation's mean loss (finite members) as a 0-dim tensor. Then the
        step post-hooks fire, as ``hook(optimizer, (optimizer, losses), {})`` (see
        :meth:`ask`).
        """
        out = self._tell(losses, descriptors)
        for hook in (*self._optimizer_step_post_hooks.values(), *global_hooks('post')):
            hook(self, (self, losses), {})
        return out

    def _generators(self) -> list[torch.Generator]:
        """The random generators a failed generation rewinds (their states are saved at
        every ask). The base class draws from ``self._gen`` only; a subclass that draws
        from more generators extends the list."""
        return [self._gen]

    @no_grad
    def _ask(self) -> Population:
        self._check_frozen_unchanged()
        for g in self.param_groups:  # read every generation: a bad value must not reach st
            self._check_group(g, initial=False)
        st = self._st
        rng = [(g, g.get_state()) for g in self._generators()]
        try:
            drawn = self._sample(st, self._gen)
            if not (isinstance(drawn, tuple) and len(drawn) == 2):
                raise TypeError(
                    f"{type(self).__name__}._sample must return (rows, aux), got "
                    f"{type(drawn).__name__} (see evoopt.population's algorithm contract)"
                )
        except BaseException:
            set_rng(rng)
            raise
        rows, aux = drawn
        pop = rows if isinstance(rows, Population) else Population(rows, self.layout)
        self._pending = (pop, rows, aux)
        self._rng_before_ask, self._rng_after_ask = rng, None
        return pop

    def _rewind(self, keep_pending: bool) -> None:
        """Undo a generation that failed: the parameters back to the center and the
        generators back to their state before the ask. With ``keep_pending`` the asked
        population stays pending (a later successful ``tell`` moves the generators forward
        again), else it is dropped."""
        if self._rng_before_ask is not None:
            if keep_pending and self._rng_after_ask is None:
                self._rng_after_ask = [(g, g.get_state()) for g, _ in self._rng_before_ask]
            set_rng(self._rng_before_ask)
        if not keep_pending:
            self._pending = None
            self._rng_before_ask = self._rng_after_ask = None
        st = self.state.get(STATE_KEY)
        if st:
            self.layout.load_(st["mean"])

    @no_grad
    def _tell(self, losses, descriptors=None) -> Tensor:
        if self._pending is None:
            raise RuntimeError(f"{type(self).__name__}.tell() called without a pending ask()")
        pop, rows, aux = self._pending
        P = len(pop)
        arr = check_losses(losses, P)
        losses, vals = torch.from_numpy(arr), arr.tolist()
        kw = descriptor_kwargs(self, pop, descriptors, losses) if (
            descriptors is not None or self.takes_descriptors) else {}
        dtype = self.loss_dtype or self._dtype
        try:
            u, bi, mean_loss, nbad = utilities(vals, self.maximize, dtype, self.nonfinite_loss)
        except AllNonFinite:
            self._rewind(keep_pending=True)
            raise ValueError(
                f"all {P} losses of generation {self.generation} are NaN or infinite; "
                "the optimizer's state is unchanged (check the objective)"
            ) from None
        if not self.numpy_update:
            u = torch.from_numpy(u)
            if dtype != torch.float64 or not self._on_cpu:
                u = u.to(device=self._device, dtype=dtype)
        # the tensors of the record are made before the update: right after the algorithm's
        # numpy work (pycma's) the first torch call costs ~10 us, the ones after it ~1 us
        out = torch.from_numpy(np.array(mean_loss, dtype=np.float64))  # 0-dim
        st = self._st
        best = self._if_best(st, pop, vals[bi], bi)
        self._update(st, u, rows, aux, **kw)
        self._pending = None
        if self._rng_after_ask is not None:  # told again after a failed tell
            set_rng(self._rng_after_ask)
        self._rng_before_ask = self._rng_after_ask = None
        self._record(st, P, losses, vals[bi], bi, mean_loss, nbad, best)
        self.layout.load_(st["mean"])
        return out

    def _if_best(self, st, pop: Population, gen_best: float, bi: int) -> Tensor | None:
        """A copy of member ``bi`` if its loss ``gen_best`` beats the best so far, else None."""
        prev = st["best_loss"]
        if not (math.isnan(prev) or (gen_best > prev if self.maximize else gen_best < prev)):
            return None
        flat = pop.flat if type(pop) is Population else None
        if flat is not None and _numpy_ok(flat) and not flat.requires_grad:
            return torch.from_numpy(flat.numpy()[bi].copy())  # no torch dispatch
        return pop.row(bi).clone()  # (a factored population materialises the one member)

    def _record(self, st, P: int, losses: Tensor, gen_best: float, bi: int, mean_loss: float,
                nbad: int, best: Tensor | None) -> None:
        """The counters, the best member so far and :attr:`last`, after an update."""
        st["generation"] += 1
        st["num_evals"] += P
        if best is not None:
            st["best_loss"], st["best"] = gen_best, best
        self.last = Generation(
            generation=st["generation"], losses=losses, mean_loss=mean_loss,
            best_loss=gen_best, best_index=bi, num_evals=st["num_evals"], num_nonfinite=nbad,
        )

    # ------------------------------------------------------------------ step
    def _patch_step_function(self) -> None:
        """torch wraps every optimizer class's ``step`` in ``profile_hook_step``: the step
        hooks and a profiler ``record_function`` per call, tens of microseconds (a fifth of
        a pycma generation at n = 10). :meth:`step` fires the hooks itself, as that wrapper
        does, and records the profiler range only while a profiler runs."""
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"

    def step(self, closure: Callable | None = None) -> Tensor:  # type: ignore[override]
        """One generation: ask, evaluate ``closure``, tell. Returns the mean loss (0-dim).

        ``closure`` is either a torch-style zero-argument closure (called once per member
        under ``torch.no_grad()``, with the member loaded into the parameters) or a
        population objective (called once with the :class:`Population`). The step hooks
        fire around it as torch's optimizers fire them (a pre-hook may return new
        ``(args, kwargs)``); a failed generation fires no post-hook.
        """
        args, kwargs = (self, closure), {}
        for hook in (*global_hooks("pre"), *self._optimizer_step_pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(
                        f"a step pre-hook returned {result!r} (expected None or a tuple "
                        "(new_args, new_kwargs))"
                    )
                args, kwargs = result
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        if profiler_enabled():
            name = f"Optimizer.step#{type(self).__name__}.step"
            with torch.autograd.profiler.record_function(name):
                out = self._step(closure)
                self._optimizer_step_code()
        else:
            out = self._step(closure)
        for hook in (*self._optimizer_step_post_hooks.values(), *global_hooks("post")):
            hook(self, args, kwargs)
        return out

    def _step(self, closure: Callable | None) -> Tensor:
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step() needs a closure: a zero-argument function "
                "returning the loss, or a population objective returning one loss per member"
            )
        pop = self._ask()
        try:
            if is_population_objective(closure):
                out = closure(pop)
            else:
                out = evaluate_members(closure, pop, self.layout, type(self).__name__)
            return self._tell(*split_descriptors(out))
        except BaseException:  # a failed generation leaves the optimizer as it was
            self._rewind(keep_pending=False)
            raise
