r"""The base of every population optimizer: a :class:`torch.optim.Optimizer` with
``ask`` / ``tell`` / ``step``.

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

Subclasses implement three hooks::

    _init_state(st, mean)       # fill the algorithm's entries of the state dict `st`
    _sample(st, gen) -> [P, D]  # draw the members; keep what tell needs in self._pending
    _update(st, u)              # update st from u: P losses to minimise (finite)

Everything an algorithm needs to resume lives in ``st = self.state["population"]``:
tensors and plain Python values only, so ``torch.load(weights_only=True)`` reads a
checkpoint back. (A non-parameter key keeps torch from casting the state to the
parameters' dtype on load.)
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import secrets
import types
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim import optimizer as _torch_optimizer

from ._validation import check_int

__all__ = ["PopulationOptimizer", "Population", "ParamLayout", "Generation", "is_population_objective"]

STATE_KEY = "population"
META_KEY = "evoopt"

#: Grad mode as a plain call (no context object per call: around pycma at n = 10 each costs
#: microseconds). ``torch._C._set_grad_enabled`` is private: fall back to the public class.
_set_grad_enabled = getattr(torch._C, "_set_grad_enabled", torch.set_grad_enabled)


def _global_hooks(kind: str) -> list:
    """torch's global step hooks (``register_optimizer_step_{pre,post}_hook``); their
    registry is private, so a torch without it has none to fire."""
    return list(getattr(_torch_optimizer, f"_global_optimizer_{kind}_hooks", {}).values())


def _no_grad(fn):
    """``torch.no_grad()`` as a decorator, without its per-call context objects (ask/tell
    run every generation; around pycma each object costs microseconds)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        prev = torch.is_grad_enabled()
        _set_grad_enabled(False)
        try:
            return fn(*args, **kwargs)
        finally:
            _set_grad_enabled(prev)

    return wrapper


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
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.load_(flat)
        if len(self.params) == 1:  # the common black-box case: skip the split
            p = self.params[0]
            if _numpy_ok(p) and _numpy_ok(flat) and p.dtype == flat.dtype and p.is_contiguous():
                np.copyto(p.data.numpy().reshape(-1), flat.numpy())  # in place, no dispatch
            else:
                p.copy_(flat.view(self.shapes[0]))
            return
        for p, v in zip(self.params, self.unflatten(flat)):
            p.copy_(v)

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


def is_population_objective(fn: Callable) -> bool:
    """True if ``fn`` takes the population as an argument, False for a torch closure.

    A callable can say so explicitly with an attribute ``is_population_objective``;
    otherwise one required positional parameter means a population objective.
    """
    flag = getattr(fn, "is_population_objective", None)
    if flag is not None:
        return bool(flag)
    if type(fn) is types.FunctionType and not {"__wrapped__", "__signature__"} & fn.__dict__.keys():
        # a plain function (the common case, checked every step): its code object says it
        # without inspect.signature, which costs tens of microseconds
        return fn.__code__.co_argcount - len(fn.__defaults__ or ()) >= 1
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required) >= 1


