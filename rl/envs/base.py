"""``TorchVectorEnv``: a batch of ``num_envs`` environments whose whole state is torch
tensors on one device, following Gymnasium's ``gymnasium.vector.VectorEnv`` conventions
with tensors in and out.

A step's dynamics are one pure function of tensors, :meth:`TorchVectorEnv._transition`,
so that ``torch.compile`` can fuse them into one kernel (``compile=True``) while the eager
path (``compile=False``) runs the very same code. In this base class (the simulator-backed
envs: MuJoCo Warp) the time limit and the autoreset run eagerly around it, the autoreset
drawing fresh initial states for the envs that ended, and for those only, from one private
``torch.Generator`` on the env's device: each reset draws ``num_reset_draws`` uniforms per
resetting env, in env order, so the draws are a function of the seed and of the history of
resets, and ``get_state``/``set_state`` carry the generator's state (``rng_state``; exact
resume). Finding the envs that ended costs one host synchronisation per step (free on a
CPU; on a GPU a few microseconds), unless ``reset_subset = False`` (see
:meth:`_reset_subset`). The classic-control envs (:class:`rl.envs._classic.ClassicControlEnv`)
fuse the whole step instead, time limit and autoreset included, with counter-based reset
draws (no generator, no host synchronisation; ``rng_key`` and ``episodes`` in
``get_state``).

Autoreset modes (``metadata["autoreset_mode"]``):

- ``"same_step"`` (``AutoresetMode.SAME_STEP``): an env that terminates or is truncated is
  reset within the same ``step``; ``obs`` holds the new episode's first observation,
  ``info["final_obs"]`` ``[N, obs_dim]`` the ended episode's last observation (rows of envs
  that did not end hold their current observation) and ``info["_final_obs"]`` ``[N]`` the
  mask of envs that ended (Gymnasium 1.x names).
- ``"disabled"`` (``AutoresetMode.DISABLED``): ended envs wait for
  ``reset(options={"reset_mask": mask})``. Stepping an ended env is a documented no-op,
  where Gymnasium's ``SyncVectorEnv`` asserts: its state and observation stay frozen, its
  reward is 0 and its ``terminated``/``truncated`` repeat their final values, so that a
  batch in which each env plays one episode can keep stepping all envs in one call.

Subclasses (one per env family) set ``spec_id``, ``default_max_episode_steps``,
``num_reset_draws``, ``single_action_space`` and :meth:`_observation_space`, and implement
three pure hooks on a dict of state tensors (leading dimension ``num_envs``):
``_dynamics(physics, actions) -> (physics, reward, terminated)``,
``_initial_state(u) -> physics`` for the ``n`` envs being reset, from uniforms ``u`` in
[0, 1) of shape ``[n, num_reset_draws]`` (override :meth:`_reset_draws` for other draws;
``n`` is ``num_envs`` unless ``reset_subset``, see :meth:`_reset_subset`), and
``_observe(physics) -> obs``. The hooks must return new tensors, never write into their
inputs, and must not synchronise with the host (no ``.item()``, no data-dependent branch)
so that the step stays one fusable graph. ``_export_state``/``_import_state`` translate
between the hooks' layout and the public one of ``get_state`` (the classic envs keep one
contiguous ``[N]`` tensor per state variable: strided columns of an ``[N, d]`` tensor
make every elementwise op several times slower).
"""

from __future__ import annotations

import shutil
import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import Tensor

from evoopt.checks import check_choice, check_int

__all__ = ["TorchVectorEnv", "as_device"]

_AUTORESET_MODES = {"same_step": AutoresetMode.SAME_STEP, "disabled": AutoresetMode.DISABLED}
_DTYPES = (torch.float32, torch.float64)
_BOOKKEEPING = ("elapsed_steps", "terminated", "truncated")


def as_device(device) -> torch.device:
    """``torch.device`` with the CUDA index filled in, so that it compares equal to a
    tensor's ``.device``; a ``ValueError`` names a bad value."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Invalid device: {device!r} ({err})") from None
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``torch.where`` with an ``[N]`` mask broadcast over the trailing dimensions."""
    return torch.where(mask.view(mask.shape + (1,) * (a.dim() - 1)), a, b)


def _compiler_available() -> bool:
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++", "gcc", "cc"))


