r"""Evaluate a population over Ray actors, and survive their faults.

Public API (stable; needs ``pip install evoopt[ray]``, imported only when used)::

    evaluator = RayEvaluator(objective_factory, num_actors=None, address=None, *,
                             num_cpus_per_actor=1, chunk_size=None, timeout=600.0,
                             startup_timeout=300.0, max_retries=2, worst=math.inf,
                             merge_stats=None, runtime_env=None)
    opt.step(evaluator)            # a population objective: Tensor[P] float64 losses
    evaluator(pop)                 # pop: an evoopt Population or a [P, D] tensor
    evaluator.evaluate(rows, generation=g)   # explicit generation index
    evaluator.set_stats(state)     # shared state broadcast before the next generation
    evaluator.last_info, evaluator.last_stats   # what the actors sent back, member order
    evaluator.events, evaluator.actors   # faults handled (also logged); live actor handles
    evaluator.close()              # or: with RayEvaluator(...) as evaluator: ...

How a generation runs. The driver splits the ``P`` rows into chunks of ``chunk_size``
consecutive members (default ``ceil(P / num_actors)``) and hands each idle actor one
chunk at a time: the chunk's rows as a numpy array (float32/float64, as in the
population), their member indices and the generation index. Only those rows travel (a
low-rank ``FactoredPopulation``: its factors, once per generation, and chunks carry member
indices); the objective itself (envs, models, data) is built once per actor by
``objective_factory()``, a picklable zero-argument callable. The losses come back and
are put in member order.

The objective protocol (in the actor; everything optional but a way to evaluate)::

    objective.evaluate_rows(rows, member_indices, generation)
        rows: [m, D] tensor; member_indices: [m] int64, each row's index in the
        population; generation: int. Returns [m] losses, or ([m] losses, info) where
        ``info`` is any picklable value (sent back, kept in ``last_info``).
    objective(pop)               # used without evaluate_rows: a population objective
                                 # called with Population(rows, layout) whose layout has
                                 # the driver's parameter names and shapes
    objective.set_stats(state)   # install the driver's shared state (e.g. an observation
                                 # normaliser) before evaluating; called when it changed
    objective.get_stats()        # after each chunk: the statistics gathered while
                                 # evaluating it (a delta), sent back with the losses

On the driver, ``merge_stats(deltas) -> state | None`` (an argument) receives the deltas
of a generation in member order and returns the state to broadcast for the next one
(or ``None``); ``set_stats`` broadcasts a state directly. ``rl.ray_rollout`` uses this to
Chan-merge observation statistics.

Determinism. Member-level seeding must come from ``(member_indices, generation)``, never
from which actor runs a row or in which order: then the losses do not depend on
``num_actors``. Statistics are combined per chunk in member order, so with a fixed
``chunk_size`` they do not depend on ``num_actors`` either, bit for bit.

Fault tolerance. An actor that dies (``ray.kill``, a crash), whose call raises, or that
runs a chunk past ``timeout`` seconds is killed and replaced by a new actor built from
the factory; its chunk is sent again (to whichever actor is idle first). A chunk that
failed ``max_retries + 1`` times is split into one-member chunks, each tried
``max_retries + 1`` times; a member that still fails gets the loss ``worst`` (default
``+inf``, which evoopt's optimizers rank worst with a warning), so the generation
completes. Each event is logged on the logger ``"evoopt.distributed"`` (warning level)
and appended to ``events`` as ``{"generation", "kind" ("died" | "raised" | "timeout" |
"start_failed" | "gave_up"), "actor", "error", "members", "attempt"}``. If nothing
succeeds (more than ``2 * (max_retries + 1) * num_actors`` failures in a row without
one success: a broken factory or objective), a ``RuntimeError`` says so instead of
retrying every member.

Ray runtime: ``address=None`` starts a local Ray unless one runs (``close`` shuts down
only a runtime it started); ``"ray://host:10001"`` or ``"auto"`` joins a cluster (see
docs/scaling.md). Each actor pins ``torch.set_num_threads(num_cpus_per_actor)``.
"""

from __future__ import annotations

import collections
import logging
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checks import check_int, check_positive
from .lowrank import FactoredPopulation
from .population import ParamLayout, Population
from .protocols import AcceptsStats, ReportsStats, RowObjective

