"""``ClassicControlEnv``: the classic-control envs' step as one pure function of tensors,
dynamics, time limit, autoreset (reset draws included) and reward, that ``torch.compile``
fuses into one kernel with no host synchronisation.

State: one ``[d, N]`` tensor, one contiguous row per variable (strided columns of an
``[N, d]`` tensor make every elementwise op several times slower); observations are
``[N, obs_dim]`` transposes of ``[obs_dim, N]`` tensors (Gymnasium's vector CartPole's
layout), Gymnasium's ``state`` rows, ``[N, d]``, in ``get_state``/``set_state``. Inside
the step the elapsed steps are int32 and the flags one uint8 ``[3, N]`` tensor (inductor's
CPU code is slow storing bools; ``.view(torch.bool)`` is free).

Reset randomness is counter-based (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC 2011): the ``j``-th uniform of env ``e``'s ``c``-th episode is a hash of
``(seed, e, c, j)``::

    key_e = H(H(e xor k0) xor k1)          (k0, k1: the 64-bit mix of the seed, in halves)
    h     = H(key_e xor c)
    u_j   = H(h xor (j + 1) 0x9E3779B9 mod 2^32) / 2^32   (the top 24 bits in float32)

with ``H`` a 32-bit xorshift-multiply mix on int32 bit patterns (:func:`hash32`). A draw
thus depends on nothing but the seed, the env and how many episodes it has started: no
generator to advance in env order, the same numbers on CPU and GPU, eager and compiled, and
the compiled step draws for every env and keeps the draws of the envs that ended with
``torch.where`` (no host synchronisation). The eager step draws for the ended envs only
(one host synchronisation, free on a CPU), unless ``reset_subset = False``. ``get_state``
carries ``rng_key`` (``(k0, k1)``, int64 ``[2]`` on the CPU) and ``episodes`` (int32
``[N]``, episodes started per env, modulo 2^32) in place of the generator state: resume
is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoopt.checks import check_int

from .base import TorchVectorEnv

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_GOLDEN = 0x9E3779B9


def round32(x):
    """``x`` rounded to float32, in x's dtype (Gymnasium stores some states as float32)."""
    return x.to(torch.float32).to(x.dtype)


def _int32(word: int) -> int:
    """The int32 whose bits are the 32-bit word ``word``."""
    word &= _M32
    return word - (1 << 32) if word >> 31 else word


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer mix of the words held (as bit patterns) in an int32 tensor: the
    ``[16 21f0aaad 15 735a2d97 15]`` xorshift-multiply of C. Wellons' hash prospector.
    Shifts are made logical by masking; products wrap modulo 2^32 (two's complement, as
    every torch backend multiplies int32)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x21F0AAAD
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x735A2D97
    return x ^ ((x >> 15) & 0x1FFFF)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def seed_key(seed: int) -> Tensor:
    """``(k0, k1)``: a 64-bit mix of a seed of any size, as two 32-bit words (int64)."""
    k = 0
    while True:
        k = _splitmix64(k ^ (seed & _M64))
        seed >>= 64
        if not seed:
            break
    return torch.tensor([k & _M32, k >> 32], dtype=torch.int64)


def env_keys(key: Tensor, num_envs: int, device) -> Tensor:
    """Each env's key ``H(H(e xor k0) xor k1)``, int32 ``[num_envs]``."""
    k0, k1 = (_int32(int(k)) for k in key)
    e = torch.arange(num_envs, dtype=torch.int32, device=device)
    return hash32(hash32(e ^ k0) ^ k1)


def counter_uniforms(keys: Tensor, episodes: Tensor, num_draws: int, dtype) -> Tensor:
    """Uniforms in [0, 1) for the episodes ``episodes`` (int32) of the envs with keys
    ``keys``: ``num_draws`` tensors ``[n]`` in ``dtype``, 32 bits in float64, 24 in
    float32."""
    h = hash32(keys ^ episodes)
    if torch.compiler.is_compiling():  # one expression per draw: inductor fuses them all
        salts = [_int32((j + 1) * _GOLDEN) for j in range(num_draws)]
        return tuple(_uniform(hash32(h ^ salt), dtype) for salt in salts)
    # eager: a few ops on [num_draws, n] (int32 products wrap, as in hash32)
    salts = torch.arange(1, num_draws + 1, dtype=torch.int32, device=h.device) * _int32(_GOLDEN)
    return _uniform(hash32(h ^ salts[:, None]), dtype).unbind(0)


