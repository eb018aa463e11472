"""The pycma side of :class:`~evoopt.CMAES`: the options evoopt sets or refuses, bounds,
and the state of a live ``cma.CMAEvolutionStrategy`` as tensors.

pycma has no state API. :func:`snapshot_pycma` records every numeric attribute (arrays,
numbers, lists and dicts of them) of ``es``, ``es.sm`` (C, B, D, update counters
``count_tell``/``last_update``/``count_eigen``), ``es.adapt_sigma`` (ps, ...),
``es.sigma_vec`` (the diagonal mode's scaling), ``es.best``, ``es.fit`` (the histories the
stop tests read) and the tolx-stagnation tracker, plus the termination dict -- as tensors
and plain numbers, arrays shared by two objects (``es.C is es.sm.C``) kept shared -- and
:func:`restore_pycma` writes them onto a freshly built instance, so a resumed run continues
with identical numbers.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

_QUIET = dict(
    verbose=-9,
    verb_log=0,
    verb_disp=0,
    verb_plot=0,
    verb_time=False,
    signals_filename="",
    seed=math.nan,
)
_RESERVED = {
    "randn": "samples come from evoopt's private generator (seed=)",
    "seed": "use the optimizer's seed= argument",
    "popsize": "use the popsize= argument",
    "popsize_factor": "use the popsize= argument",
    "bounds": "use the bounds= argument",
    "BoundaryHandler": "evoopt uses pycma's BoundTransform (bounds=)",
    "CMA_diagonal": "use the diagonal= argument",
    "CMA_stds": "give param groups different sigma values",
    "CMA_cmean": "use lr= (the mean's learning rate c_m)",
    "CMA_sampler": "a custom sampler bypasses evoopt's private generator",
    "integer_variables": "pycma draws from numpy's global RNG for them",
    "fixed_variables": "leave fixed parameters out of the optimizer",
    "scaling_of_variables": "give param groups different sigma values",
    "typical_x": "deprecated in pycma",
    "transformation": "deprecated in pycma",
    "signals_filename": "evoopt algorithms read no files",
}
_PICKLED = "_cmaes_pickled"  # marks __getstate__'s dict
_USER_STOPS = frozenset({"ftarget", "maxfevals", "timeout", "callback"})
_SMALL, _LARGE = 0, 1  # BIPOP regimes (state["population"]["regime"])


def _free_form() -> dict[str, Any]:
    """State entries whose keys depend on the run (pycma's reasons), initial values."""
    return {"last_stop": {}, "stopped": {}}


def _check_options(options) -> dict[str, Any]:
    import cma

    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"Invalid options: {options!r} (expected a dict of pycma options)")
    known = set(cma.CMAOptions().keys())
    for key, value in options.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"Invalid options key: {key!r} (not a pycma option, see cma.CMAOptions()){hint}"
            )
        if key.startswith("verb") or key in _RESERVED:
            why = _RESERVED.get(key, "evoopt algorithms never print or write files")
            raise ValueError(f"Invalid options key: {key!r} is set by evoopt.CMAES ({why})")
        if key == "CMA_mirrormethod" and value in (0, 1):
            raise ValueError(
                f"Invalid options['CMA_mirrormethod']: {value!r} (expected 2; methods 0 and 1 "
                "draw from numpy's global RNG)"
            )
    return dict(options)


def _check_bounds(bounds, num_params: int) -> list | None:
    """Return pycma's ``[lower, upper]`` (each a float, a list of D floats or None)."""
    if bounds is None:
        return None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"Invalid bounds: {bounds!r} (expected a pair (lower, upper))")
    out = []
    for name, b in zip(("lower", "upper"), bounds):
        if b is None:
            out.append(None)
            continue
        v = torch.as_tensor(b, dtype=torch.float64).detach().cpu().reshape(-1)
        if v.numel() not in (1, num_params):
            raise ValueError(
                f"Invalid bounds: {name} has {v.numel()} values (expected 1 or D={num_params})"
            )
        if torch.isnan(v).any():
            raise ValueError(f"Invalid bounds: {name} contains NaN")
        out.append(float(v) if v.numel() == 1 else v.tolist())
    if out[0] is not None and out[1] is not None:
        lo, up = (torch.as_tensor(o, dtype=torch.float64).expand(num_params) for o in out)
        bad = (lo >= up).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"Invalid bounds: lower >= upper at coordinates {bad[:10]} (expected lower < upper)"
            )
    return out


