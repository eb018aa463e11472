r"""Population rollouts on the device backends (``backend="torch" | "warp"``): the rollout
kernel over a :class:`rl.envs.TorchVectorEnv` whose state, observations, rewards and masks
stay on one torch device for the whole generation.

Public API::

    BACKENDS                                   # ("gymnasium", "torch", "warp", "auto")
    as_device(device) -> torch.device
    resolve_backend(env, backend) -> str       # "gymnasium" | "torch" | "warp", or a ValueError
    DeviceEnvs(env_id, device, max_episode_steps, env_kwargs).get(num_envs)
    SlotObsStats(num_slots, obs_dim, shift)    # per-slot observation sums on the device
    device_rollout(env, actor, params, obs, ...) -> dict   # one episode per env slot

One generation is one loop of at most ``max_steps`` steps over tensors::

    obs -> frozen normaliser -> batched policy forward -> actions -> env.step
        -> rewards accumulated under the alive mask

Member ``i``'s ``k``-th episode is env slot ``i * K + k`` (one episode per slot, the env
built with ``autoreset_mode="disabled"``, so no slot is ever reset inside a generation:
an ended slot is frozen with reward 0). The only host synchronisation inside the loop is
an "all done?" check every ``check_every`` steps; everything else is read back once, at
the end.

Observation statistics (:class:`SlotObsStats`): each slot accumulates, on the device, the
count, sum and sum of squares of its live, finite observations, shifted by the frozen
normaliser's mean (``x - shift``, which keeps the one-pass formula well conditioned).
At the end the slots of failed members are dropped and the rest reduced to Chan et al.'s
sufficient statistics::

    n = sum_j c_j,   s = sum_j S_j,   q = sum_j Q_j
    mean = shift + s / n,   m2 = q - s**2 / n

the same statistics as the numpy path's ``RunningNorm.batch_stats`` on the same rows, up
to rounding (tested to 1e-10 relative), merged into the policy's normaliser once per
generation as the numpy path does.

Seeds: the env's generator is reseeded for each rollout with a word derived from the slot
seeds the numpy path would use (``SeedSequence(slot_seeds)``), so a generation's initial
states are a function of ``(seed, generation)`` and resume is exact; they are not the
gymnasium backend's initial states (a different generator), but from the same state the
same policy gets the same return (``tests/rl/test_device_rollout.py``). Failures: a slot
whose policy output is NaN/inf is marked failed (the env gets a valid placeholder action);
a return that is not finite fails its slot too. An exception raised by the env itself is
not isolated per slot (one batched call steps every slot) and propagates.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evoopt.checks import check_choice

from . import envs as device_envs
from .actor import DeviceActor
from .envs.base import as_device

__all__ = [
    "BACKENDS", "DeviceEnvs", "SlotObsStats", "as_device", "device_rollout", "resolve_backend",
]

BACKENDS = ("gymnasium", "torch", "warp", "auto")
#: steps between two "all done?" checks (one host synchronisation each)
CHECK_EVERY = 8
_WARP_FIX = 'install MuJoCo Warp with `pip install -e ".[warp]"`, or use backend="gymnasium"'


def _warp_installed() -> bool:
    return importlib.util.find_spec("mujoco_warp") is not None


def resolve_backend(env, backend: str) -> str:
    """The backend that runs ``env``: ``"auto"`` picks ``"torch"`` for the classic-control ids,
    ``"warp"`` for the MuJoCo ids when MuJoCo Warp is installed, else ``"gymnasium"``. An
    explicit device backend that cannot run ``env`` raises an error that names the fix."""
    check_choice("backend", backend, BACKENDS)
    if backend == "gymnasium":
        return backend
    classic = isinstance(env, str) and env in device_envs.CLASSIC
    mujoco = isinstance(env, str) and env in device_envs.MUJOCO
    if backend == "auto":
        return "torch" if classic else "warp" if mujoco and _warp_installed() else "gymnasium"
    if not (classic or mujoco):
        what = f"env id {env!r}" if isinstance(env, str) else "an env constructor"
        raise ValueError(
            f"Invalid backend: {backend!r} needs an env with a device implementation, got {what} "
            f"(expected one of {device_envs.registered()}); use backend='gymnasium' for any "
            "other Gymnasium env")
    if backend == "torch" and mujoco:
        raise ValueError(f"Invalid backend: 'torch' has no {env!r} (MuJoCo envs run on "
                         "backend='warp')")
    if backend == "warp" and classic:
        raise ValueError(f"Invalid backend: 'warp' has no {env!r} (classic-control envs run "
                         "on backend='torch')")
    if backend == "warp" and not _warp_installed():
        raise ImportError(f"backend='warp' needs the mujoco-warp package: {_WARP_FIX}")
    return backend


class DeviceEnvs:
    """Device envs of ``env_id`` built once per number of slots (``autoreset_mode="disabled"``,
    no per-step action check: the actors' actions are in range by construction)."""

    def __init__(self, env_id: str, device: torch.device, max_episode_steps: int | None,
                 env_kwargs: dict[str, Any]):
        self.env_id, self.device = env_id, device
        self.max_episode_steps, self.env_kwargs = max_episode_steps, dict(env_kwargs)
        self.envs: dict[int, device_envs.TorchVectorEnv] = {}

    def get(self, num_envs: int) -> device_envs.TorchVectorEnv:
        if num_envs not in self.envs:
            kw = {"check_actions": False, **self.env_kwargs}
            self.envs[num_envs] = device_envs.make(
                self.env_id, num_envs, device=self.device, autoreset_mode="disabled",
                max_episode_steps=self.max_episode_steps, **kw)
        return self.envs[num_envs]

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs = {}


class SlotObsStats:
    """Per-slot count, sum and sum of squares of observations (shifted by ``shift``), float64
    on the device; :meth:`stats` reduces the kept slots to ``{"count", "mean", "m2"}``."""

    def __init__(self, num_slots: int, obs_dim: int, shift: Tensor):
        kw = dict(dtype=torch.float64, device=shift.device)
        self.shift = shift.to(torch.float64).reshape(obs_dim)
        self.count = torch.zeros(num_slots, **kw)
        self.sum = torch.zeros(num_slots, obs_dim, **kw)
        self.sumsq = torch.zeros(num_slots, obs_dim, **kw)

    @property
    def state(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.count, self.sum, self.sumsq

    @state.setter
    def state(self, value: tuple[Tensor, Tensor, Tensor]) -> None:
        self.count, self.sum, self.sumsq = value

    @staticmethod
    def accumulate(state, centered: Tensor, mask: Tensor):
        """``state`` plus row j of ``centered`` (observations minus ``shift``, float64
        ``[M, obs_dim]``) in slot j where ``mask[j]`` and the row is finite (new tensors)."""
        count, total, sumsq = state
        ok = mask & torch.isfinite(centered).all(1)
        x = torch.where(ok.unsqueeze(1), centered, 0.0)
        return count + ok, total + x, torch.addcmul(sumsq, x, x)

    def add(self, centered: Tensor, mask: Tensor) -> None:
        """:meth:`accumulate` in place."""
        self.state = self.accumulate(self.state, centered, mask)

    def stats(self, keep: Tensor) -> dict[str, Tensor]:
        """The statistics of the slots in ``keep`` (a bool mask), as ``RunningNorm.stats``."""
        k = keep.to(torch.float64)
        n = (self.count * k).sum()
        s = (self.sum * k.unsqueeze(1)).sum(0)
        q = (self.sumsq * k.unsqueeze(1)).sum(0)
        mean_shifted = s / n.clamp(min=1.0)
        m2 = (q - s * mean_shifted).clamp(min=0.0)
        return {"count": n, "mean": self.shift + mean_shifted, "m2": m2}


def _check_devices(env, params: dict[str, Tensor]) -> None:
    for name, t in params.items():
        if t.device != env.device:
            raise ValueError(
                f"Invalid policy: parameter {name!r} is on {t.device} but the env is on "
                f"{env.device} (move the policy and the optimizer with .to({str(env.device)!r}) "
                f"or build the rollout with device={str(t.device)!r}; nothing is moved "
                "silently)")


def _step(actor: DeviceActor, prepared, obs: Tensor, reward: Tensor, ended: Tensor,
          carry: tuple, stats_state, noise: Tensor | None):
    """The rollout's work between two env steps, one pure function (fused by ``compile``):
    account for the last step's ``reward`` and ``ended`` (terminated | truncated), then
    compute the actions for ``obs`` and count the step for the slots that take it.
    ``carry = (returns, lengths, alive, bad_output)``.

    An ended slot is frozen with reward 0 (the env's ``autoreset_mode="disabled"``), so only
    a failed slot's rewards would need masking, and a failed slot's return is discarded. A
    slot whose output is NaN/inf while alive fails (it is no longer alive).
    Returns ``(actions, carry, stats_state)``."""
    returns, lengths, alive, bad_output = carry
    returns = returns + reward
    alive = alive & ~ended
    centered = actor.center(prepared, obs)
    if stats_state is not None:
        stats_state = SlotObsStats.accumulate(stats_state, centered, alive)
    actions, bad = actor.actions(actor.outputs(prepared, obs, centered), noise)
    bad = bad & alive
    alive = alive & ~bad  # the slots that step now
    return actions, (returns, lengths + alive, alive, bad_output | bad), stats_state


_COMPILED: dict[str, Any] = {}
#: the smallest env the live slots are moved to
MIN_SLOTS = 64


def _bucket(n: int) -> int:
    return max(MIN_SLOTS, 1 << (n - 1).bit_length())


class _Slots:
    """Where the current env's slots come from (``origin``: the original slot of each, for
    the parameters) and the per-slot results of the slots that were moved out, indexed by
    original slot (row ``M`` collects the padding's values, which are dropped)."""

    def __init__(self, M: int, device, carry, stats_state):
        self.M = M
        self.origin = torch.arange(M, device=device)
        self.target = self.origin  # where each current slot's results go
        self.out = [torch.zeros((M + 1, *t.shape[1:]), dtype=t.dtype, device=device)
                    for t in (*carry, *(stats_state or ()))]

    def _write(self, carry, stats_state) -> None:
        for acc, t in zip(self.out, (*carry, *(stats_state or ()))):
            acc[self.target] = t

    def compact(self, env, resize, live: Tensor, obs: Tensor, carry, stats_state):
        """Move the ``live`` slots to a smaller env; returns ``(env, obs, carry, stats)``."""
        self._write(carry, stats_state)
        idx = live.nonzero().squeeze(1)
        n, size = idx.numel(), _bucket(idx.numel())
        pad = idx[:1].expand(size - n)  # copies of a live slot, never alive, results dropped
        take = torch.cat([idx, pad])
        self.origin = self.origin[take]
        self.target = torch.cat([self.target[idx], torch.full_like(pad, self.M)])
        state = env.get_state()
        small = resize(size)
        small.reset(seed=0)
        small.set_state({k: v[take] for k, v in state.items()
                         if k != "rng_state" and v.dim() and v.shape[0] == env.num_envs})
        alive = torch.arange(size, device=idx.device) < n
        returns, lengths, _, bad = (t[take] for t in carry)
        stats_state = None if stats_state is None else tuple(t[take] for t in stats_state)
        return small, obs[take], (returns, lengths, alive, bad), stats_state

    def finish(self, carry, stats_state):
        """The per-original-slot ``(returns, lengths, bad_output, stats_state)``."""
        self._write(carry, stats_state)
        out = [t[: self.M] for t in self.out]
        return out[0], out[1], out[3], (tuple(out[4:]) if stats_state is not None else None)


def _compiled(mode: bool | str):
    """:func:`_step` fused by ``torch.compile``; with ``"auto"``, eager where no compiler is
    found or where compiling fails (with a warning, once)."""
    if mode is False:
        return _step
    if mode not in (True, "auto"):
        raise ValueError(f"Invalid compile: {mode!r} (expected True, False or 'auto')")
    if mode == "auto" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return _step
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_step, dynamic=False)
    if mode is True:
        return _COMPILED["step"]

    def step(*args):
        try:
            return _COMPILED["step"](*args)
        except Exception as err:  # noqa: BLE001 (any compiler failure)
            warnings.warn(f"torch.compile failed, stepping the policy eagerly: {err}",
                          stacklevel=2)
            _COMPILED["step"] = _step
            return _step(*args)

    return step


@torch.no_grad()
def device_rollout(
    env,
    actor: DeviceActor,
    params: dict[str, Tensor],
    obs: Tensor,
    *,
    max_steps: int,
    reward_shift: float = 0.0,
    action_noise: float = 0.0,
    noise_seed: int = 0,
    group: int = 1,
    obs_stats: bool = False,
    check_every: int = CHECK_EVERY,
    compile: bool | str = False,
    resize: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Play one episode in each of the env's ``M`` slots, slot j with ``params[..][j]``, from
    the env's current state, whose observations are ``obs`` (what ``env.reset`` returned).
    Returns numpy ``returns`` (the env's), ``shifted``,
    ``lengths``, ``failed``, ``num_steps``, ``errors`` (as the gymnasium path) and
    ``obs_stats``: the statistics of the live, finite observations of the members (slots
    ``[g * group, (g + 1) * group)``) that did not fail, or None unless ``obs_stats``.
    ``compile``: fuse the policy step and the bookkeeping with ``torch.compile`` (``True``,
    ``"auto"``: where a compiler is found, falling back to eager with a warning).
    ``resize(n)``: an env of the same kind with ``n`` slots; when given, the live slots move
    to a smaller env (a power of two, at least :data:`MIN_SLOTS`) once they fit in half of
    the current one, so that late steps do not pay for the slots that ended (the state is
    carried over with ``get_state``/``set_state``; the returns do not change)."""
    _check_devices(env, params)
    M, dev = env.num_envs, env.device
    prepared = actor.prepare(params)
    stats = None
    if obs_stats:
        frozen = prepared[1]  # the rows are shifted by the frozen mean (or not at all)
        shift = frozen[0] if frozen is not None else obs.new_zeros(obs[0].numel(),
                                                                   dtype=torch.float64)
        stats = SlotObsStats(M, obs[0].numel(), shift)
    gen = None
    if action_noise > 0:
        gen = torch.Generator(device=dev).manual_seed(int(noise_seed))
    alive = torch.ones(M, dtype=torch.bool, device=dev)
    carry = (torch.zeros(M, dtype=torch.float64, device=dev),  # returns
             torch.zeros(M, dtype=torch.int64, device=dev), alive, torch.zeros_like(alive))
    reward, ended = torch.zeros(M, dtype=obs.dtype, device=dev), torch.zeros_like(alive)
    step = _compiled(compile)
    stats_state = None if stats is None else stats.state
    slots = _Slots(M, dev, carry, stats_state)
    noise = None
    for t in range(max_steps):
        if t and t % check_every == 0:
            live = carry[2] & ~ended
            n = int(live.sum())  # the one host synchronisation, every check_every steps
            if n == 0:
                break
            if resize is not None and _bucket(n) <= env.num_envs // 2:
                carry = (carry[0] + reward, *carry[1:])
                env, obs, carry, stats_state = slots.compact(
                    env, resize, live, obs, carry, stats_state)
                prepared = actor.prepare({k: v[slots.origin] for k, v in params.items()})
                reward, ended = torch.zeros_like(reward[: env.num_envs]), carry[2] & False
        if gen is not None:
            noise = action_noise * torch.randn((env.num_envs, actor.num_outputs),
                                               generator=gen, device=dev, dtype=torch.float64)
        actions, carry, stats_state = step(actor, prepared, obs, reward, ended, carry,
                                           stats_state, noise)
        obs, reward, terminated, truncated, _ = env.step(actions)
        ended = terminated | truncated
    carry = (carry[0] + reward, *carry[1:])  # the last step's reward
    returns, lengths, bad_output, stats_state = slots.finish(carry, stats_state)
    if stats is not None:
        stats.state = stats_state
    return _results(returns, lengths, bad_output, reward_shift, group, stats)


def _results(returns: Tensor, lengths: Tensor, bad_output: Tensor, reward_shift: float,
             group: int, stats: SlotObsStats | None) -> dict[str, Any]:
    """The rollout's dict (numpy arrays) from the slots' returns, lengths and bad outputs:
    a slot fails on a NaN/inf output or a non-finite return; the statistics keep only the
    members none of whose slots failed."""
    shifted = returns + reward_shift * lengths
    nonfinite = ~torch.isfinite(returns) | ~torch.isfinite(shifted)
    failed = bad_output | nonfinite
    member_ok = ~failed.reshape(-1, group).any(1).repeat_interleave(group)
    out_stats = None if stats is None else stats.stats(member_ok)
    failed_np, bad_np = failed.cpu().numpy(), bad_output.cpu().numpy()
    errors = [f"slot {j}: FloatingPointError: "
              + ("the policy's output is NaN or infinite" if bad_np[j]
                 else "the episode's return is not finite")
              for j in np.flatnonzero(failed_np)[:5]]
    lengths_np = lengths.cpu().numpy()
    return {"returns": returns.cpu().numpy(), "shifted": shifted.cpu().numpy(),
            "lengths": lengths_np, "failed": failed_np, "num_steps": int(lengths_np.sum()),
            "errors": errors, "obs_stats": out_stats}