def _uniform(word: Tensor, dtype) -> Tensor:
    high = ((word >> 8) & 0xFFFFFF).to(dtype) * 2.0**-24
    if dtype == torch.float64:
        return high + (word & 0xFF).to(dtype) * 2.0**-32
    return high


class ClassicControlEnv(TorchVectorEnv):
    """Base of the classic-control envs. Hooks as :class:`TorchVectorEnv`'s, except that
    ``_initial_state(u)`` receives ``u`` as ``num_reset_draws`` tensors ``[n]`` and
    that ``_observe`` returns ``[N, obs_dim]`` as the transpose of an ``[obs_dim, N]``
    tensor (the layout of Gymnasium's vector CartPole's observations: each observed
    variable contiguous); ``observe_state = True`` where the observation is the state."""

    #: the state variables, in the order of Gymnasium's ``env.unwrapped.state``
    state_names: tuple[str, ...] = ()
    #: the observation is the state, in ``state_names`` order
    observe_state = False
    _state: Tensor | None = None  # [d, N]: the state variables, one contiguous row each

    # ----------------------------------------------------------------- layout
    @property
    def _physics(self):
        """The base class's dict of state tensors: views of the rows of ``_state``."""
        return None if self._state is None else dict(zip(self.state_names, self._state))

    @_physics.setter
    def _physics(self, physics):
        self._state = None if physics is None else self._pack(physics)

    def _pack(self, physics):
        return torch.stack([physics[k] for k in self.state_names])

    def _export_state(self, physics):
        return {"state": self._pack(physics).T.contiguous()}

    def _import_state(self, state):
        return dict(zip(self.state_names, state["state"].T.contiguous()))

    def _observe(self, physics):
        return self._pack(physics).T

    def _pack_and_observe(self, physics) -> tuple[Tensor, Tensor]:
        """``(state [d, N], obs [N, obs_dim])``, the observation a view of the state where
        the state is observed."""
        state = self._pack(physics)
        return state, state.T if self.observe_state else self._observe(physics)

    # ----------------------------------------------------------------- the step
    def step(self, actions: Tensor):
        """See :meth:`TorchVectorEnv.step`; one call of the (compiled) :meth:`_transition`."""
        if self._state is None:
            raise ValueError("step() before reset(): call reset() first")
        actions = self._check_actions(actions)
        state, obs, final_obs, reward, flags, elapsed, episodes = self._transition_fn(
            self._state, actions, self._elapsed32, self._episodes, self._keys, self._flags
        )
        self._state, self._elapsed32, self._episodes, self._flags = state, elapsed, episodes, flags
        flags = flags.view(torch.bool)  # uint8 out of the kernel: bool stores are slow
        info = {}
        if self.autoreset_mode == "same_step":
            info = {"final_obs": final_obs, "_final_obs": flags[2]}
        return obs, reward, flags[0], flags[1], info

    def _transition(self, state, actions, elapsed, episodes, keys, flags):
        """The whole step as one pure function (fused by ``compile``): dynamics, time limit,
        then either the same-step autoreset or, autoreset disabled, the freezing of the envs
        that had ended (reward 0, flags repeated). ``flags`` uint8 ``[3, N]``: terminated,
        truncated, ended. Returns ``(state, obs, final_obs, reward, flags, elapsed,
        episodes)`` (``final_obs`` is ``obs`` when disabled)."""
        physics = dict(zip(self.state_names, state))
        new, reward, term = self._dynamics(physics, actions)
        stepped = elapsed + 1
        trunc = stepped >= self.max_episode_steps
        if self.autoreset_mode == "disabled":
            ended = (flags[0] | flags[1]).bool()
            new = {k: torch.where(ended, physics[k], v) for k, v in new.items()}
            reward = torch.where(ended, torch.zeros_like(reward), reward)
            stepped = torch.where(ended, elapsed, stepped)
            term = torch.where(ended, flags[0].bool(), term)
            trunc = torch.where(ended, flags[1].bool(), trunc)
            state, obs = self._pack_and_observe(new)
            final_obs = obs
        else:
            ended = term | trunc
            _, final_obs = self._pack_and_observe(new)
            new, stepped, episodes = self._autoreset(ended, new, stepped, episodes, keys)
            state, obs = self._pack_and_observe(new)
        flags = torch.stack([f.to(torch.uint8) for f in (term, trunc, ended)])
        return state, obs, final_obs, reward, flags, stepped, episodes

    def _autoreset(self, mask, physics, elapsed, episodes, keys):
        """Fresh initial states for the envs in ``mask``: ``(physics, elapsed, episodes)``
        (the inputs themselves when none is reset). Compiled, or with ``reset_subset =
        False``, every env draws and ``torch.where`` merges (no host synchronisation);
        eager, the ended envs only are found (one synchronisation) and drawn for."""
        d = self.num_reset_draws
        if torch.compiler.is_compiling() or not self.reset_subset:
            fresh = self._initial_state(counter_uniforms(keys, episodes, d, self.dtype))
            physics = {k: torch.where(mask, fresh[k], v) for k, v in physics.items()}
            elapsed = torch.where(mask, torch.zeros_like(elapsed), elapsed)
            return physics, elapsed, episodes + mask.to(episodes.dtype)
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            return physics, elapsed, episodes
        started = episodes[idx]
        fresh = self._initial_state(counter_uniforms(keys[idx], started, d, self.dtype))
        physics = {k: v.index_put((idx,), fresh[k]) for k, v in physics.items()}
        episodes = episodes.index_put((idx,), started + 1)
        return physics, elapsed.index_fill(0, idx, 0), episodes

    # ----------------------------------------------------------------- resets
    def _reset_all(self):
        u = counter_uniforms(self._keys, self._episodes, self.num_reset_draws, self.dtype)
        self._episodes = self._episodes + 1
        return self._initial_state(u)

    def _reset_subset(self, mask, physics, elapsed):
        physics, elapsed, self._episodes = self._autoreset(
            mask, physics, elapsed, self._episodes, self._keys
        )
        return physics, elapsed

    # ----------------------------------------------------------------- bookkeeping
    # the step keeps the elapsed steps as int32 and the flags as one uint8 [3, N] tensor;
    # the base class's int64 / bool attributes are views of them
    @property
    def _elapsed(self):
        return self._elapsed32.long()

    @_elapsed.setter
    def _elapsed(self, value):
        self._elapsed32 = value.to(torch.int32)

    def _flag(i):  # noqa: N805 (a property factory)
        def get(self):
            return self._flags[i].view(torch.bool)

        def set(self, value):
            if not hasattr(self, "_flags"):
                self._flags = torch.zeros(3, self.num_envs, dtype=torch.uint8, device=self.device)
            self._flags = self._flags.clone()
            self._flags[i] = value
            self._flags[2] = self._flags[0] | self._flags[1]

        return property(get, set)

    _terminated, _truncated = _flag(0), _flag(1)
    del _flag

    # ----------------------------------------------------------------- randomness
    def _seed(self, seed) -> None:
        if seed is None:
            seed = torch.Generator().seed()  # non-deterministic, the global RNG untouched
        self._load_key(seed_key(check_int("seed", seed, minimum=0)))
        self._episodes = torch.zeros(self.num_envs, dtype=torch.int32, device=self.device)

    def _load_key(self, key: Tensor) -> None:
        self._rng_key = key.clone()
        self._keys = env_keys(key, self.num_envs, self.device)

    def _get_rng_state(self):
        return {"rng_key": self._rng_key.clone(), "episodes": self._episodes.clone()}

    def _set_rng_state(self, state):
        key = state.get("rng_key")
        if key is not None and ((key < 0) | (key > _M32)).any():
            raise ValueError(
                f"Invalid state['rng_key']: {key.tolist()} (expected two words in [0, 2^32))"
            )
        if key is not None:
            self._load_key(key)
        if "episodes" in state:
            self._episodes = state["episodes"].clone()