# --------------------------------------------------------------- pycma state codec
# Snapshots hold tensors, Python numbers, None, lists, tuples and dicts keyed by str only
# (weights_only-loadable, no strings as values). Every value is a pair (tag, payload);
# an array is an index into the snapshot's list of tensors.
_ND, _NPSCALAR, _PY, _LIST, _TUPLE, _DICT, _SDICT = range(7)
_SKIP = object()
# es attributes that are data but not state (constructor inputs, the last tell's arguments)
_NOT_STATE = frozenset({"inputargs", "inopts", "_tell2_args", "pop"})


def _components(es) -> dict[str, Any]:
    """The pycma objects whose attributes make up the state of a run."""
    return {
        "es": es,
        "sm": es.sm,
        "adapt_sigma": es.adapt_sigma,
        "sigma_vec": es.sigma_vec,
        "best": es.best,
        "best.last": es.best.last,
        "fit": es.fit,
        "tolxstagnation": es._stoptolxstagnation,
    }


def _encode(v, arrays: list, ids: dict):
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "fiub":
            return _SKIP
        i = ids.get(id(v))
        if i is None:  # one tensor per array object: aliases (es.C is es.sm.C) stay aliases
            i = ids[id(v)] = len(arrays)
            arrays.append(torch.from_numpy(np.array(v, copy=True)))
        return (_ND, i)
    if isinstance(v, np.generic):
        return (
            (_NPSCALAR, torch.from_numpy(np.asarray(v).copy())) if v.dtype.kind in "fiub" else _SKIP
        )
    if v is None or type(v) in (bool, int, float):
        return (_PY, v)
    if type(v) in (list, tuple):
        items = [_encode(x, arrays, ids) for x in v]
        if any(x is _SKIP for x in items):
            return _SKIP
        return (_LIST if type(v) is list else _TUPLE, items)
    if type(v) is dict and all(type(k) is str for k in v):  # str keys stay keys
        vals = {k: _encode(x, arrays, ids) for k, x in v.items()}
        return _SKIP if any(x is _SKIP for x in vals.values()) else (_SDICT, vals)
    if type(v) is dict:
        keys = [_encode(k, arrays, ids) for k in v]
        vals = [_encode(x, arrays, ids) for x in v.values()]
        if any(x is _SKIP for x in keys + vals):
            return _SKIP
        return (_DICT, (keys, vals))
    return _SKIP


def _decode(e, arrays: list):
    tag, p = e
    if tag == _ND:
        return arrays[p]
    if tag == _NPSCALAR:
        return p.cpu().numpy()[()]
    if tag == _PY:
        return p
    if tag == _LIST:
        return [_decode(x, arrays) for x in p]
    if tag == _TUPLE:
        return tuple(_decode(x, arrays) for x in p)
    if tag == _DICT:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in zip(*p)}
    if tag == _SDICT:
        return {k: _decode(v, arrays) for k, v in p.items()}
    raise ValueError(f"unknown tag {tag!r} in a CMAES checkpoint")


def snapshot_pycma(es) -> dict[str, Any]:
    """The numeric state of a ``cma.CMAEvolutionStrategy`` as tensors and plain values."""
    arrays: list[Tensor] = []
    ids: dict[int, int] = {}
    attrs = {}
    for name, obj in _components(es).items():
        enc = {}
        for k, v in vars(obj).items():
            if name == "es" and k in _NOT_STATE:
                continue
            e = _encode(v, arrays, ids)
            if e is not _SKIP:
                enc[k] = e
        attrs[name] = enc
    sd = es._stopdict
    stop = {k: _encode(v, arrays, ids) for k, v in sd.items()}
    stop = {k: (e if e is not _SKIP else (_PY, None)) for k, e in stop.items()}
    return {"arrays": arrays, "attrs": attrs, "stop": stop, "stop_lastiter": int(sd.lastiter)}