class TorchVectorEnv:
    """A batch of ``num_envs`` environments on ``device`` (see the module docstring).

    Args:
        num_envs: number of environments N.
        device: torch device of every tensor in and out.
        seed: seed of the private generator (``None``: a non-deterministic seed); ``reset``
            reseeds it when given a seed.
        dtype: ``torch.float32`` (default) or ``torch.float64`` for the state, observations
            and rewards.
        autoreset_mode: ``"same_step"`` or ``"disabled"``.
        max_episode_steps: time limit (truncation) per episode; the registry's by default.
        compile: ``True`` fuses the step with ``torch.compile``; ``"auto"`` compiles where
            a compiler is found (CUDA, or a C++ compiler for the CPU) and falls back to
            eager with a warning if compiling fails; ``False`` (default) runs eagerly.
        check_actions: check that discrete actions are in range (one host synchronisation
            per step on a GPU).
    """

    spec_id: str = ""
    default_max_episode_steps: int = 0
    num_reset_draws: int = 0
    reset_subset: bool = True
    single_action_space: spaces.Space

    def __init__(
        self,
        num_envs: int,
        *,
        device="cpu",
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
        autoreset_mode: str = "same_step",
        max_episode_steps: int | None = None,
        compile: bool | str = False,
        check_actions: bool = True,
    ):
        self.num_envs = check_int("num_envs", num_envs)
        self.device = as_device(device)
        if dtype not in _DTYPES:
            raise ValueError(f"Invalid dtype: {dtype!r} (expected torch.float32 or torch.float64)")
        self.dtype = dtype
        self.autoreset_mode = check_choice("autoreset_mode", autoreset_mode, _AUTORESET_MODES)
        self.metadata = {"autoreset_mode": _AUTORESET_MODES[autoreset_mode]}
        if max_episode_steps is None:
            max_episode_steps = self.default_max_episode_steps
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps)
        self.check_actions = bool(check_actions)
        self.single_observation_space = self._observation_space(dtype)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._generator = torch.Generator(device=self.device)
        self._seed(seed)
        self._transition_fn = self._make_transition(compile)
        self._physics: dict[str, Tensor] | None = None
        zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._terminated, self._truncated = zeros, zeros.clone()

    # ----------------------------------------------------------------- the hooks
    def _observation_space(self, dtype: torch.dtype) -> spaces.Box:
        raise NotImplementedError

    def _dynamics(self, physics: dict[str, Tensor], actions: Tensor):
        raise NotImplementedError

    def _initial_state(self, u: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _observe(self, physics: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def _export_state(self, physics: dict[str, Tensor]) -> dict[str, Tensor]:
        """The public form of the state tensors (copies); ``_import_state`` inverts it."""
        return {k: v.clone() for k, v in physics.items()}

    def _import_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in state.items()}

    def _reset_draws(self, n: int) -> Tensor:
        """Uniforms in [0, 1) for ``n`` resetting envs, ``[n, num_reset_draws]``, in the
        env's dtype (drawn as ``[num_reset_draws, n]``: ``u.T`` has contiguous rows)."""
        shape = (self.num_reset_draws, n)
        kw = dict(generator=self._generator, device=self.device, dtype=self.dtype)
        return torch.rand(shape, **kw).T

    # ----------------------------------------------------------------- public API
    @property
    def unwrapped(self):
        return self

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset every env, or with ``options={"reset_mask": mask}`` (bool ``[N]`` on the
        env's device) only those in the mask (an all-False mask changes nothing, where
        Gymnasium raises). ``seed`` reseeds the generator. Returns
        ``(obs [N, obs_dim], {})``."""
        if seed is not None:
            self._seed(seed)
        mask = self._reset_mask(options)
        if mask is None:
            self._physics = self._reset_all()
            self._elapsed = torch.zeros_like(self._elapsed)
            self._terminated = torch.zeros_like(self._terminated)
            self._truncated = torch.zeros_like(self._truncated)
        elif self._physics is None:
            raise ValueError("reset with a reset_mask needs a first full reset()")
        else:
            self._physics, self._elapsed = self._reset_subset(mask, self._physics, self._elapsed)
            self._terminated = self._terminated & ~mask
            self._truncated = self._truncated & ~mask
        return self._observe(self._physics), {}

    def step(self, actions: Tensor):
        """Advance every env by one step. Returns ``(obs [N, obs_dim], reward [N],
        terminated [N] bool, truncated [N] bool, info)``."""
        if self._physics is None:
            raise ValueError("step() before reset(): call reset() first")
        actions = self._check_actions(actions)
        disabled = self.autoreset_mode == "disabled"
        ended = self._terminated | self._truncated if disabled else None
        physics, obs, reward, terminated = self._transition_fn(self._physics, actions, ended)
        terminated = terminated.bool()
        elapsed = self._elapsed + 1
        truncated = elapsed >= self.max_episode_steps
        if disabled:  # envs that had ended stay as they were
            elapsed = torch.where(ended, self._elapsed, elapsed)
            terminated = torch.where(ended, self._terminated, terminated)
            truncated = torch.where(ended, self._truncated, truncated)
        self._terminated, self._truncated = terminated, truncated
        info = {}
        if self.autoreset_mode == "same_step":
            done = self._terminated | self._truncated
            info = {"final_obs": obs, "_final_obs": done}
            reset, elapsed = self._reset_subset(done, physics, elapsed)
            if reset is not physics:
                obs, physics = self._observe(reset), reset
        self._physics, self._elapsed = physics, elapsed
        return obs, reward, self._terminated, self._truncated, info

    def _reset_all(self) -> dict[str, Tensor]:
        """Fresh initial states for every env (a full :meth:`reset`)."""
        return self._initial_state(self._reset_draws(self.num_envs))

    def _reset_subset(self, mask, physics, elapsed):
        """Fresh initial states for the envs in ``mask``. Returns ``(physics, elapsed)``,
        the inputs themselves when nothing was reset.

        With ``reset_subset`` (the default) uniforms are drawn for those envs only (one
        host synchronisation), as Gymnasium's vector CartPole does, and ``_initial_state``
        sees only them; otherwise every env gets a draw and an initial state, merged with
        ``torch.where`` (for hooks that need the whole batch, e.g. a simulator's forward
        pass; no synchronisation, the generator advances on every call)."""
        if not self.reset_subset:
            fresh = self._initial_state(self._reset_draws(self.num_envs))
            physics = {k: _where(mask, fresh[k], v) for k, v in physics.items()}
            return physics, torch.where(mask, torch.zeros_like(elapsed), elapsed)
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            return physics, elapsed
        fresh = self._initial_state(self._reset_draws(idx.numel()))
        physics = {k: v.index_put((idx,), fresh[k]) for k, v in physics.items()}
        return physics, elapsed.index_fill(0, idx, 0)

    def get_state(self) -> dict[str, Tensor]:
        """The full simulator state: the family's state tensors, ``elapsed_steps`` (int64
        ``[N]``), ``terminated``/``truncated`` (bool ``[N]``, the last step's flags) and the
        reset randomness' state (:meth:`_get_rng_state`: here ``rng_state``, the generator's
        state, a CPU uint8 tensor). Copies."""
        if self._physics is None:
            raise ValueError("get_state() before reset(): call reset() first")
        state = self._export_state(self._physics)
        state.update(elapsed_steps=self._elapsed.clone(), terminated=self._terminated.clone())
        state.update(truncated=self._truncated.clone(), **self._get_rng_state())
        return state

    def _get_rng_state(self) -> dict[str, Tensor]:
        """The reset randomness' part of :meth:`get_state` (copies)."""
        return {"rng_state": self._generator.get_state()}

    def _set_rng_state(self, state: dict[str, Tensor]) -> None:
        """Load the keys of :meth:`_get_rng_state` found in ``state`` (already checked for
        shape, dtype and device)."""
        if "rng_state" in state:
            self._generator.set_state(state["rng_state"].clone())

    def set_state(self, state: dict[str, Tensor]) -> None:
        """Load (a subset of) :meth:`get_state`'s keys; the others keep their values. Every
        tensor must have the shape, dtype and device of the current one."""
        current = self.get_state() if self._physics is not None else None
        if current is None:
            raise ValueError("set_state() before reset(): call reset() first")
        unknown = sorted(set(state) - set(current))
        if unknown:
            raise ValueError(f"Invalid state keys: {unknown} (expected some of {sorted(current)})")
        for key, value in state.items():
            ref = current[key]
            if not isinstance(value, Tensor) or (value.shape, value.dtype, value.device) != (
                ref.shape, ref.dtype, ref.device
            ):
                got = type(value).__name__
                if isinstance(value, Tensor):
                    got = f"shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
                raise ValueError(
                    f"Invalid state[{key!r}]: {got} (expected a tensor of shape "
                    f"{tuple(ref.shape)}, dtype {ref.dtype}, device {ref.device})"
                )
        rng_keys = set(self._get_rng_state())
        self._set_rng_state({k: v for k, v in state.items() if k in rng_keys})
        for key, value in state.items():
            if key == "elapsed_steps":
                self._elapsed = value.clone()
            elif key in ("terminated", "truncated"):
                setattr(self, f"_{key}", value.clone())
        physics = {k: v for k, v in current.items() if k not in (*_BOOKKEEPING, *rng_keys)}
        physics.update((k, v) for k, v in state.items() if k in physics)
        self._physics = self._import_state(physics)

    def close(self) -> None:
        self._physics = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec_id}, num_envs={self.num_envs}, {self.device})"

    # ----------------------------------------------------------------- the step
    def _transition(self, physics, actions, ended):
        """The dynamics as one pure function (fused by ``compile``); with ``ended`` (the
        disabled autoreset) those envs stay frozen with reward 0. Returns ``(physics, obs,
        reward, terminated)``, terminated as 0/1 in the env's dtype: a bool output costs
        inductor's CPU code about as much as the whole step (measured)."""
        new, reward, terminated = self._dynamics(physics, actions)
        if ended is not None:
            new = {k: _where(ended, physics[k], v) for k, v in new.items()}
            reward = torch.where(ended, torch.zeros_like(reward), reward)
        return new, self._observe(new), reward, terminated.to(reward.dtype)

    def _make_transition(self, compile):
        if compile not in (True, False, "auto"):
            raise ValueError(f"Invalid compile: {compile!r} (expected True, False or 'auto')")
        if compile is False:
            return self._transition
        if compile == "auto" and not (self.device.type == "cuda" or _compiler_available()):
            return self._transition
        compiled = torch.compile(self._transition, dynamic=False)
        if compile is True:
            return compiled

        def first_call(*args):  # "auto": fall back to eager if compiling fails
            try:
                out = compiled(*args)
                self._transition_fn = compiled
            except Exception as err:  # noqa: BLE001 (any compiler failure)
                warnings.warn(f"torch.compile failed, stepping eagerly: {err}", stacklevel=3)
                self._transition_fn = self._transition
                out = self._transition(*args)
            return out

        return first_call

    # ----------------------------------------------------------------- checks
    def _seed(self, seed) -> None:
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(check_int("seed", seed, minimum=0))

    def _reset_mask(self, options) -> Tensor | None:
        if options is None:
            return None
        if not isinstance(options, dict) or set(options) - {"reset_mask"}:
            raise ValueError(
                f"Invalid options: {options!r} (expected None or {{'reset_mask': bool tensor}})"
            )
        mask = options.get("reset_mask")
        if mask is None:
            return None
        expected = f"a bool tensor of shape ({self.num_envs},) on {self.device}"
        if not isinstance(mask, Tensor):
            raise ValueError(f"Invalid reset_mask: {type(mask).__name__} (expected {expected})")
        if (mask.dtype, tuple(mask.shape), mask.device) != (
            torch.bool, (self.num_envs,), self.device
        ):
            raise ValueError(
                f"Invalid reset_mask: dtype {mask.dtype}, shape {tuple(mask.shape)}, device "
                f"{mask.device} (expected {expected})"
            )
        return mask

    def _check_actions(self, actions) -> Tensor:
        space = self.single_action_space
        discrete = isinstance(space, spaces.Discrete)
        shape = (self.num_envs,) if discrete else (self.num_envs, *space.shape)
        kind = "an integer" if discrete else "a floating-point"
        expected = f"{kind} tensor of shape {shape} on {self.device}"
        if not isinstance(actions, Tensor):
            raise ValueError(f"Invalid actions: {type(actions).__name__} (expected {expected})")
        if actions.device != self.device:
            raise ValueError(
                f"Invalid actions: on device {actions.device} but the env is on {self.device} "
                f"(expected {expected}; put the policy on the env's device or make the env "
                f"with device={str(actions.device)!r}: actions are never moved silently)"
            )
        if discrete:
            wrong_kind = actions.is_floating_point() or actions.is_complex() or (
                actions.dtype == torch.bool
            )
        else:
            wrong_kind = not actions.is_floating_point()
        if wrong_kind or tuple(actions.shape) != shape:
            raise ValueError(
                f"Invalid actions: dtype {actions.dtype}, shape {tuple(actions.shape)} "
                f"(expected {expected})"
            )
        if not discrete:
            return actions.to(self.dtype)
        if self.check_actions and ((actions < 0) | (actions >= space.n)).any():
            bad = actions[(actions < 0) | (actions >= space.n)][0].item()
            raise ValueError(f"Invalid actions: {bad} (expected values in Discrete({space.n}))")
        return actions

    @staticmethod
    def _box(low, high, dtype: torch.dtype) -> spaces.Box:
        """Gymnasium's float32 Box, or the same bounds (the float32 values) in float64."""
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        low, high = (np.asarray(b, np.float32).astype(np_dtype) for b in (low, high))
        return spaces.Box(low, high, dtype=np_dtype)