__all__ = ["RayEvaluator", "import_ray"]

logger = logging.getLogger("evoopt.distributed")

_INSTALL_HINT = "Ray is needed for distributed evaluation: pip install evoopt[ray]"


def import_ray():
    """Import and return the ``ray`` module, or raise an ImportError saying how to get it."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_INSTALL_HINT} ({e})") from e
    return ray


# ------------------------------------------------------------------ actor side
class _Worker:
    """The body of one Ray actor: holds the objective built by the factory."""

    def __init__(self, factory: Callable[[], Any], num_threads: int):
        torch.set_num_threads(num_threads)
        self.objective = factory()
        self.version = -1
        self.layouts: dict[tuple, ParamLayout] = {}

    def ready(self) -> int:
        return os.getpid()

    def run(self, rows: np.ndarray, members: np.ndarray, generation: int, layout_spec, state,
            version: int):
        obj = self.objective
        if version != self.version:
            if state is not None and isinstance(obj, AcceptsStats):
                obj.set_stats(state)
            self.version = version
        idx = torch.from_numpy(np.array(members))
        # a factored population: build the rows; Ray's arrays: read-only views of its store
        x = (rows.rows(idx) if isinstance(rows, FactoredPopulation)
             else torch.from_numpy(np.array(rows)))
        if isinstance(obj, RowObjective):
            out = obj.evaluate_rows(x, idx, int(generation))
        else:
            out = obj(Population(x, self._layout(layout_spec, x)))
        info = None
        if isinstance(out, tuple):
            out, info = out
        losses = torch.as_tensor(out).detach().to("cpu", torch.float64).reshape(-1)
        if losses.shape[0] != len(members):
            raise ValueError(f"the objective returned {losses.shape[0]} losses for "
                             f"{len(members)} rows (expected one loss per row)")
        stats = obj.get_stats() if isinstance(obj, ReportsStats) else None
        return losses.numpy(), info, stats

    def _layout(self, spec, x: Tensor) -> ParamLayout:
        names, shapes = spec
        key = (tuple(names), tuple(map(tuple, shapes)), x.dtype)
        if key not in self.layouts:
            params = [torch.zeros(s, dtype=x.dtype) for s in shapes]
            self.layouts[key] = ParamLayout(params, list(names))
        return self.layouts[key]


# ------------------------------------------------------------------ driver side
@dataclass
class _Chunk:
    members: np.ndarray  # int64 member indices
    attempts: int = 0


@dataclass
class _Slot:
    wid: int
    handle: Any
    ready_ref: Any = None  # set while the actor is starting
    busy: Any = None  # (ref, chunk, t0) while it evaluates a chunk
    started: float = field(default_factory=time.monotonic)


class RayEvaluator:
    """A population objective that evaluates the rows of each generation on Ray actors.

    Args:
        objective_factory: picklable zero-argument callable building the objective in each
            actor (see the module docstring for the protocol).
        num_actors: number of actors (default: the cluster's CPUs / ``num_cpus_per_actor``
            when Ray is running, else ``os.cpu_count()``).
        address: ``None`` (local Ray) or a cluster address for ``ray.init(address=...)``.
        num_cpus_per_actor: CPUs reserved by each actor (also its torch threads).
        chunk_size: members per task (default ``ceil(P / num_actors)``); fix it to make
            merged statistics independent of ``num_actors``.
        timeout: seconds a chunk may run before its actor is killed and replaced
            (``None``: no limit).
        startup_timeout: seconds an actor may take to start (build its objective) before
            it is replaced (e.g. when the cluster lacks the CPUs it asks for).
        max_retries: retries of a failing chunk (then of each of its members).
        worst: the loss of a member whose evaluation keeps failing.
        merge_stats: driver-side ``merge_stats(deltas) -> state | None`` (see above).
        runtime_env: passed to ``ray.init`` when this evaluator starts Ray.
    """

    is_population_objective = True

    def __init__(
        self,
        objective_factory: Callable[[], Any],
        num_actors: int | None = None,
        address: str | None = None,
        *,
        num_cpus_per_actor: float = 1,
        chunk_size: int | None = None,
        timeout: float | None = 600.0,
        startup_timeout: float = 300.0,
        max_retries: int = 2,
        worst: float = math.inf,
        merge_stats: Callable[[list], Any] | None = None,
        runtime_env: dict | None = None,
    ):
        if not callable(objective_factory):
            raise ValueError(f"Invalid objective_factory: {objective_factory!r} (expected a "
                             "picklable zero-argument callable that builds the objective)")
        if num_actors is not None:
            check_int("num_actors", num_actors)
        check_positive("num_cpus_per_actor", num_cpus_per_actor)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size)
        self.timeout = None if timeout is None else check_positive("timeout", timeout)
        self.startup_timeout = check_positive("startup_timeout", startup_timeout)
        self.max_retries = check_int("max_retries", max_retries, minimum=0)
        if isinstance(worst, bool) or not isinstance(worst, numbers.Real) or math.isnan(worst):
            raise ValueError(f"Invalid worst: {worst!r} (expected a number; +inf ranks worst)")
        self.worst = float(worst)
        if merge_stats is not None and not callable(merge_stats):
            raise ValueError(f"Invalid merge_stats: {merge_stats!r} (expected a callable or None)")
        if address is not None and not isinstance(address, str):
            raise ValueError(f"Invalid address: {address!r} (expected a Ray address string or "
                             "None)")
        self.merge_stats = merge_stats

        ray = import_ray()
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if runtime_env is not None:
                kw["runtime_env"] = runtime_env
            if address is None:
                n = num_actors or os.cpu_count() or 1
                kw["num_cpus"] = max(1, math.ceil(n * num_cpus_per_actor))
            ray.init(address=address, **kw)
            self._owns_ray = True
        if num_actors is None:
            cpus = ray.cluster_resources().get("CPU", 1)
            num_actors = max(1, int(cpus // num_cpus_per_actor))
        self.num_actors = num_actors
        self.num_cpus_per_actor = num_cpus_per_actor
        self._remote_cls = ray.remote(num_cpus=num_cpus_per_actor, max_restarts=0)(_Worker)
        self._factory_ref = ray.put(objective_factory)
        self._threads = max(1, int(num_cpus_per_actor))
        self._next_wid = 0
        self._slots: list[_Slot] = [self._start_actor() for _ in range(num_actors)]

        self.generation = 0
        self.events: list[dict[str, Any]] = []
        self.last_info: list[tuple[np.ndarray, Any]] = []
        self.last_stats: list[Any] = []
        self._state = None
        self._state_ref = None
        self._state_version = 0
        self._closed = False

    # ------------------------------------------------------------- actors
    def _start_actor(self) -> _Slot:
        handle = self._remote_cls.remote(self._factory_ref, self._threads)
        slot = _Slot(self._next_wid, handle)
        slot.ready_ref = handle.ready.remote()
        self._next_wid += 1
        return slot

    def _replace(self, slot: _Slot) -> _Slot:
        try:
            self._ray.kill(slot.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        new = self._start_actor()
        self._slots[self._slots.index(slot)] = new
        return new

    @property
    def actors(self) -> list:
        """The live actor handles (a replaced actor's handle leaves this list)."""
        return [s.handle for s in self._slots]

    def _event(self, kind: str, slot: _Slot, error: str, members, attempt: int,
               generation: int) -> None:
        ev = {"generation": generation, "kind": kind, "actor": slot.wid, "error": error,
              "members": [int(m) for m in members], "attempt": attempt}
        self.events.append(ev)
        logger.warning("generation %d: actor %d %s (%s); members %s %s", generation, slot.wid,
                       kind, error, _short(ev["members"]),
                       "re-sent" if kind != "gave_up" else f"get loss {self.worst}")

    # -------------------------------------------------------------- state
    def set_stats(self, state: Any) -> None:
        """Broadcast ``state`` to every actor (``objective.set_stats``) before the next chunk."""
        self._state = state
        self._state_ref = None
        self._state_version += 1

    def state_dict(self) -> dict[str, Any]:
        return {"generation": self.generation}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("generation"), int):
            raise ValueError("Invalid state_dict: expected {'generation': int} from "
                             "RayEvaluator.state_dict()")
        self.generation = state_dict["generation"]

    # ------------------------------------------------------------ evaluate
    def __call__(self, pop) -> Tensor:
        out = self.evaluate(pop, generation=self.generation)
        self.generation += 1
        return out

    def evaluate(self, pop, *, generation: int) -> Tensor:
        """Losses [P] (float64) of the rows of ``pop`` (a Population or a [P, D] tensor)."""
        if self._closed:
            raise RuntimeError("RayEvaluator is closed")
        rows, spec = _rows_of(pop)
        if self._state_ref is None and self._state is not None:
            self._state_ref = self._ray.put(self._state)
        run = _Generation(self, rows, spec, generation)
        while run.todo or any(s.busy is not None for s in self._slots):
            run.dispatch()
            for ref, slot in run.wait():
                run.collect(ref, slot)
            run.check_deadlines()
        done = sorted(run.done, key=lambda d: int(d[0][0]))
        self.last_info = [(m, info) for m, info, _ in done]
        self.last_stats = [s for _, _, s in done]
        if self.merge_stats is not None:
            state = self.merge_stats(self.last_stats)
            if state is not None:
                self.set_stats(state)
        return run.losses

    # -------------------------------------------------------------- close
    def close(self) -> None:
        """Kill the actors (and shut down Ray if this evaluator started it)."""
        if self._closed:
            return
        self._closed = True
        for s in self._slots:
            try:
                self._ray.kill(s.handle, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self._slots = []
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RayEvaluator(num_actors={self.num_actors}, chunk_size={self.chunk_size}, "
                f"timeout={self.timeout}, max_retries={self.max_retries}, "
                f"events={len(self.events)})")


def _rows_of(pop) -> tuple[np.ndarray | FactoredPopulation, tuple[list, list]]:
    """The rows of ``pop`` as a float32/float64 numpy array (a factored population as it
    is), and the layout spec (names, shapes) the actors rebuild a Population with."""
    if isinstance(pop, FactoredPopulation):
        return pop, (list(pop.layout.names), [list(s) for s in pop.layout.shapes])
    if isinstance(pop, Population):
        flat, spec = pop.flat, (list(pop.layout.names), [list(s) for s in pop.layout.shapes])
    elif isinstance(pop, Tensor) and pop.dim() == 2:
        flat, spec = pop, (["0"], [[pop.shape[1]]])
    else:
        raise ValueError(f"Invalid population: {type(pop).__name__} (expected an evoopt "
                         "Population or a [P, D] tensor)")
    rows = flat.detach().cpu().numpy()
    if rows.dtype not in (np.float32, np.float64):
        rows = rows.astype(np.float64)
    return rows, spec


class _Generation:
    """One :meth:`RayEvaluator.evaluate` call, in steps: hand chunks to idle actors
    (:meth:`dispatch`), wait for a result or a deadline (:meth:`wait`), take a result or a
    failure in (:meth:`collect`), replace actors past their deadlines
    (:meth:`check_deadlines`). A failed chunk is re-sent first, then split into members;
    too many failures in a row raise."""

    def __init__(self, ev: RayEvaluator, rows, spec, generation: int):
        self.ev, self.rows, self.spec, self.generation = ev, rows, spec, generation
        # a factored population goes to Ray's store once; its chunks carry member indices
        self.factored_ref = ev._ray.put(rows) if isinstance(rows, FactoredPopulation) else None
        P = len(rows)
        size = ev.chunk_size or max(1, math.ceil(P / ev.num_actors))
        self.todo = collections.deque(
            _Chunk(np.arange(a, min(a + size, P), dtype=np.int64)) for a in range(0, P, size))
        self.losses = torch.full((P,), ev.worst, dtype=torch.float64)
        self.done: list[tuple[np.ndarray, Any, Any]] = []
        self.fails_in_a_row, self.first_error = 0, None
        self.limit = 2 * (ev.max_retries + 1) * ev.num_actors + 1

    def dispatch(self) -> None:
        """Hand out chunks to idle, started actors."""
        ev = self.ev
        for slot in ev._slots:
            if self.todo and slot.busy is None and slot.ready_ref is None:
                chunk = self.todo.popleft()
                payload = (self.factored_ref if self.factored_ref is not None
                           else self.rows[chunk.members])
                ref = slot.handle.run.remote(payload, chunk.members,
                                             self.generation, self.spec, ev._state_ref,
                                             ev._state_version)
                slot.busy = (ref, chunk, time.monotonic())

    def wait(self) -> list[tuple[Any, _Slot]]:
        """The first reference ready (an actor started or a chunk done), or none when the
        nearest deadline passed first."""
        ev = self.ev
        waiting = {}
        for slot in ev._slots:
            if slot.ready_ref is not None:
                waiting[slot.ready_ref] = slot
            if slot.busy is not None:
                waiting[slot.busy[0]] = slot
        deadlines = [s.busy[2] + ev.timeout for s in ev._slots
                     if s.busy and ev.timeout is not None]
        deadlines += [s.started + ev.startup_timeout for s in ev._slots if s.ready_ref is not None]
        wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        ready, _ = ev._ray.wait(list(waiting), num_returns=1, timeout=wait_s)
        return [(ref, waiting[ref]) for ref in ready]

    def collect(self, ref, slot: _Slot) -> None:
        """An actor's start, or a chunk's losses (or the failure that ended either)."""
        ray = self.ev._ray
        if ref is slot.ready_ref:
            try:
                ray.get(ref)
                slot.ready_ref = None
            except Exception as e:  # noqa: BLE001 - the factory raised or the actor died
                self.failed(slot, "start_failed", _error_text(e), None)
            return
        _, chunk, _ = slot.busy
        slot.busy = None
        try:
            out, info, stats = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            return self.failed(slot, "died", _error_text(e), chunk)
        except Exception as e:  # noqa: BLE001 - the objective raised in the actor
            return self.failed(slot, "raised", _error_text(e), chunk)
        self.fails_in_a_row = 0
        self.losses[torch.from_numpy(chunk.members)] = torch.tensor(out, dtype=torch.float64)
        self.done.append((chunk.members, info, stats))

    def check_deadlines(self) -> None:
        """Replace actors whose chunk ran past ``timeout`` or that did not start in time."""
        ev, now = self.ev, time.monotonic()
        for slot in list(ev._slots):
            if ev.timeout is not None and slot.busy is not None and now - slot.busy[2] > ev.timeout:
                _, chunk, t0 = slot.busy
                slot.busy = None
                self.failed(slot, "timeout",
                            f"no result after {now - t0:.1f} s (timeout={ev.timeout} s)", chunk)
            elif slot.ready_ref is not None and now - slot.started > ev.startup_timeout:
                self.failed(slot, "start_failed",
                            f"not started after {now - slot.started:.0f} s "
                            f"(startup_timeout={ev.startup_timeout} s; are there num_actors x "
                            "num_cpus_per_actor free CPUs in the cluster?)", None)

    def failed(self, slot: _Slot, kind: str, error: str, chunk: _Chunk | None) -> None:
        """Log the event, replace the actor, and re-send, split or give up the chunk."""
        ev = self.ev
        self.fails_in_a_row += 1
        self.first_error = self.first_error or error
        members = chunk.members if chunk is not None else []
        attempt = 0
        if chunk is not None:
            chunk.attempts += 1
            attempt = chunk.attempts
        ev._event(kind, slot, error, members, attempt, self.generation)
        ev._replace(slot)
        if chunk is not None:
            if chunk.attempts <= ev.max_retries:
                self.todo.appendleft(chunk)
            elif len(chunk.members) > 1:
                self.todo.extendleft(_Chunk(chunk.members[i:i + 1])
                                     for i in reversed(range(len(chunk.members))))
            else:
                ev._event("gave_up", slot, error, members, attempt, self.generation)
        if self.fails_in_a_row >= self.limit:
            raise RuntimeError(
                f"RayEvaluator: {self.fails_in_a_row} evaluations failed in a row without one "
                f"success (first error: {self.first_error}); the objective or its factory is "
                "broken")


def _error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), "")
    return f"{type(e).__name__}: {last[:300]}"


def _short(members: list[int]) -> str:
    return str(members) if len(members) <= 8 else f"[{members[0]}..{members[-1]}] ({len(members)})"
