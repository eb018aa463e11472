"""Checkpoints of population optimizers: validation in one pass and all-or-nothing loading.

A population optimizer's ``state_dict`` is torch's (``state``, ``param_groups``) plus a
``"evoopt"`` entry, the *meta*: the optimizer's name, the parameter shapes, ``popsize``,
``maximize``, ``seed``, the generator state and every declared ``settings`` entry.
:func:`validate` checks a saved state_dict against the optimizer before anything changes,
driven by what the optimizer declares (``settings``, ``vector_state``, its own state's
entries); :func:`load_all_or_nothing` applies it, restoring the optimizer's own state
if anything fails, so a refused checkpoint never leaves it half-loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .population import PopulationOptimizer

#: key of the population state in ``optimizer.state`` (not a parameter: torch does not
#: cast it to the parameters' dtype on load)
STATE_KEY = "population"
#: key of the meta entry in a state_dict
META_KEY = "evoopt"

#: group keys a checkpoint need not have: the parameters, and what schedulers add
_SCHEDULER_KEYS = ("params", "param_names", "initial_lr", "initial_sigma")


def is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ------------------------------------------------------------------ validation
def validate(opt: PopulationOptimizer, state_dict) -> None:
    """Raise ``ValueError`` naming the first thing in ``state_dict`` that ``opt`` cannot
    load: the container, the meta (optimizer, shapes, popsize, maximize, settings, seed,
    generator state), the groups' hyperparameters, and the population state (common
    entries, the declared ``vector_state``, every entry ``opt``'s own state has, then the
    algorithm's :meth:`~PopulationOptimizer._check_loaded_state`)."""
    name = type(opt).__name__
    if not isinstance(state_dict, dict) or "param_groups" not in state_dict:
        raise ValueError(
            f"{name}.load_state_dict: expected an optimizer state_dict, got "
            f"{type(state_dict).__name__}"
        )
    meta = state_dict.get(META_KEY)
    _check_meta(opt, meta)
    _check_containers(opt, state_dict, meta)
    st = state_dict.get("state", {}).get(STATE_KEY)
    if opt.state.get(STATE_KEY) and st:
        # both have run: the saved state must look like this optimizer's own (same config)
        mine = opt.state_dict()
        for key in ("state", META_KEY):
            check_like(mine[key], state_dict.get(key), f"{name}.load_state_dict: saved {key!r}",
                       skip=opt.free_form_state)
    if st:
        _check_population_state(opt, st)


def _check_meta(opt: PopulationOptimizer, meta) -> None:
    name = type(opt).__name__
    if not isinstance(meta, dict):
        raise ValueError(
            f"{name}.load_state_dict: this state_dict was not saved by an evoopt population "
            "optimizer (no 'evoopt' dict entry)"
        )
    if meta.get("optimizer") != name:
        raise ValueError(
            f"{name}.load_state_dict: the state_dict was saved by {meta.get('optimizer')!r}, "
            f"not {name!r}"
        )
    shapes = [list(s) for s in opt.layout.shapes]
    if meta.get("shapes") != shapes:
        raise ValueError(
            f"{name}.load_state_dict: parameter shapes differ: saved {meta.get('shapes')}, "
            f"this optimizer has {shapes}"
        )
    mine = {"popsize": opt.initial_popsize, "maximize": opt.maximize,
            **{key: getattr(opt, key) for key in opt.settings}}
    for key, value in mine.items():
        if meta.get(key) != value:
            raise ValueError(
                f"{name}.load_state_dict: saved {key}={meta.get(key)!r}, this optimizer has "
                f"{key}={value!r}"
            )


def _check_containers(opt: PopulationOptimizer, state_dict: dict[str, Any], meta) -> None:
    """Types of the containers, the seed, the RNG state and the groups' hyperparameters."""
    name = type(opt).__name__
    state = state_dict.get("state", {})
    if not isinstance(state, dict) or not isinstance(state.get(STATE_KEY, {}), dict):
        raise ValueError(
            f"{name}.load_state_dict: 'state' and its {STATE_KEY!r} entry must be dicts"
        )
    groups = state_dict["param_groups"]
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise ValueError(
            f"{name}.load_state_dict: 'param_groups' must be a list of dicts with 'params'"
        )
    seed = meta.get("seed", opt.seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            f"{name}.load_state_dict: saved seed {seed!r} is not a non-negative integer"
        )
    rng = meta.get("rng")
    if rng is not None:
        want = opt._gen.get_state()
        if not isinstance(rng, Tensor) or rng.dtype != torch.uint8 or rng.shape != want.shape:
            got = f"{getattr(rng, 'dtype', type(rng).__name__)} {tuple(getattr(rng, 'shape', ()))}"
            raise ValueError(
                f"{name}.load_state_dict: saved rng is not a generator state (expected a uint8 "
                f"tensor of shape {tuple(want.shape)}, got {got})"
            )
    for i, (mine, saved) in enumerate(zip(opt.param_groups, groups)):
        _check_group_values(name, i, mine, saved)


