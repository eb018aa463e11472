r"""Stopping for good, shared by the CMA family.

:class:`StopsForGood` is what a stopped optimizer does: ``st["stopped"]`` latches the
reasons (they survive ``state_dict`` and pickling), one ``RuntimeWarning`` says so, ``step``
is a no-op that returns the last mean loss (as torch's LBFGS once converged), ``ask``
raises, and :attr:`~StopsForGood.stopped` holds the reasons: training loops, ``evoopt
compare`` and ``evoopt bbob`` end the run (or restart) on it. :class:`~evoopt.CMAES` stops
on pycma's own criteria; the native variants use :func:`termination`.

:func:`termination` evaluates CMA-ES's termination criteria (Hansen 2016, "The CMA Evolution
Strategy: A Tutorial", https://arxiv.org/abs/1604.00772, Appendix B.3), with pycma's
default values and names, on a diagonal model ``sigma_i = sigma s_i sqrt(C_i)`` (``s``: the
groups' ``sigma``, ``sigma``: the learned step size, which starts at 1)::

    tolfun           max - min of this generation's losses, and of the best losses of the
                     last 10 + ceil(30 D / P) generations (at most 10,000), both
                     < tolfun                                                      (1e-11)
    tolx             every sigma_i < tolx and every sigma s_i |p_c,i| < tolx       (1e-11)
    tolupsigma       sigma sqrt(max_i C_i) > tolupsigma: the learned width grew
                     tolupsigma-fold (diverging)                                   (1e20)
    tolconditioncov  max_i C_i / min_i C_i > tolconditioncov                       (1e14)
    noeffectcoord    a coordinate with mean_i + 0.2 sigma_i == mean_i (float resolution)
    tolflatfitness   the best loss equals the 0.75-quantile in more than tolflatfitness
                     generations in a row (a plateau)                                  (1)

A value of 0 or None switches a criterion off; ``stop=False`` switches them all off.
(pycma's ``tolupsigma`` compares ``sigma`` with C's largest axis; in the native variants the
learned ``sigma`` and ``C`` trade scale freely -- on Rosenbrock sep-CMA's ``sigma`` grows to
1e8 while ``C`` falls to 1e-23, the widths staying right -- so their product is compared.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._closure import user_stacklevel
from .._state import STATE_KEY

__all__ = ["StopsForGood", "STOP_DEFAULTS", "check_stop_options", "termination"]

#: pycma's default values of the criteria :func:`termination` evaluates
STOP_DEFAULTS = {"tolfun": 1e-11, "tolx": 1e-11, "tolupsigma": 1e20, "tolconditioncov": 1e14,
                 "noeffectcoord": True, "tolflatfitness": 1}


def check_stop_options(stop) -> dict[str, Any]:
    """The criteria in force: :data:`STOP_DEFAULTS` updated by ``stop`` (a dict), none for
    ``stop=False``; a value of 0 or None switches one off."""
    if stop is False:
        return {}
    if stop is True or stop is None:
        stop = {}
    if not isinstance(stop, dict):
        raise ValueError(f"Invalid stop: {stop!r} (expected a dict of termination criteria, "
                         f"e.g. {{'tolx': 1e-8}}, or False for none)")
    unknown = sorted(set(stop) - set(STOP_DEFAULTS))
    if unknown:
        raise ValueError(f"Invalid stop: unknown criteria {unknown} (expected some of "
                         f"{sorted(STOP_DEFAULTS)})")
    for key, v in stop.items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if v is not None and not isinstance(v, bool) and not (number and v >= 0):
            raise ValueError(f"Invalid stop: {key}={v!r} (expected a number >= 0, or None/0 "
                             "to switch it off)")
    return {k: v for k, v in {**STOP_DEFAULTS, **stop}.items() if v}


def termination(opts: dict[str, Any], st: dict[str, Any], losses: Tensor, *, widths: Tensor,
                C: Tensor | None = None,
                pc_widths: Callable[[], Tensor] | None = None) -> dict[str, Any]:
    """The criteria of ``opts`` (:func:`check_stop_options`) that hold after an update:
    ``losses`` ([P], minimised) of the generation, ``widths`` the [D] ``sigma_i`` the next
    generation samples with, ``C`` the [D] diagonal (for the condition and ``tolupsigma``;
    None: an identity, no condition to check), ``pc_widths`` a function returning the [D]
    ``sigma s |p_c|`` (called only once every ``sigma_i < tolx``; None: no evolution path).
    Keeps the history it needs in ``st`` (``f_hist``, at most 10,000 generations, and
    ``flat``: plain Python, checkpointed). A few passes over [D] and two device syncs."""
    P, D = losses.shape[0], widths.shape[0]
    f = sorted(losses.tolist())
    hist = st["f_hist"]  # (a private list: state_dict and load_state_dict copy the state)
    hist.append(f[0])
    del hist[:-min(10 + math.ceil(30 * D / P), 10_000)]
    st["flat"] = st["flat"] + 1 if f[0] == f[int(0.75 * P)] else 0
    mean = st["mean"]
    parts = [*torch.aminmax(widths), mean.abs().max()]
    if C is not None:
        parts += [*torch.aminmax(C)]
    stats = torch.stack([t.to(torch.float64) for t in parts]).tolist()  # one sync
    wmin, wmax, mabs = stats[:3]
    cmin, cmax = stats[3:] if C is not None else (1.0, 1.0)
    sigma, eps = st["sigma"], torch.finfo(mean.dtype).eps
    checks = {
        "tolfun": lambda v: f[-1] - f[0] < v and max(hist) - min(hist) < v,
        "tolx": lambda v: wmax < v and (pc_widths is None or float(pc_widths().max()) < v),
        "tolupsigma": lambda v: sigma * math.sqrt(cmax) > v,
        "tolconditioncov": lambda v: cmax > v * cmin,
        # no coordinate can be below its mean's resolution while 0.2 min sigma_i > |m| eps
        "noeffectcoord": lambda v: 0.2 * wmin <= mabs * eps and bool(
            (mean + 0.2 * widths == mean).any()),
        "tolflatfitness": lambda v: st["flat"] > v,
    }
    return {k: v for k, v in opts.items() if checks[k](v)}


class StopsForGood:
    """A population optimizer that can stop for good (a mixin before
    :class:`~evoopt.PopulationOptimizer` in the bases). The state holds ``stopped`` (``{}``
    while it goes on); :meth:`_stop_for_good` latches the reasons and warns once."""

    #: what the reasons are, for the messages
    stop_what: str = "CMA-ES's termination criteria"
    #: how to search on, for the messages
    stop_remedy: str = "pass looser stop= criteria (tolfun, tolx, ...) or stop=False"

    def _stop_for_good(self, st: dict[str, Any], reasons: dict[str, Any], note: str = "") -> None:
        st["stopped"] = dict(reasons)
        warnings.warn(
            f"{type(self).__name__} stopped at generation {st['generation'] + 1}: "
            f"{self.stop_what} {st['stopped']}{note}; the parameters keep the final center "
            "and further step() calls are no-ops and ask() raises (check opt.stopped)",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )

    def _check_not_stopped(self) -> None:
        st = self.state.get(STATE_KEY)
        if st and st["stopped"]:
            raise RuntimeError(
                f"{type(self).__name__} has stopped ({self.stop_what} {st['stopped']}, see "
                "opt.stopped): it samples no further generations and the parameters hold its "
                f"final center; end the loop when opt.stopped is non-empty, or "
                f"{self.stop_remedy} to search on"
            )

    def ask(self):
        """As :meth:`PopulationOptimizer.ask`; raises ``RuntimeError`` once :attr:`stopped`
        is non-empty (an ask/tell loop ends on ``opt.stopped``, as pycma's on ``es.stop()``)."""
        self._check_not_stopped()
        return super().ask()

    def step(self, closure=None) -> Tensor:
        """As :meth:`PopulationOptimizer.step`. Once :attr:`stopped` is non-empty it is a
        no-op, as torch's LBFGS is once converged: nothing is evaluated (the closure is not
        called), the parameters keep the final center, and the last generation's mean loss
        is returned. (A loop that runs until ``opt.num_evals`` reaches a budget must also
        end on ``opt.stopped``: the count no longer grows.)"""
        st = self.state.get(STATE_KEY)
        if st and st["stopped"]:
            mean_loss = self.last.mean_loss if self.last is not None else math.nan
            return torch.tensor(mean_loss, dtype=torch.float64)
        return super().step(closure)

    @property
    def stopped(self) -> dict[str, Any]:
        """Empty while the search goes on; once it has stopped for good, the termination
        criteria that held (reason -> value). Latched: it stays set, also across
        ``state_dict``/``load_state_dict`` and pickling."""
        st = self.state.get(STATE_KEY)
        return dict(st["stopped"]) if st else {}
