"""The Gymnasium backend of :class:`rl.rollout.PopulationRollout`: one episode in each env
slot, with one batched policy forward per time step, on numpy envs in-process.

    gym_rollout(pool, actor, params, seeds, *, native, max_episode_steps, ...) -> dict
    add_obs_rows(stats, chunks, keep)   # the observations of kept, finite rows into stats

Slot ``j`` plays one episode from ``env.reset(seed=seeds[j])`` with ``params[..][j]``.
``native=True`` steps Gymnasium's own vector env (CartPole's, which takes one integer
seed and autoresets NEXT_STEP: each slot's initial state is set from a single env reset
with that slot's seed, and steps after a slot's episode end are ignored); otherwise a
list of single envs steps only the live slots, and an env that raises fails its slot
alone and is rebuilt (its state is unknown).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .actor import Actor
from .gym_envs import EnvPool
from .normalization import RunningNorm

__all__ = ["OBS_FLUSH_ROWS", "add_obs_rows", "gym_rollout"]

#: :func:`add_obs_rows` updates the statistics in batches of at least this many rows.
OBS_FLUSH_ROWS = 1 << 16


class _Slots:
    """What the ``M`` slots of one batch have gathered: returns (the env's, and shifted),
    lengths, which failed or are still alive, the first errors, the observations acted on
    (with their slots) when statistics are kept."""

    def __init__(self, M: int, keep_obs: bool):
        self.returns = np.zeros(M)
        self.shifted = np.zeros(M)
        self.lengths = np.zeros(M, dtype=np.int64)
        self.failed = np.zeros(M, dtype=bool)
        self.alive = np.ones(M, dtype=bool)
        self.errors: list[str] = []
        self.obs_rows: list[tuple[np.ndarray, np.ndarray]] | None = [] if keep_obs else None
        self.num_steps = 0

    def record(self, obs: np.ndarray) -> None:
        if self.obs_rows is not None:
            self.obs_rows.append((obs[self.alive], np.flatnonzero(self.alive)))

    def fail(self, j: int, err: BaseException) -> None:
        self.failed[j] = True
        self.alive[j] = False
        if len(self.errors) < 5:
            self.errors.append(f"slot {j}: {type(err).__name__}: {err}")

    def result(self) -> dict[str, Any]:
        return {"returns": self.returns, "shifted": self.shifted, "lengths": self.lengths,
                "failed": self.failed, "num_steps": self.num_steps, "errors": self.errors}


def _reset_native(pool: EnvPool, seeds: list[int]):
    """The native vector env with each slot's state set from a single env's reset."""
    M = len(seeds)
    venv = pool.vector(M)
    single = pool.singles(1)[0]
    venv.reset(seed=int(seeds[0]))
    state = venv.unwrapped.state
    obs = np.empty((M, *single.observation_space.shape), dtype=np.float32)
    for j, s in enumerate(seeds):
        obs[j], _ = single.reset(seed=int(s))
        state[:, j] = single.unwrapped.state
    return venv, obs


def _reset_sync(pool: EnvPool, seeds: list[int], slots: _Slots):
    """The single envs reset with their seeds, and the observations (None: all failed)."""
    M = len(seeds)
    envs = pool.singles(M)
    first = None
    obs_list: list[Any] = [None] * M
    for j, s in enumerate(seeds):
        try:
            obs_list[j], _ = envs[j].reset(seed=int(s))
            if first is None:
                first = np.asarray(obs_list[j])
        except Exception as e:  # noqa: BLE001 - one env must not lose the generation
            slots.fail(j, e)
            pool.replace(j)
    if first is None:
        return envs, None
    obs = np.zeros((M, *first.shape), dtype=first.dtype)
    for j in range(M):
        if obs_list[j] is not None:
            obs[j] = obs_list[j]
    return envs, obs


def _step_native(venv, actor: Actor, a_np: np.ndarray, slots: _Slots, reward_shift: float):
    """One step of every slot of the native vector env; the next observations."""
    alive = slots.alive
    a = a_np.astype(np.int64)
    a[~alive] = int(actor.space.start)
    obs, r, term, trunc, _ = venv.step(a)
    r = np.asarray(r, dtype=np.float64)
    slots.returns += np.where(alive, r, 0.0)
    slots.shifted += np.where(alive, r + reward_shift, 0.0)
    slots.lengths += alive
    slots.num_steps += int(np.count_nonzero(alive))
    alive &= ~(term | trunc)
    return obs


def _step_sync(pool: EnvPool, envs, actor: Actor, a_np: np.ndarray, obs: np.ndarray,
               slots: _Slots, reward_shift: float) -> np.ndarray:
    """One step of each live single env (``obs`` updated in place)."""
    space = actor.space
    for j in np.flatnonzero(slots.alive):
        aj = int(a_np[j]) if actor.discrete else a_np[j].astype(space.dtype).reshape(space.shape)
        try:
            o, r, term, trunc, _ = envs[j].step(aj)
        except Exception as e:  # noqa: BLE001
            slots.fail(j, e)
            pool.replace(j)  # its state is unknown: the next call gets a fresh env
            continue
        obs[j] = o
        slots.returns[j] += float(r)
        slots.shifted[j] += float(r) + reward_shift
        slots.lengths[j] += 1
        slots.num_steps += 1
        if term or trunc:
            slots.alive[j] = False
    return obs


def _actions(actor: Actor, prepared, obs: np.ndarray, slots: _Slots, action_noise: float,
             noise_gen: torch.Generator | None) -> np.ndarray:
    """The batched policy's actions; a slot whose output is NaN/inf fails."""
    out = actor.outputs(prepared, obs)
    out_np = out.cpu().numpy().reshape(len(obs), -1)
    if not np.isfinite(out_np.sum()):  # one reduction per step; per-row check only then
        bad = ~np.isfinite(out_np).all(-1)
        for j in np.flatnonzero(bad & slots.alive):
            slots.fail(j, FloatingPointError("the policy's output is NaN or infinite"))
    noise = None
    if action_noise > 0:
        noise = action_noise * torch.randn(out.shape, generator=noise_gen, dtype=torch.float64)
    return actor.actions(out, out_np, noise)


@torch.no_grad()
def gym_rollout(
    pool: EnvPool,
    actor: Actor,
    params: dict[str, Tensor],
    seeds: list[int],
    *,
    native: bool,
    max_episode_steps: int | None,
    reward_shift: float = 0.0,
    action_noise: float = 0.0,
    noise_gen: torch.Generator | None = None,
    obs_stats: RunningNorm | None = None,
    group: int = 1,
) -> dict[str, Any]:
    """Play one episode in each of ``M = len(seeds)`` slots; slot j uses ``params[..][j]``
    and ``env.reset(seed=seeds[j])``. Returns numpy arrays ``returns`` (the env's),
    ``shifted``, ``lengths``, ``failed`` and ``num_steps``, ``errors``. When ``obs_stats``
    is given, the observations the live slots act on are added to it after the episodes,
    except those of a failed member (slots ``[g * group, (g + 1) * group)`` form member g)
    and rows with a NaN/inf entry (:func:`add_obs_rows`)."""
    slots = _Slots(len(seeds), keep_obs=obs_stats is not None)
    if native:
        venv, obs = _reset_native(pool, seeds)
    else:
        envs, obs = _reset_sync(pool, seeds, slots)
        if obs is None:
            return slots.result()
    prepared = actor.prepare(params)
    limit = max_episode_steps if max_episode_steps is not None else math.inf
    t = 0
    while slots.alive.any() and t < limit:
        slots.record(obs)
        a_np = _actions(actor, prepared, obs, slots, action_noise, noise_gen)
        if native:
            obs = _step_native(venv, actor, a_np, slots, reward_shift)
        else:
            obs = _step_sync(pool, envs, actor, a_np, obs, slots, reward_shift)
        t += 1
    nonfinite = ~np.isfinite(slots.returns) | ~np.isfinite(slots.shifted)
    for j in np.flatnonzero(nonfinite & ~slots.failed):
        slots.fail(j, FloatingPointError("the episode's return is not finite"))
    if obs_stats is not None:
        keep = ~slots.failed.reshape(-1, group).any(1).repeat(group)
        add_obs_rows(obs_stats, slots.obs_rows, keep)
    return slots.result()


def add_obs_rows(stats: RunningNorm, chunks: list[tuple[np.ndarray, np.ndarray]],
                 keep: np.ndarray) -> None:
    """Add to ``stats`` the recorded rows whose slot is kept and whose entries are all
    finite, in recording order, in batches of at least ``OBS_FLUSH_ROWS`` rows (one
    NaN observation must not poison a normaliser the whole population shares)."""
    batch: list[np.ndarray] = []
    nrows = 0
    for i, (rows, slots) in enumerate(chunks):
        rows = rows.reshape(rows.shape[0], -1)
        ok = keep[slots]
        if not np.isfinite(rows).all():
            ok &= np.isfinite(rows).all(1)
        rows = rows if ok.all() else rows[ok]
        batch.append(rows)
        nrows += rows.shape[0]
        if nrows >= OBS_FLUSH_ROWS or i == len(chunks) - 1:
            stats.update(torch.from_numpy(np.concatenate(batch).astype(np.float64)))
            batch, nrows = [], 0