def _check_group_values(name: str, i: int, mine: dict, saved: dict) -> None:
    """Every numeric hyperparameter of group ``i`` is in ``saved`` as a number (``>= 0``
    where this optimizer's value is)."""
    for key, value in mine.items():
        if key in _SCHEDULER_KEYS or not (value is None or is_real(value)):
            continue
        if key not in saved:
            raise ValueError(f"{name}.load_state_dict: param group {i} lacks {key!r}")
        got = saved[key]
        if value is None and got is None:
            continue
        nonneg = value is None or value >= 0
        if not is_real(got) or math.isnan(got) or (nonneg and got < 0):
            raise ValueError(
                f"{name}.load_state_dict: param group {i} has {key}={got!r} (expected a number"
                f"{' >= 0' if nonneg else ''}, like this optimizer's {value!r})"
            )


def _check_population_state(opt: PopulationOptimizer, st: dict[str, Any]) -> None:
    """The saved population state: the mean, the counters, every entry this optimizer's own
    state has (same kind; tensors of the same shape and finite), the ``vector_state``
    entries ([D]), then the algorithm's own checks."""
    name, D = type(opt).__name__, opt.num_params
    check_saved_shapes(name, st, {"mean": (D,)})
    for key in ("generation", "num_evals"):
        v = st.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(
                f"{name}.load_state_dict: saved {key} {v!r} is not a non-negative integer"
            )
    if not is_real(st.get("best_loss")):
        raise ValueError(
            f"{name}.load_state_dict: saved best_loss {st.get('best_loss')!r} is not a number"
        )
    mine = dict(opt.state.get(STATE_KEY) or {})
    mine.setdefault("best", opt.layout.flatten())
    mine.setdefault("mean", mine["best"])
    for key, ref in mine.items():
        if key not in st:
            raise ValueError(f"{name}.load_state_dict: the saved state lacks {key!r}")
        _check_entry(name, key, ref, st[key])
    check_saved_shapes(name, st, {key: (D,) for key in opt.vector_state})
    opt._check_loaded_state(st)


def check_saved_shapes(name: str, st: dict[str, Any], shapes: dict[str, tuple],
                       note: str = "") -> None:
    """Every ``key`` of ``shapes`` in the saved state ``st`` is a tensor of that shape, else a
    ``ValueError`` naming the optimizer ``name``, the entry, the saved shape and the expected
    one (``note``: what the sizes are)."""
    for key, shape in shapes.items():
        v = st.get(key)
        if not isinstance(v, Tensor) or tuple(v.shape) != tuple(shape):
            got = tuple(v.shape) if isinstance(v, Tensor) else None
            raise ValueError(f"{name}.load_state_dict: saved {key} has shape {got}, expected "
                             f"{tuple(shape)}{note}")


def _check_entry(name: str, key: str, ref, v) -> None:
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
    elif is_real(ref) and not is_real(v):
        raise ValueError(f"{name}.load_state_dict: saved {key}={v!r} (expected a number)")


def _kind(t: Tensor) -> str:
    return "float" if t.is_floating_point() else "complex" if t.is_complex() else str(t.dtype)


