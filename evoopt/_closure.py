"""What a population optimizer's generation reads from the user and hands to the algorithm:
the closure or population objective (:func:`is_population_objective`,
:func:`evaluate_members`), the losses (:func:`check_losses`, :func:`utilities`) and, for a
quality-diversity algorithm, the behaviour descriptors (:func:`split_descriptors`,
:func:`descriptor_kwargs`)."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import sys
import types
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.optim import optimizer as _torch_optimizer

from ._layout import Population

__all__ = ["evaluate_members", "check_losses", "is_population_objective", "utilities",
           "split_descriptors", "descriptor_kwargs"]

#: files whose frames a warning skips to reach the user's code: evoopt's own and the
#: step-hook wrappers of torch.optim
_INTERNAL = (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.dirname(os.path.abspath(torch.optim.__file__)),
)


def user_stacklevel() -> int:
    """``stacklevel`` of the first caller outside evoopt and torch.optim (for a warning
    raised from evoopt code reached through step, tell or a hook wrapper)."""
    level, f = 1, sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_INTERNAL):
        f, level = f.f_back, level + 1
    return level


#: Grad mode as a plain call (no context object per call: around pycma at n = 10 each costs
#: microseconds). ``torch._C._set_grad_enabled`` is private: fall back to the public class.
set_grad_enabled = getattr(torch._C, "_set_grad_enabled", torch.set_grad_enabled)


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


def evaluate_members(closure: Callable, pop: Population, layout, name: str) -> Tensor:
    """Load each member into the parameters and call the closure; a member whose
    closure raises gets a NaN loss (so it ranks worst) unless every member raises.
    A closure that returns no loss, or that calls ``backward`` unguarded, is refused
    at the first member (the same for every member). ``name`` (the optimizer's class
    name) goes into the messages. Returns [P] float64 losses on the CPU, or ``(losses,
    descriptors)`` when the closure returns ``(loss, descriptor)`` pairs (see
    :func:`member_descriptors`)."""
    # per member: no context-manager objects or small tensor ops (each costs microseconds,
    # the whole generation of pycma at n = 10 costs a few hundred); grad mode is set
    # before every call, as a no_grad block per call would
    out = [math.nan] * pop.popsize
    descs = None  # a list once the closure returns (loss, descriptor)
    first_error = None
    if type(pop) is Population:
        load = layout.member_loader(pop.flat)
    else:  # a population held in another form: one member materialised at a time
        def load(i: int) -> None:
            layout.load_(pop.row(i))
    prev = torch.is_grad_enabled()
    try:
        for i in range(pop.popsize):
            set_grad_enabled(False)
            load(i)
            try:
                loss = closure()
            except RuntimeError as e:
                if _NO_GRAD_BACKWARD in str(e):
                    raise RuntimeError(_BACKWARD_FIX.format(name)) from e
                first_error = first_error or e
                continue
            except Exception as e:  # noqa: BLE001 - one failing member must not lose the run
                first_error = first_error or e
                continue
            if type(loss) is tuple and len(loss) == 2:
                descs = descs or [None] * pop.popsize
                loss, descs[i] = loss
            out[i] = _closure_loss(loss)
    finally:
        set_grad_enabled(prev)
    losses = torch.from_numpy(np.array(out, dtype=np.float64))
    if first_error is not None:
        if torch.isnan(losses).all():
            raise first_error
        warnings.warn(
            f"the closure raised for some members ({type(first_error).__name__}: "
            f"{first_error}); they rank worst", RuntimeWarning, stacklevel=user_stacklevel(),
        )
    if descs is not None:
        return losses, member_descriptors(descs, losses)
    return losses


def member_descriptors(descs: list, losses: Tensor) -> Tensor:
    """The [P, k] descriptors of a zero-argument closure's ``(loss, descriptor)`` pairs, one
    row per member (a member whose closure raised gets a NaN row: its loss is NaN too)."""
    rows = []
    for i, (d, loss) in enumerate(zip(descs, losses.tolist())):
        if d is None and math.isnan(loss):
            rows.append(None)
            continue
        if d is None:
            raise ValueError(
                f"Invalid closure: member {i} returned a loss without a descriptor, others "
                "(loss, descriptor) (expected the same form from every member)"
            )
        rows.append(_as_float64(d, "descriptor", f"member {i}'s descriptor").reshape(-1))
    sizes = sorted({len(r) for r in rows if r is not None})
    if len(sizes) != 1:
        raise ValueError(f"Invalid descriptors: the members' descriptors have sizes {sizes} "
                         "(expected one size k for every member)")
    nan = torch.full((sizes[0],), math.nan, dtype=torch.float64)
    return torch.stack([nan if r is None else r for r in rows])


def _as_float64(x, arg: str, what: str) -> Tensor:
    """``x`` (a tensor, array, list or number) as a float64 CPU tensor; booleans, complex
    numbers and what is not numeric are refused with a ``ValueError`` naming ``arg``."""
    if _has_bools(x) or isinstance(x, (bool, np.bool_)):
        raise ValueError(f"Invalid {arg}: {what} holds booleans (expected real numbers)")
    try:
        t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"Invalid {arg}: could not convert {what} ({type(x).__name__}) to a "
                         f"tensor ({e})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"Invalid {arg}: {what} has dtype {t.dtype} (expected real numbers)")
    return t.to(dtype=torch.float64, device="cpu")


def split_descriptors(out) -> tuple:
    """``(losses, descriptors)`` from what a population objective (or
    :func:`evaluate_members`) returned: a pair whose first item is not a number (a [P]
    tensor, array or list of losses) is ``(losses, descriptors)``; anything else is the
    losses alone (``descriptors`` None)."""
    if type(out) is tuple and len(out) == 2:
        first = out[0]
        if not (isinstance(first, numbers.Number) or (isinstance(first, Tensor)
                                                       and first.dim() == 0)):
            return out
    return out, None


def descriptor_kwargs(opt, pop: Population, given, losses: Tensor) -> dict:
    """What the base passes to ``_update`` besides the losses: ``{}`` for an algorithm that
    takes no descriptors (``given`` must be None), else ``{"descriptors": [P, k]}`` (float64,
    on the parameters' device) from ``given`` or, when None, from ``opt.descriptor(pop)``.
    ``k`` is ``opt.num_descriptors``; every member with a finite loss needs finite values
    (the others are never used: their rows may be NaN)."""
    name = type(opt).__name__
    if not opt.takes_descriptors:
        if given is None:
            return {}
        raise ValueError(
            f"Invalid descriptors: {name} takes no behaviour descriptors (got "
            f"{type(given).__name__}); only a quality-diversity algorithm (e.g. MAPElites) "
            "does. Tell the losses alone, or return the losses alone from the objective"
        )
    P, k = len(pop), opt.num_descriptors
    if given is None:
        if opt.descriptor is None:
            raise ValueError(
                f"Invalid descriptors: None ({name} needs one behaviour descriptor per member: "
                f"tell(losses, descriptors=D) with D of shape ({P}, {k}), an objective "
                f"returning (losses, descriptors), or descriptor=fn at construction)"
            )
        given = opt.descriptor(pop)
    d = _as_float64(given, "descriptors", "the descriptors")
    if d.dim() == 1 and k == 1:
        d = d[:, None]
    if d.shape != (P, k):
        raise ValueError(f"Invalid descriptors: shape {tuple(d.shape)} (expected ({P}, {k}), "
                         f"one {k}-dimensional descriptor per member)")
    bad = torch.isfinite(losses) & ~torch.isfinite(d).all(1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"Invalid descriptors: member {i} has {d[i].tolist()} (expected "
                         "finite values for every member with a finite loss)")
    return {"descriptors": d.to(opt._device)}


_NO_GRAD_BACKWARD = "does not require grad and does not have a grad_fn"
_BACKWARD_FIX = (
    "the closure calls loss.backward(), but {} evaluates it under torch.no_grad() (an "
    "evolution strategy needs no gradients), so the loss has no graph. Guard the call: "
    "`if torch.is_grad_enabled(): loss.backward()` -- the same closure then works with "
    "torch's optimizers too"
)


#: the dtypes of a loss tensor that need no further check before ``float()``
_FLOAT_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})


def _closure_loss(loss) -> float:
    """The number a torch closure returned: a one-element tensor or a real number."""
    if type(loss) is Tensor and loss.dtype in _FLOAT_DTYPES and loss.dim() == 0:
        return float(loss)  # the common case, fewest torch calls (once per member)
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



def check_losses(losses, P: int) -> np.ndarray:
    """Losses as a [P] float64 numpy array of its own (a copy: the caller's tensor may
    change). Real numbers of any dtype are accepted (floating or integer, tensors, numpy
    arrays or lists alike); booleans and complex numbers are refused (a mask is not a
    loss)."""
    if (type(losses) is Tensor and losses.is_cpu and losses.dtype == torch.float64
            and not losses.requires_grad and losses.shape == (P,)):
        return losses.numpy().copy()  # the common case, fewest torch calls
    if not isinstance(losses, Tensor):
        if _has_bools(losses):
            raise ValueError(
                "Invalid losses: booleans (expected one real loss per member; a 0-1 loss "
                "is a number: convert it, e.g. mask.float())"
            )
        try:
            losses = torch.as_tensor(losses, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(
                f"Invalid losses: could not convert {type(losses).__name__} to a tensor ({e})"
            ) from None
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
        return losses.numpy().copy()  # one numpy copy: cheaper than .to
    return losses.to(dtype=torch.float64, device="cpu").numpy()


class AllNonFinite(ValueError):
    """Every loss of a generation is NaN or infinite."""


def utilities(vals: list[float], maximize: bool, dtype: torch.dtype,
              nonfinite: str = "worst") -> tuple[np.ndarray, int, float, int]:
    """From the user's losses ``vals`` (Python floats, one per member) to what an algorithm
    minimises: the losses in the minimising sign, non-finite ones replaced by a value worse
    than every finite one (with a warning), as float64 numpy, scaled by a power of two where
    ``dtype`` (that of the algorithm's update) would overflow (every algorithm is invariant
    to a positive scale: ranks, or raw values divided by their spread). With
    ``nonfinite="inf"`` non-finite losses become ``+inf`` instead, for algorithms that
    compare with losses of earlier generations (a steady-state population: "worse than
    this generation" could still beat an old member). Returns
    ``(u, best_index, mean_loss, num_nonfinite)``; raises :class:`AllNonFinite` when no
    loss is finite. Plain Python and numpy: after an algorithm's numpy work (pycma) each
    small torch op costs 10-25 us."""
    P = len(vals)
    total = sum(vals)
    if math.isfinite(total):  # every loss finite (a NaN or inf makes the sum non-finite)
        best = vals.index(max(vals) if maximize else min(vals))  # the first best, as below
        unp, mean_loss, nbad = np.array(vals, dtype=np.float64), total / P, 0
        if maximize:
            unp = -unp
    else:
        unp, best, mean_loss, nbad = _nonfinite_utilities(vals, maximize, nonfinite)
    if dtype != torch.float64:
        # finite losses beyond the parameters' dtype would become inf in the cast
        limit = torch.finfo(dtype).max / (4 * P)
        big = float(np.abs(unp[np.isfinite(unp)]).max())
        if big > limit:
            unp = unp * 2.0 ** math.floor(math.log2(limit / big))
    return unp, best, mean_loss, nbad


def _nonfinite_utilities(vals: list[float], maximize: bool,
                         nonfinite: str) -> tuple[np.ndarray, int, float, int]:
    """:func:`utilities` where some loss is not finite (or the sum overflowed)."""
    P = len(vals)
    finite = [math.isfinite(v) for v in vals]
    nbad = P - sum(finite)
    if nbad == P:
        raise AllNonFinite
    uvals = [-v for v in vals] if maximize else list(vals)
    if nbad:
        warnings.warn(
            f"{nbad} of {P} losses are NaN or infinite; those members rank worst",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
    if nbad and nonfinite == "inf":
        uvals = [v if f else math.inf for v, f in zip(uvals, finite)]
    elif nbad:
        good = [v for v, f in zip(uvals, finite) if f]
        if not math.isfinite(max(good) + max(max(good) - min(good), 1.0)):
            # beyond float64's range: every algorithm is invariant to a positive scale
            uvals, good = [v / 4 for v in uvals], [v / 4 for v in good]
        worst = max(good) + max(max(good) - min(good), 1.0)
        uvals = [v if f else worst for v, f in zip(uvals, finite)]
    best = min(range(P), key=uvals.__getitem__)  # non-finite members are strictly worse
    mean_loss = sum(v for v, f in zip(vals, finite) if f) / (P - nbad)
    unp = np.array(uvals, dtype=np.float64)
    return unp, best, mean_loss, nbad


# ------------------------------------------------------- around a generation
#: whether a torch profiler runs (private in torch: without it, always record the range)
profiler_enabled = getattr(torch.autograd, "_profiler_enabled", lambda: True)


def global_hooks(kind: str) -> list:
    """torch's global step hooks (``register_optimizer_step_{pre,post}_hook``); their
    registry is private, so a torch without it has none to fire."""
    return list(getattr(_torch_optimizer, f"_global_optimizer_{kind}_hooks", {}).values())


def no_grad(fn):
    """``torch.no_grad()`` as a decorator, without its per-call context objects (ask/tell
    run every generation; around pycma each object costs microseconds)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        prev = torch.is_grad_enabled()
        set_grad_enabled(False)
        try:
            return fn(*args, **kwargs)
        finally:
            set_grad_enabled(prev)

    return wrapper


def set_rng(states: list) -> None:
    for gen, state in states:
        gen.set_state(state)