def _write_attrs(es, snap: dict[str, Any], only: Mapping | None = None) -> list:
    """Set the snapshot's attributes on ``es`` (``only``: component -> None for all of
    its attributes or a set of names). Arrays shared in the snapshot stay shared; returns
    the decoded arrays."""
    arrays = [t.cpu().numpy().copy() for t in snap["arrays"]]
    comps = _components(es)
    for name, enc in snap["attrs"].items():
        if only is not None and name not in only:
            continue
        keys = None if only is None else only[name]
        for k, e in enc.items():
            if keys is None or k in keys:
                setattr(comps[name], k, _decode(e, arrays))
    return arrays


# what a generation changes in the search distribution: mean, step size, evolution paths,
# covariance (sampler), step-size adaptation and scaling; the rest of the state (counters,
# fitness histories, best so far) is bookkeeping that pycma's termination tests read
_DISTRIBUTION = {
    "es": frozenset(
        {"mean", "mean_old", "mean_old_old", "mean_after_tell", "sigma", "_sigma_old", "pc",
         "pc2", "C", "B", "D", "dC", "_isotropic_mean_shift", "_isotropic_mean_shift_iteration"}
    ),
    "sm": None,
    "adapt_sigma": None,
    "sigma_vec": None,
}


def restore_pycma(es, snap: dict[str, Any]) -> None:
    """Write a :func:`snapshot_pycma` onto a fresh instance built with the same arguments."""
    arrays = _write_attrs(es, snap)
    sd = es._stopdict
    sd.clear()
    for k, e in snap["stop"].items():
        sd[k] = _decode(e, arrays)
        sd.stoplist.append(k)
    sd.lastiter = snap["stop_lastiter"]
    if sd.lastiter:
        sd.es, sd.opts = es, es.opts
    if es.countiter > 0:  # pycma starts its wall clock in the first ask (used by 'timeout' only)
        from cma.utilities.utils import ElapsedWCTime

        es.timer = ElapsedWCTime()


def _plain(v):
    """A stop value as a checkpointable plain value: numbers and lists of numbers stay,
    anything else (pycma's callback outputs, ...) becomes None."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or type(v) in (bool, int, float):
        return v
    if type(v) in (list, tuple):
        items = [_plain(x) for x in v]
        return items if all(x is None or type(x) in (bool, int, float) for x in items) else None
    return None


def _plain_stop(stop) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in stop.items()}


def _no_check(es) -> None:
    """Replaces TPA's ``check_consistency``, which draws from numpy's global RNG."""


def restart_schedule(st: dict[str, Any], strategy: str, popsize0: int, countevals: int,
                     gen: torch.Generator) -> tuple[int, float | None, float]:
    """The next run of an IPOP / BIPOP restart, as pycma's ``fmin`` (``incpopsize=2``)
    schedules it: ``(popsize, maxiter, sigma_factor)``. IPOP doubles the population at
    every large run; BIPOP runs a short local search with a random small population and
    step size (``sigma_factor = 0.01**u1``, ``popsize0 * mult**(u2**2)``) whenever the
    small runs have spent fewer evaluations than the large ones. Updates the BIPOP
    bookkeeping in ``st`` (``runs_with_small``, ``regime``, ``small_evals``,
    ``large_evals``); ``gen`` draws ``u1, u2``."""
    runs = st["runs"] + 1
    sigma_factor, maxiter = 1.0, None
    if strategy == "ipop":
        popsize = popsize0 * 2 ** (runs - st["runs_with_small"])
    else:
        this_evals = countevals - st["run_start_evals"]
        (st["small_evals"] if st["regime"] == _SMALL else st["large_evals"]).append(this_evals)
        small, large = sum(st["small_evals"]), sum(st["large_evals"])
        if small < max(1, large):  # a short local run with a small population
            st["runs_with_small"] += 1
            st["regime"] = _SMALL
            u1, u2 = torch.rand(2, generator=gen, dtype=torch.float64).tolist()
            sigma_factor = 0.01**u1
            mult = 2 ** (runs - st["runs_with_small"])
            popsize = int(popsize0 * mult ** (u2**2))
            maxiter = min(st["maxiter0"], 0.5 * large / popsize)
        else:
            st["regime"] = _LARGE
            popsize = popsize0 * 2 ** (runs - st["runs_with_small"])
            maxiter = st["maxiter0"]
    return max(popsize, 2), maxiter, sigma_factor