class PopulationOptimizer(Optimizer):
    """Base class: see the module docstring for the contract.

    Args:
        params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
        defaults: per-group hyperparameters (validated by the subclass).
        popsize: number of members per generation.
        maximize: maximise the objective instead of minimising it.
        seed: seed of the optimizer's private :class:`torch.Generator` (``None``: a
            random seed from the OS; the global RNGs are never touched).
    """

    #: True when members come in antithetic pairs (+eps, -eps): popsize must be even.
    mirrored: bool = False
    #: constructor settings a checkpoint must match (saved in the meta, checked on load)
    settings: tuple[str, ...] = ()
    #: entries of the population state that are [D] vectors (their shape is checked on load)
    vector_state: tuple[str, ...] = ()
    #: entries of the population state kept in the parameters' dtype (besides ``mean`` and
    #: ``best``): a checkpoint of another dtype is cast to it on load, as torch's optimizers
    #: cast their state; every other entry keeps its saved dtype (float64 by design)
    param_dtype_state: tuple[str, ...] = ()
    #: dtype of the losses ``_update`` receives (``None``: the parameters' dtype). CMA-ES
    #: asks for float64 so that pycma ranks and stops on unrounded fitness values.
    loss_dtype: torch.dtype | None = None

    def __init__(
        self,
        params,
        defaults: dict[str, Any],
        *,
        popsize: int,
        maximize: bool = False,
        seed: int | None = None,
    ):
        self.popsize = check_int("popsize", popsize, minimum=2 if self.mirrored else 1,
                                 even=self.mirrored, why="mirrored sampling draws pairs")
        if not isinstance(maximize, bool):
            raise ValueError(f"Invalid maximize: {maximize!r} (expected True or False)")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"Invalid seed: {seed!r} (expected a non-negative integer or None)")
        self.maximize = maximize
        self.seed = secrets.randbits(63) if seed is None else seed
        super().__init__(params, defaults)
        self._build_layout()
        self._gen = torch.Generator(device=self._device)
        self._gen.manual_seed(self.seed)
        self._pending: dict[str, Any] | None = None
        self._pending_pop: Population | None = None
        # generator states around the pending ask, to rewind a failed generation
        self._rng_before_ask: list | None = None
        self._rng_after_ask: list | None = None
        self.last: Generation | None = None

    # ------------------------------------------------------------------ layout
    def _build_layout(self) -> None:
        """The search vector: every parameter of every group but the frozen ones, in
        order. A frozen parameter (an ``nn.Parameter`` with ``requires_grad=False``) is left
        out and never written, as torch's optimizers leave it alone; a plain tensor is
        always searched (tensors default to ``requires_grad=False``: a black-box vector).
        The set is fixed here (see :meth:`ask`)."""
        params, names, searched, flags = [], [], [], []
        count = 0
        for g in self.param_groups:
            gnames = g.get("param_names")
            searched.append([])
            for pi, p in enumerate(g["params"]):
                name = gnames[pi] if gnames else str(count)
                count += 1
                flags.append(_is_searched(p))
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
                raise ValueError(f"Invalid parameter {n!r}: dtype {p.dtype} (expected a floating point dtype)")
            if p.device != dev or p.dtype != dt:
                raise ValueError(
                    f"Invalid parameter {n!r}: {p.dtype} on {p.device}, but the first parameter is "
                    f"{dt} on {dev} (expected all parameters on one device with one dtype)"
                )
        self.layout = ParamLayout(params, names)
        self._device, self._dtype = dev, dt
        self._searched, self._requires_grad = searched, flags
        # coordinate slice [a, b) of each group in the flat vector
        self._group_slices = []
        a = 0
        for group_params in searched:
            b = a + sum(p.numel() for p in group_params)
            self._group_slices.append((a, b))
            a = b

    def _check_frozen_unchanged(self) -> None:
        """The search vector is fixed when the optimizer is built: a parameter frozen or
        unfrozen since then would be written against the user's intent or never searched."""
        flags = [_is_searched(p) for g in self.param_groups for p in g["params"]]
        if flags == self._requires_grad:
            return
        params = [p for g in self.param_groups for p in g["params"]]
        i = next(i for i, (a, b) in enumerate(zip(flags, self._requires_grad)) if a != b)
        names = [n for g in self.param_groups for n in (g.get("param_names") or [])]
        name = names[i] if names else str(i)
        change = "frozen (requires_grad=False)" if not flags[i] else "unfrozen (requires_grad=True)"
        raise ValueError(
            f"Invalid parameter {name!r} (shape {tuple(params[i].shape)}): {change} after "
            f"{type(self).__name__} was built; the search vector is fixed at construction. "
            "Restore requires_grad, or build a new optimizer over the parameters to search"
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "layout", None) is not None and self.state.get(STATE_KEY):
            raise ValueError(
                f"{type(self).__name__}: cannot add a param group after the first generation "
                "(the search distribution is already built); add all groups before stepping"
            )
        super().add_param_group(param_group)
        if getattr(self, "layout", None) is not None:
            try:
                self._build_layout()
            except ValueError:  # refused (dtype, device, ...): leave the optimizer as it was
                self.param_groups.pop()
                self._build_layout()
                raise

    @property
    def num_params(self) -> int:
        """D, the length of the flat search vector."""
        return self.layout.num_params

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

    # ----------------------------------------------------------------- hooks
    def _init_state(self, st: dict[str, Any], mean: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _sample(self, st: dict[str, Any], gen: torch.Generator) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _update(self, st: dict[str, Any], u: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

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
        for hook in (*_global_hooks('pre'), *self._optimizer_step_pre_hooks.values()):
            hook(self, (self,), {})
        return self._ask()

    def tell(self, losses) -> Tensor:
        """Update the distribution from one loss per member of the last :meth:`ask`.

        Non-finite losses rank worst (with a warning). If every loss is non-finite, a
        ``ValueError`` is raised and the optimizer is left as it was before the
        :meth:`ask`: its state, the parameters (the center) and its random generators
        (the next :meth:`ask` draws what the abandoned one drew). The generation stays
        pending, so ``tell`` may be called again with finite losses.
        Returns the generation's mean loss (finite members) as a 0-dim tensor. Then the
        step post-hooks fire, as ``hook(optimizer, (optimizer, losses), {})`` (see
        :meth:`ask`).
        """
        out = self._tell(losses)
        for hook in (*self._optimizer_step_post_hooks.values(), *_global_hooks('post')):
            hook(self, (self, losses), {})
        return out

    def _generators(self) -> list[torch.Generator]:
        """The random generators a failed generation rewinds (their states are saved at
        every ask). The base class draws from ``self._gen`` only; a subclass that draws
        from more generators (or keeps other ask-time state) extends the rewind."""
        return [self._gen]

    @_no_grad
    def _ask(self) -> Population:
        self._check_frozen_unchanged()
        st = self._st
        rng = [(g, g.get_state()) for g in self._generators()]
        try:
            flat = self._sample(st, self._gen)
        except BaseException:
            _set_rng(rng)
            raise
        # a Population from _sample (a factored one) is used as it is
        self._pending_pop = flat if isinstance(flat, Population) else Population(flat, self.layout)
        self._rng_before_ask, self._rng_after_ask = rng, None
        return self._pending_pop

    def _rewind(self, keep_pending: bool) -> None:
        """Undo a generation that failed: the parameters back to the center and the
        generators back to their state before the ask. With ``keep_pending`` the asked
        population stays pending (a later successful ``tell`` moves the generators forward
        again), else it is dropped."""
        if self._rng_before_ask is not None:
            if keep_pending and self._rng_after_ask is None:
                self._rng_after_ask = [(g, g.get_state()) for g, _ in self._rng_before_ask]
            _set_rng(self._rng_before_ask)
        if not keep_pending:
            self._pending_pop = self._pending = None
            self._rng_before_ask = self._rng_after_ask = None
        st = self.state.get(STATE_KEY)
        if st:
            self.layout.load_(st["mean"])

    @_no_grad
    def _tell(self, losses) -> Tensor:
        if self._pending_pop is None:
            raise RuntimeError(f"{type(self).__name__}.tell() called without a pending ask()")
        pop = self._pending_pop
        P = len(pop)
        losses = self._check_losses(losses, P)
        # bookkeeping in plain Python / numpy: after an algorithm's numpy work (pycma) each
        # small torch op costs 10-25 us, which is most of tell's overhead around pycma
        vals = losses.numpy().tolist()
        finite = [math.isfinite(v) for v in vals]
        nbad = P - sum(finite)
        if nbad == P:
            self._rewind(keep_pending=True)
            raise ValueError(
                f"all {P} losses of generation {self.generation} are NaN or infinite; "
                "the optimizer's state is unchanged (check the objective)"
            )
        uvals = [-v for v in vals] if self.maximize else list(vals)
        if nbad:
            warnings.warn(
                f"{nbad} of {P} losses are NaN or infinite; those members rank worst",
                RuntimeWarning,
                stacklevel=3,
            )
            good = [v for v, f in zip(uvals, finite) if f]
            if not math.isfinite(max(good) + max(max(good) - min(good), 1.0)):
                # beyond float64's range: every algorithm is invariant to a positive scale
                uvals, good = [v / 4 for v in uvals], [v / 4 for v in good]
            worst = max(good) + max(max(good) - min(good), 1.0)
            uvals = [v if f else worst for v, f in zip(uvals, finite)]
        bi = min(range(P), key=uvals.__getitem__)  # non-finite members are strictly worse
        gen_best = vals[bi]
        mean_loss = sum(v for v, f in zip(vals, finite) if f) / (P - nbad)
        unp = np.array(uvals, dtype=np.float64)
        dtype = self.loss_dtype or self._dtype
        if dtype != torch.float64:
            # finite losses beyond the parameters' dtype would become inf in the cast: scale
            # them by a power of two (every algorithm is invariant to a positive scale --
            # ranks, or raw values divided by their spread)
            limit = torch.finfo(dtype).max / (4 * P)
            big = float(np.abs(unp).max())
            if big > limit:
                unp = unp * 2.0 ** math.floor(math.log2(limit / big))
        u = torch.from_numpy(unp)
        if dtype != torch.float64 or self._device.type != "cpu":
            u = u.to(device=self._device, dtype=dtype)
        st = self._st
        self._update(st, u)
        self._pending_pop = None
        self._pending = None
        if self._rng_after_ask is not None:  # told again after a failed tell
            _set_rng(self._rng_after_ask)
        self._rng_before_ask = self._rng_after_ask = None

        st["generation"] += 1
        st["num_evals"] += P
        prev = st["best_loss"]
        if math.isnan(prev) or (gen_best > prev if self.maximize else gen_best < prev):
            st["best_loss"] = gen_best
            if type(pop) is not Population:  # factored: rebuild the one member
                st["best"] = pop.row(bi)
            elif _numpy_ok(pop.flat) and not pop.flat.requires_grad:  # a numpy copy: no dispatch
                st["best"] = torch.from_numpy(pop.flat.numpy()[bi].copy())
            else:
                st["best"] = pop.flat[bi].clone()
        self.last = Generation(
            generation=st["generation"], losses=losses, mean_loss=mean_loss,
            best_loss=gen_best, best_index=bi, num_evals=st["num_evals"], num_nonfinite=nbad,
        )
        self.layout.load_(st["mean"])
        return torch.from_numpy(np.array(mean_loss, dtype=np.float64))  # 0-dim, cheaper than torch.tensor

    def _check_losses(self, losses, P: int) -> Tensor:
        """Losses as a [P] float64 CPU tensor. Real numbers of any dtype are accepted
        (floating or integer, tensors, numpy arrays or lists alike); booleans and complex
        numbers are refused (a mask is not a loss)."""
        if (type(losses) is Tensor and losses.is_cpu and losses.dtype == torch.float64
                and not losses.requires_grad and losses.shape == (P,)):
            return torch.from_numpy(losses.numpy().copy())  # the common case, fewest torch calls
        if not isinstance(losses, Tensor):
            if _has_bools(losses):
                raise ValueError(
                    "Invalid losses: booleans (expected one real loss per member; a 0-1 loss "
                    "is a number: convert it, e.g. mask.float())"
                )
            try:
                losses = torch.as_tensor(losses, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"Invalid losses: could not convert {type(losses).__name__} to a tensor ({e})") from None
        losses = losses.detach()
        if losses.dim() == 2 and losses.shape[1] == 1:
            losses = losses[:, 0]
        if losses.shape != (P,):
            raise ValueError(
                f"Invalid losses: shape {tuple(losses.shape)} (expected ({P},), one loss per member)"
            )
        if losses.dtype == torch.bool or losses.is_complex():
            hint = "; for a 0-1 loss convert the mask, e.g. mask.float()" * (
                losses.dtype == torch.bool)
            raise ValueError(
                f"Invalid losses: dtype {losses.dtype} (expected a real dtype, floating or "
                f"integer{hint})"
            )
        if losses.dtype == torch.float64 and losses.device.type == "cpu":
            return torch.from_numpy(losses.numpy().copy())  # one numpy copy: cheaper than .to
        return losses.to(dtype=torch.float64, device="cpu")

    # ------------------------------------------------------------------ step
    def step(self, closure: Callable | None = None) -> Tensor:  # type: ignore[override]
        """One generation: ask, evaluate ``closure``, tell. Returns the mean loss (0-dim).

        ``closure`` is either a torch-style zero-argument closure (called once per member
        under ``torch.no_grad()``, with the member loaded into the parameters) or a
        population objective (called once with the :class:`Population`).
        """
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step() needs a closure: a zero-argument function "
                "returning the loss, or a population objective returning one loss per member"
            )
        pop = self._ask()
        try:
            if is_population_objective(closure):
                losses = closure(pop)
            else:
                losses = self._evaluate_members(closure, pop)
            return self._tell(losses)
        except BaseException:  # a failed generation leaves the optimizer as it was
            self._rewind(keep_pending=False)
            raise

    def _evaluate_members(self, closure: Callable, pop: Population) -> Tensor:
        """Load each member into the parameters and call the closure; a member whose
        closure raises gets a NaN loss (so it ranks worst) unless every member raises.
        A closure that returns no loss, or that calls ``backward`` unguarded, is refused
        at the first member (the same for every member)."""
        # per member: no context-manager objects or small tensor ops (each costs microseconds,
        # the whole generation of pycma at n = 10 costs a few hundred); grad mode is set
        # before every call, as a no_grad block per call would
        out = [math.nan] * pop.popsize
        first_error = None
        load = (self.layout.member_loader(pop.flat) if type(pop) is Population
                else lambda i: self.layout.load_(pop.row(i)))  # factored: one member at a time
        prev = torch.is_grad_enabled()
        try:
            for i in range(pop.popsize):
                _set_grad_enabled(False)
                load(i)
                try:
                    loss = closure()
                except RuntimeError as e:
                    if _NO_GRAD_BACKWARD in str(e):
                        raise RuntimeError(_BACKWARD_FIX.format(type(self).__name__)) from e
                    first_error = first_error or e
                    continue
                except Exception as e:  # noqa: BLE001 - one failing member must not lose the run
                    first_error = first_error or e
                    continue
                out[i] = _closure_loss(loss)
        finally:
            _set_grad_enabled(prev)
        out = torch.from_numpy(np.array(out, dtype=np.float64))
        if first_error is not None:
            if torch.isnan(out).all():
                raise first_error
            warnings.warn(
                f"the closure raised for some members ({type(first_error).__name__}: {first_error}); "
                "they rank worst", RuntimeWarning, stacklevel=3,
            )
        return out

    # ---------------------------------------------------------------- pickle
    def __getstate__(self) -> dict[str, Any]:
        """Everything in ``__dict__`` (torch's ``Optimizer.__getstate__`` keeps only
        ``defaults``, ``state`` and ``param_groups``, which loses the layout and the RNG),
        with every :class:`torch.Generator` attribute replaced by its state (generators
        cannot be pickled) and the step hooks left out, as torch leaves them out. A subclass
        with unpicklable attributes of its own overrides :meth:`_getstate_extra`."""
        d = {k: v for k, v in self.__dict__.items() if k not in _HOOK_DICTS}
        for k, v in d.items():
            if isinstance(v, torch.Generator):
                d[k] = _GeneratorState(str(v.device), v.get_state())
        return self._getstate_extra(d)

    def _getstate_extra(self, d: dict[str, Any]) -> dict[str, Any]:
        """Hook for subclasses: adjust the pickled ``__dict__`` ``d`` (already a copy) and
        return it; :meth:`__setstate__` restores generators and hooks, then calls
        :meth:`_setstate_extra`."""
        return d

    def _setstate_extra(self) -> None:
        """Hook for subclasses: rebuild what :meth:`_getstate_extra` left out."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for k, v in state.items():
            if isinstance(v, _GeneratorState):
                state[k] = v.restore()
        super().__setstate__(state)  # torch: the hook dicts, the step wrapper
        self._setstate_extra()

    # ------------------------------------------------------------- state_dict
    def _meta(self) -> dict[str, Any]:
        return {
            "optimizer": type(self).__name__,
            "num_params": self.num_params,
            "shapes": [list(s) for s in self.layout.shapes],
            "popsize": self.popsize,
            "maximize": self.maximize,
            "seed": self.seed,
            "rng": self._checkpoint_rng(),
            **{key: getattr(self, key) for key in self.settings},
        }

    def _checkpoint_rng(self) -> Tensor:
        """The generator state a checkpoint records. Between ask and tell it is the state
        before that ask: a checkpoint never holds half a generation (the pending one is not
        saved), so a run resumed from it asks that generation again and draws the same
        members; a failed tell, which rewinds the generator, leaves the checkpoint as it was."""
        for gen, state in self._rng_before_ask or ():
            if gen is self._gen:
                return state.clone()
        return self._gen.get_state()

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["state"] = _clone_tree(sd["state"])
        sd[META_KEY] = self._meta()
        return sd

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        load = cls.load_state_dict  # every override (mixins included) is all-or-nothing too
        if not getattr(load, "_all_or_nothing", False):
            cls.load_state_dict = _all_or_nothing(load)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected an optimizer state_dict, got {type(state_dict).__name__}")
        meta = state_dict.get(META_KEY)
        if not isinstance(meta, dict):
            raise ValueError(
                f"{name}.load_state_dict: this state_dict was not saved by an evoopt population "
                "optimizer (no 'evoopt' dict entry)"
            )
        if meta.get("optimizer") != name:
            raise ValueError(
                f"{name}.load_state_dict: the state_dict was saved by {meta.get('optimizer')!r}, not {name!r}"
            )
        shapes = [list(s) for s in self.layout.shapes]
        if meta.get("shapes") != shapes:
            raise ValueError(
                f"{name}.load_state_dict: parameter shapes differ: saved {meta.get('shapes')}, "
                f"this optimizer has {shapes}"
            )
        for key in ("popsize", "maximize", *self.settings):
            if meta.get(key) != getattr(self, key):
                raise ValueError(
                    f"{name}.load_state_dict: saved {key}={meta.get(key)!r}, this optimizer has "
                    f"{key}={getattr(self, key)!r}"
                )
        self._check_loaded_structure(state_dict, meta)
        if self.state.get(STATE_KEY) and state_dict.get("state", {}).get(STATE_KEY):
            # both have run: the saved state must look like this optimizer's own (same config)
            mine = self.state_dict()
            for key in ("state", META_KEY):
                _check_like(mine[key], state_dict.get(key), f"{name}.load_state_dict: saved {key!r}")
        st = state_dict.get("state", {}).get(STATE_KEY)
        if st:
            mean = st.get("mean")
            if not isinstance(mean, Tensor) or mean.shape != (self.num_params,):
                raise ValueError(
                    f"{name}.load_state_dict: saved mean has shape "
                    f"{getattr(mean, 'shape', None)}, expected ({self.num_params},)"
                )
            self._check_loaded_entries(st)
            self._check_loaded_state(st)
        rng = meta.get("rng")
        sd = {k: v for k, v in state_dict.items() if k != META_KEY}
        sd["state"] = _clone_tree(sd.get("state", {}))
        super().load_state_dict(sd)
        if STATE_KEY in self.state:
            st = self.state[STATE_KEY] = _to_device(self.state[STATE_KEY], self._device)
            for key in ("mean", "best", *self.param_dtype_state):
                if isinstance(st.get(key), Tensor):
                    st[key] = st[key].to(self._dtype)
        self.seed = meta.get("seed", self.seed)
        if isinstance(rng, Tensor):
            self._gen.set_state(rng.cpu())
        self._pending_pop = None
        self._pending = None
        self._rng_before_ask = self._rng_after_ask = None
        if STATE_KEY in self.state:
            self.layout.load_(self.state[STATE_KEY]["mean"])

    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        """Checks the :attr:`vector_state` entries; subclasses extend it for other
        algorithm-specific entries (raise ValueError if wrong)."""
        D = self.num_params
        for key in self.vector_state:
            v = st.get(key)
            if not isinstance(v, Tensor) or v.shape != (D,):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: saved {key} has shape "
                    f"{getattr(v, 'shape', None)}, expected ({D},)"
                )

    def _check_loaded_structure(self, state_dict: dict[str, Any], meta) -> None:
        """Types of the containers, the RNG state and the groups' hyperparameters, checked
        before anything is changed (a failed load leaves the optimizer as it was)."""
        name = type(self).__name__
        state = state_dict.get("state", {})
        if not isinstance(state, dict) or not isinstance(state.get(STATE_KEY, {}), dict):
            raise ValueError(f"{name}.load_state_dict: 'state' and its {STATE_KEY!r} entry must be dicts")
        groups = state_dict["param_groups"]
        if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                                   for g in groups):
            raise ValueError(f"{name}.load_state_dict: 'param_groups' must be a list of dicts with 'params'")
        seed = meta.get("seed", self.seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{name}.load_state_dict: saved seed {seed!r} is not a non-negative integer")
        rng = meta.get("rng")
        if rng is not None:
            want = self._gen.get_state()
            if not isinstance(rng, Tensor) or rng.dtype != torch.uint8 or rng.shape != want.shape:
                raise ValueError(
                    f"{name}.load_state_dict: saved rng is not a generator state (expected a uint8 "
                    f"tensor of shape {tuple(want.shape)}, got {getattr(rng, 'dtype', type(rng).__name__)} "
                    f"{tuple(getattr(rng, 'shape', ()))})"
                )
        for i, (mine, saved) in enumerate(zip(self.param_groups, groups)):
            for key, value in mine.items():
                if key in _SCHEDULER_KEYS or not (value is None or _is_real(value)):
                    continue
                if key not in saved:
                    raise ValueError(f"{name}.load_state_dict: param group {i} lacks {key!r}")
                got = saved[key]
                if value is None and got is None:
                    continue
                if not _is_real(got) or math.isnan(got) or ((value is None or value >= 0) and got < 0):
                    raise ValueError(
                        f"{name}.load_state_dict: param group {i} has {key}={got!r} (expected a number"
                        f"{' >= 0' if value is None or value >= 0 else ''}, like this optimizer's {value!r})"
                    )

    def _check_loaded_entries(self, st: dict[str, Any]) -> None:
        """The common entries of a saved population state, and every entry this optimizer's
        own state has (same kind; tensors of the same shape and finite)."""
        name = type(self).__name__
        for key in ("generation", "num_evals"):
            v = st.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}.load_state_dict: saved {key} {v!r} is not a non-negative integer")
        if not _is_real(st.get("best_loss")):
            raise ValueError(f"{name}.load_state_dict: saved best_loss {st.get('best_loss')!r} is not a number")
        mine = dict(self.state.get(STATE_KEY) or {})
        mine.setdefault("best", self.layout.flatten())
        mine.setdefault("mean", mine["best"])
        for key, ref in mine.items():
            if key not in st:
                raise ValueError(f"{name}.load_state_dict: the saved state lacks {key!r}")
            v = st[key]
            if isinstance(ref, Tensor):
                if not isinstance(v, Tensor) or v.shape != ref.shape:
                    raise ValueError(
                        f"{name}.load_state_dict: saved {key} is {type(v).__name__} of shape "
                        f"{tuple(getattr(v, 'shape', ()))}, expected a tensor of shape {tuple(ref.shape)}"
                    )
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    raise ValueError(f"{name}.load_state_dict: saved {key} has NaN or infinite entries")
            elif isinstance(ref, bool) and not isinstance(v, bool):
                raise ValueError(f"{name}.load_state_dict: saved {key}={v!r} (expected True or False)")
            elif _is_real(ref) and not isinstance(ref, bool) and not _is_real(v):
                raise ValueError(f"{name}.load_state_dict: saved {key}={v!r} (expected a number)")


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


#: group keys a checkpoint need not have: the parameters, and what schedulers add
_SCHEDULER_KEYS = ("params", "param_names", "initial_lr", "initial_sigma")


_NO_GRAD_BACKWARD = "does not require grad and does not have a grad_fn"
_BACKWARD_FIX = (
    "the closure calls loss.backward(), but {} evaluates it under torch.no_grad() (an "
    "evolution strategy needs no gradients), so the loss has no graph. Guard the call: "
    "`if torch.is_grad_enabled(): loss.backward()` -- the same closure then works with "
    "torch's optimizers too"
)


def _closure_loss(loss) -> float:
    """The number a torch closure returned: a one-element tensor or a real number."""
    if isinstance(loss, Tensor):
        if loss.numel() != 1 or loss.dtype == torch.bool or loss.is_complex():
            raise ValueError(
                f"Invalid closure: it returned a {loss.dtype} tensor of shape "
                f"{tuple(loss.shape)} (expected the loss as a scalar: reduce it, e.g. "
                "loss.mean(), or pass a population objective that returns one loss per member)"
            )
        return float(loss)
    if isinstance(loss, numbers.Real) and not isinstance(loss, (bool, np.bool_)):
        return float(loss)
    what = "None" if loss is None else f"a {type(loss).__name__}"
    raise ValueError(
        f"Invalid closure: it returned {what} (expected the loss, a 0-dim tensor or a number: "
        "end the closure with `return loss`)"
    )


def _has_bools(x) -> bool:
    """True for a numpy bool array or a list/tuple holding a bool (not a loss)."""
    if isinstance(x, np.ndarray):
        return x.dtype == np.bool_
    return isinstance(x, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in x)


def _is_searched(p: Tensor) -> bool:
    """False for a frozen parameter: an ``nn.Parameter`` with ``requires_grad=False``."""
    return p.requires_grad or not isinstance(p, torch.nn.Parameter)


def _set_rng(states: list) -> None:
    for gen, state in states:
        gen.set_state(state)


#: torch's per-instance hook registries: never pickled (hooks are often lambdas), as in torch
_HOOK_DICTS = frozenset({
    "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
})


@dataclass
class _GeneratorState:
    """A pickled :class:`torch.Generator`: its device and state."""

    device: str
    state: Tensor

    def restore(self) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.set_state(self.state)
        return gen


def _rms(v: Tensor) -> float:
    """Root-mean-square of a tensor's entries, as a float."""
    v = v.detach().to(torch.float64)
    return float(torch.sqrt(torch.mean(v * v)))


def _kind(t: Tensor) -> str:
    return "float" if t.is_floating_point() else "complex" if t.is_complex() else str(t.dtype)


def _check_like(mine, saved, where: str, groups: bool = False) -> None:
    """``saved`` has the structure of ``mine`` (an own state_dict entry): the same keys, lists
    of the same length element by element, tensors of the same kind and number of dims (not
    shape: CMA-ES restarts resize some arrays), numbers for numbers, no NaN/inf where
    ``mine`` is finite, and in (inner optimizers') param groups None or a number where
    ``mine`` is None. Raises ValueError naming the first difference."""
    if isinstance(mine, dict):
        if not isinstance(saved, dict):
            raise ValueError(f"{where} is {type(saved).__name__}, expected a dict")
        for k, v in mine.items():
            if k not in saved:
                raise ValueError(f"{where} lacks {k!r}")
            _check_like(v, saved[k], f"{where}[{k!r}]", groups or k == "param_groups")
    elif isinstance(mine, (list, tuple)):
        if not isinstance(saved, (list, tuple)):
            raise ValueError(f"{where} is {type(saved).__name__}, expected a list")
        if len(mine) == len(saved):
            for i, (a, b) in enumerate(zip(mine, saved)):
                _check_like(a, b, f"{where}[{i}]", groups)
    elif isinstance(mine, Tensor):
        if not isinstance(saved, Tensor) or saved.dim() != mine.dim() or _kind(saved) != _kind(mine):
            raise ValueError(
                f"{where} is {type(saved).__name__} {getattr(saved, 'dtype', '')} "
                f"{tuple(getattr(saved, 'shape', ()))}, expected a {mine.dtype} tensor with {mine.dim()} dims"
            )
        if mine.is_floating_point() and bool(torch.isfinite(mine).all()) and not bool(torch.isfinite(saved).all()):
            raise ValueError(f"{where} has NaN or infinite entries")
    elif isinstance(mine, bool):
        if not isinstance(saved, bool):
            raise ValueError(f"{where} is {saved!r}, expected True or False")
    elif _is_real(mine):
        if not _is_real(saved) or (math.isnan(saved) and not math.isnan(mine)):
            raise ValueError(f"{where} is {saved!r}, expected a number")
    elif isinstance(mine, str) and not isinstance(saved, str):
        raise ValueError(f"{where} is {saved!r}, expected a string")
    elif mine is None and groups and saved is not None and (not _is_real(saved) or math.isnan(saved)):
        raise ValueError(f"{where} is {saved!r}, expected None or a number (a hyperparameter)")


def _all_or_nothing(load):
    """Wrap a ``load_state_dict``: on any failure the optimizer is restored from its own
    state_dict taken before, and the error is a ValueError (the original as its cause)."""

    @functools.wraps(load)
    def wrapper(self, state_dict):
        if getattr(self, "_loading", False):  # an inner super().load_state_dict call
            return load(self, state_dict)
        backup = self.state_dict()
        pending = (self._pending_pop, self._pending, self._rng_before_ask, self._rng_after_ask)
        self._loading = True
        try:
            load(self, state_dict)
        except Exception as e:
            load(self, backup)
            self._pending_pop, self._pending, self._rng_before_ask, self._rng_after_ask = pending
            if isinstance(e, ValueError):
                raise
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: invalid state_dict ({type(e).__name__}: {e}); "
                "the optimizer's state is unchanged"
            ) from e
        finally:
            self._loading = False

    wrapper._all_or_nothing = True
    return wrapper


def _clone_tree(x):
    if isinstance(x, Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _clone_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clone_tree(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_clone_tree(v) for v in x)
    return x


def _to_device(x, device):
    """Move a loaded population state to the parameters' device. Float tensors keep their
    own dtype here (float64 state stays float64); ``load_state_dict`` then casts the
    entries that have the parameters' dtype by design (``param_dtype_state``)."""
    if isinstance(x, Tensor):
        return x.to(device=device)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, list):
        return [_to_device(v, device) for v in x]
    return x


PopulationOptimizer.load_state_dict = _all_or_nothing(PopulationOptimizer.load_state_dict)