def check_like(mine, saved, where: str, groups: bool = False, skip=()) -> None:
    """``saved`` has the structure of ``mine`` (an own state_dict entry): the same keys, lists
    of the same length element by element, tensors of the same kind and number of dims (not
    shape: CMA-ES restarts resize some arrays), numbers for numbers, no NaN/inf where
    ``mine`` is finite, and in (inner optimizers') param groups None or a number where
    ``mine`` is None. Entries under a key in ``skip`` (whose form depends on the run) are
    checked for their kind only (a dict, not its keys). Raises ValueError naming the first
    difference."""
    if isinstance(mine, dict):
        if not isinstance(saved, dict):
            raise ValueError(f"{where} is {type(saved).__name__}, expected a dict")
        for k, v in mine.items():
            if k not in saved:
                raise ValueError(f"{where} lacks {k!r}")
            if k in skip:  # the kind only: a dict's keys depend on the run
                v = {} if isinstance(v, dict) else v
            check_like(v, saved[k], f"{where}[{k!r}]", groups or k == "param_groups", skip)
    elif isinstance(mine, (list, tuple)):
        if not isinstance(saved, (list, tuple)):
            raise ValueError(f"{where} is {type(saved).__name__}, expected a list")
        if len(mine) == len(saved):
            for i, (a, b) in enumerate(zip(mine, saved)):
                check_like(a, b, f"{where}[{i}]", groups, skip)
    elif isinstance(mine, Tensor):
        if (not isinstance(saved, Tensor) or saved.dim() != mine.dim()
                or _kind(saved) != _kind(mine)):
            raise ValueError(
                f"{where} is {type(saved).__name__} {getattr(saved, 'dtype', '')} "
                f"{tuple(getattr(saved, 'shape', ()))}, expected a {mine.dtype} tensor with "
                f"{mine.dim()} dims"
            )
        if (mine.is_floating_point() and bool(torch.isfinite(mine).all())
                and not bool(torch.isfinite(saved).all())):
            raise ValueError(f"{where} has NaN or infinite entries")
    elif isinstance(mine, bool):
        if not isinstance(saved, bool):
            raise ValueError(f"{where} is {saved!r}, expected True or False")
    elif is_real(mine):
        if not is_real(saved) or (math.isnan(saved) and not math.isnan(mine)):
            raise ValueError(f"{where} is {saved!r}, expected a number")
    elif isinstance(mine, str) and not isinstance(saved, str):
        raise ValueError(f"{where} is {saved!r}, expected a string")
    elif (mine is None and groups and saved is not None
          and (not is_real(saved) or math.isnan(saved))):
        raise ValueError(f"{where} is {saved!r}, expected None or a number (a hyperparameter)")


# --------------------------------------------------------------------- loading
def load_all_or_nothing(opt: PopulationOptimizer, state_dict) -> None:
    """Validate ``state_dict`` (:meth:`~PopulationOptimizer._check_checkpoint`) and apply
    it (:meth:`~PopulationOptimizer._apply_checkpoint`). On any failure ``opt`` is restored
    from its own state_dict taken before (the pending ask too), and the error is a
    ``ValueError`` (the original as its cause)."""
    backup = opt.state_dict()
    pending = opt._save_pending()
    try:
        opt._check_checkpoint(state_dict)
        opt._apply_checkpoint(state_dict)
    except Exception as e:
        opt._apply_checkpoint(backup)
        opt._restore_pending(pending)
        if isinstance(e, ValueError):
            raise
        raise ValueError(
            f"{type(opt).__name__}.load_state_dict: invalid state_dict ({type(e).__name__}: "
            f"{e}); the optimizer's state is unchanged"
        ) from e


def clone_tree(x):
    """A copy of nested dicts/lists/tuples with every tensor detached and cloned."""
    if isinstance(x, Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: clone_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clone_tree(v) for v in x]
    if isinstance(x, tuple):
        return tuple(clone_tree(v) for v in x)
    return x


def to_device(x, device):
    """Move a loaded population state to the parameters' device. Float tensors keep their
    own dtype here (float64 state stays float64); loading then casts the entries that
    have the parameters' dtype by design (``param_dtype_state``)."""
    if isinstance(x, Tensor):
        return x.to(device=device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, list):
        return [to_device(v, device) for v in x]
    return x


# ---------------------------------------------------------------------- pickle
#: torch's per-instance hook registries: never pickled (hooks are often lambdas), as in torch
HOOK_DICTS = frozenset({
    "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
})


@dataclass
class GeneratorState:
    """A pickled :class:`torch.Generator`: its device and state."""

    device: str
    state: Tensor

    def restore(self) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.set_state(self.state)
        return gen


class CheckpointMixin:
    """``state_dict``/``load_state_dict`` and pickling of a population optimizer (a mixin of
    :class:`~evoopt.population.PopulationOptimizer`; the hooks a subclass extends are
    :meth:`_meta`, :meth:`_check_checkpoint`, :meth:`_check_loaded_state`,
    :meth:`_apply_checkpoint`, :meth:`_getstate_extra` and :meth:`_setstate_extra`)."""

    # ---------------------------------------------------------------- pickle
    def __getstate__(self) -> dict[str, Any]:
        """Everything in ``__dict__`` (torch's ``Optimizer.__getstate__`` keeps only
        ``defaults``, ``state`` and ``param_groups``, which loses the layout and the RNG),
        with every :class:`torch.Generator` attribute replaced by its state (generators
        cannot be pickled) and the step hooks left out, as torch leaves them out. A subclass
        with unpicklable attributes of its own overrides :meth:`_getstate_extra`."""
        d = {k: v for k, v in self.__dict__.items() if k not in HOOK_DICTS}
        for k, v in d.items():
            if isinstance(v, torch.Generator):
                d[k] = GeneratorState(str(v.device), v.get_state())
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
            if isinstance(v, GeneratorState):
                state[k] = v.restore()
        super().__setstate__(state)  # torch: the hook dicts, the step wrapper
        self._setstate_extra()

    # ------------------------------------------------------------- state_dict
    def _meta(self) -> dict[str, Any]:
        return {
            "optimizer": type(self).__name__,
            "num_params": self.num_params,
            "shapes": [list(s) for s in self.layout.shapes],
            "popsize": self.initial_popsize,
            "maximize": self.maximize,
            "seed": self.seed,
            "rng": self._checkpoint_rng(),
            **{key: getattr(self, key) for key in self.settings},
        }

    def _checkpoint_rng(self, gen: torch.Generator | None = None) -> Tensor:
        """The state of ``gen`` (default ``self._gen``) a checkpoint records. Between ask and
        tell it is the state before that ask: a checkpoint never holds half a generation (the
        pending one is not saved), so a run resumed from it asks that generation again and
        draws the same members; a failed tell, which rewinds the generator, leaves the
        checkpoint as it was."""
        gen = self._gen if gen is None else gen
        for g, state in self._rng_before_ask or ():
            if g is gen:
                return state.clone()
        return gen.get_state()

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["state"] = clone_tree(sd["state"])
        sd[META_KEY] = self._meta()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint of this optimizer (same class, shapes, popsize, maximize and
        settings), all or nothing: a checkpoint that does not match is refused with a
        ``ValueError`` saying why, and the optimizer is left as it was. A pending ask is
        dropped (the checkpoint's generation is asked again)."""
        load_all_or_nothing(self, state_dict)

    def _check_checkpoint(self, state_dict) -> None:
        """Hook: raise ``ValueError`` if ``state_dict`` cannot be loaded (nothing changes
        here). The base validates everything it declares (:func:`evoopt.validate`);
        subclasses with more (an inner optimizer) extend it."""
        validate(self, state_dict)

    def _check_loaded_state(self, st: dict[str, Any]) -> None:
        """Hook: checks of the algorithm's own entries of a saved population state, after
        the base's (``vector_state`` shapes, entries like this optimizer's own)."""

    def _apply_checkpoint(self, state_dict: dict[str, Any]) -> None:
        """Hook: load a validated ``state_dict``; subclasses extend it (rebuild what is
        derived from the state, e.g. pycma's instance, an inner optimizer's state)."""
        meta = state_dict[META_KEY]
        sd = {k: v for k, v in state_dict.items() if k != META_KEY}
        sd["state"] = clone_tree(sd.get("state", {}))
        super().load_state_dict(sd)
        if STATE_KEY in self.state:
            st = self.state[STATE_KEY] = to_device(self.state[STATE_KEY], self._device)
            for key in ("mean", "best", *self.param_dtype_state):
                if isinstance(st.get(key), Tensor):
                    st[key] = st[key].to(self._dtype)
        self.seed = meta.get("seed", self.seed)
        rng = meta.get("rng")
        if isinstance(rng, Tensor):
            self._gen.set_state(rng.cpu())
        self._pending = None
        self._rng_before_ask = self._rng_after_ask = None
        if STATE_KEY in self.state:
            self.layout.load_(self.state[STATE_KEY]["mean"])

    def _save_pending(self) -> tuple:
        return self._pending, self._rng_before_ask, self._rng_after_ask

    def _restore_pending(self, saved: tuple) -> None:
        self._pending, self._rng_before_ask, self._rng_after_ask = saved
