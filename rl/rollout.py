r"""Population rollouts: evaluate every member of a population in its own environment,
with one batched policy forward per time step, as a population objective.

Public API (stable)::

    objective = PopulationRollout(env, policy, popsize, *, episodes_per_member=1,
                                  max_episode_steps=None, reward_shift=0.0,
                                  action_noise=0.0, update_obs_norm=True, seed=0,
                                  common_seeds=False, vectorization="auto",
                                  env_kwargs=None, worst_return=WORST_RETURN, maximize=False,
                                  backend="gymnasium", device=None, compile=False)
    losses = objective(pop)       # Tensor[P] float64: -(mean shifted return) per member
                                  # (maximize=True: the returns, for opt(..., maximize=True))
    opt.step(objective)           # objective.is_population_objective is True
    objective.last                # RolloutResult of the last call (returns, lengths, ...)
    objective.evaluate_center(params=None, num_episodes=10, seed=None) -> Tensor[num_episodes]
    objective.state_dict() / objective.load_state_dict(sd)   # counters + obs normaliser
    resolve_env_id(env_id)        # the EnvSpec, or a ValueError listing close matches
    WORST_RETURN                  # -inf: the return of a failed member

How a generation runs. ``pop`` is an :class:`evoopt.Population` (its ``layout.params``
are matched to the policy's parameters by identity; parameters the optimizer does not
search keep the policy's values) or a ``[P, D]`` tensor in ``policy.parameters()`` order.
Member ``i``'s ``k``-th episode runs in env slot ``i * episodes_per_member + k``; every
slot plays exactly one episode from ``env.reset(seed=s)`` with its own seed ``s``, so a
slot's return is exactly what ``gymnasium.make(env_id)`` returns for that seed and the
same member. At each step the policy computes all slots' actions in one batched call
(:meth:`rl.policies.Policy.population_forward`, or ``torch.func.vmap`` over
``functional_call`` for any other ``nn.Module``); slots whose episode ended are masked.

Environments are built once and reused: training uses ``popsize * episodes_per_member``
of them, ``evaluate_center`` plays its episodes in batches on at most
``max(popsize * episodes_per_member, 10)`` (the same numbers as one batch), and an env
is rebuilt only after it raised. What an env's native code prints while it is built
(MuJoCo's compiler warnings) appears once per process (:func:`make_env`).

Environments. ``vectorization="auto"`` uses Gymnasium's native vector env where one
exists and we can seed each slot (CartPole: ``make_vec(...,
vectorization_mode="vector_entry_point")``, which takes one integer seed and autoresets
NEXT_STEP: each slot's initial state is set from a single env reset with that slot's
seed, and steps after a slot's episode end are ignored), else a synchronous list of
``gymnasium.make`` envs stepped in-process (like ``SyncVectorEnv``, which beats
``AsyncVectorEnv`` on 2 cores for MuJoCo, but stepping only the live slots and isolating
each env's exceptions). ``env`` is an id or a zero-argument constructor.

Backends. ``backend="gymnasium"`` (default) is everything above. ``"torch"`` (classic
control) and ``"warp"`` (MuJoCo on MuJoCo Warp, the ``[warp]`` extra) run the generation on
``device`` (default: the policy's device; a different one is refused, never moved to) with
:mod:`rl.envs` and the kernel of :mod:`rl.device_rollout`: member i's k-th episode is
still slot ``i * K + k``; normalisation, policy, actions, physics, rewards and masks stay
on the device, with one "all done?" host check every few steps; the initial states come
from the env's generator seeded from the generation's slot seeds (so not Gymnasium's, but
deterministic, and resume is exact); ``env_kwargs`` go to ``rl.envs.make`` (``dtype``,
``compile``...); ``compile=True`` fuses the policy step and the env step with
``torch.compile``. ``"auto"``: the device backend when one implements ``env``. The
features below keep their meaning; ``common_seeds`` is gymnasium-only for now.

Failures never lose a generation: a member whose policy output is NaN/inf, whose env
raises in ``reset``/``step``, or whose return is not finite gets ``worst_return``
(default :data:`WORST_RETURN` = ``-inf``: its loss is ``+inf``, which evoopt's
optimizers rank worst, with a warning); the other members are unaffected. (If every
member fails, the rollout still completes; the optimizer's ``tell`` then refuses the
all-non-finite generation and leaves its state unchanged.)

Seeds and resuming. Generation ``g``'s env seeds are ``SeedSequence([seed, g])``'s
words (``common_seeds=True``: all members share the same ``episodes_per_member``
seeds), the action-noise generator is seeded from ``SeedSequence([seed, g, 1])``, and
``evaluate_center`` without a seed draws from a separate stream. Only counters and the
normaliser are state, so ``state_dict`` / ``load_state_dict`` resume exactly.

Observation normalisation: when the policy has an ``obs_norm``, it is frozen during a
generation and then updated from the observations of all members' live steps (OpenAI-ES
and ARS V2 do the same), unless ``update_obs_norm=False``. ``evaluate_center`` never
updates it.

Reward shift: ``reward_shift`` is added to every reward of the training objective (ARS
and EvoTorch subtract the alive bonus, e.g. ``reward_shift=-1.0`` on Hopper);
``last.episode_returns`` and ``evaluate_center`` report the environment's own returns.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from evoopt.checks import check_choice, check_int, check_positive

from .actor import Actor, DeviceActor, expand_members, member_params
from .device_rollout import DeviceEnvs, as_device, device_rollout, resolve_backend
from .gym_envs import NATIVE_CLASSES, EnvPool, make_env, resolve_env_id
from .gym_rollout import add_obs_rows, gym_rollout
from .normalization import RunningNorm

__all__ = ["MIN_EVAL_SLOTS", "PopulationRollout", "RolloutResult", "WORST_RETURN", "make_env",
           "resolve_env_id"]

_add_obs_rows = add_obs_rows  # the name tests/rl/test_device_rollout.py imports

#: The return given to a member whose actions are NaN/inf, whose env raised, or whose
#: return is not finite. ``-inf`` becomes a loss of ``+inf``, which every evoopt
#: population optimizer ranks worst (and warns about); set ``worst_return`` to a finite
#: number for optimizers that use raw fitness values.
WORST_RETURN = -math.inf

#: ``evaluate_center`` plays its episodes in batches of at most
#: ``max(popsize * episodes_per_member, MIN_EVAL_SLOTS)``, on the envs training made.
MIN_EVAL_SLOTS = 10


@dataclass
class RolloutResult:
    """What one population evaluation saw.

    ``returns``: [P] mean over the member's episodes of the shifted return (the objective;
    ``worst_return`` for failed members); ``episode_returns``: [P, K] the environment's
    own returns per episode (NaN for a failed episode); ``lengths``: [P, K] steps per
    episode; ``failed``: [P] bool; ``seeds``: [P, K] env seeds; ``num_steps``: env steps
    taken; ``errors``: messages of the exceptions envs raised (first few).
    """

    returns: Tensor
    episode_returns: Tensor
    lengths: Tensor
    failed: Tensor
    seeds: Tensor
    num_steps: int
    errors: list[str]


class PopulationRollout:
    """A population objective: ``losses = -(mean shifted return)`` of each member, from one
    batched rollout of the whole population. See the module docstring for the details.

    Args:
        env: a Gymnasium id (unknown ids raise ``ValueError`` listing close matches) or a
            zero-argument function returning a ``gymnasium.Env``.
        policy: the ``nn.Module`` whose parameters the optimizer searches: a
            :class:`rl.policies.Policy` (fast batched path) or any module mapping an
            observation to logits (Discrete) or an action (Box, clipped into bounds).
        popsize: number of members per call.
        episodes_per_member: episodes averaged per member.
        max_episode_steps: time limit (default: the env's registered limit).
        reward_shift: added to every reward of the objective (not to reported returns).
        action_noise: std of Gaussian noise added to Box actions before the bounds.
        update_obs_norm: update ``policy.obs_norm`` from all members after each call.
        seed: root of all env seeds and noise.
        common_seeds: all members of a generation play the same episode seeds.
        vectorization: ``"auto"``, ``"native"`` (CartPole's vector env) or ``"sync"``.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        worst_return: the return of a failed member (default :data:`WORST_RETURN`).
        maximize: return the mean returns themselves instead of losses (for an optimizer
            built with ``maximize=True``).
        backend: ``"gymnasium"``, ``"torch"``, ``"warp"`` or ``"auto"`` (module docstring).
        device: the device backends' device (default: the policy's; must be the policy's).
        compile: device backends: ``torch.compile`` the step (``True``, ``False``, ``"auto"``).
    """

    is_population_objective = True

    def __init__(
        self,
        env: str | Callable[[], gym.Env],
        policy: nn.Module,
        popsize: int,
        *,
        episodes_per_member: int = 1,
        max_episode_steps: int | None = None,
        reward_shift: float = 0.0,
        action_noise: float = 0.0,
        update_obs_norm: bool = True,
        seed: int = 0,
        common_seeds: bool = False,
        vectorization: str = "auto",
        env_kwargs: dict[str, Any] | None = None,
        worst_return: float = WORST_RETURN,
        maximize: bool = False,
        backend: str = "gymnasium",
        device=None,
        compile: bool | str = False,
    ):
        real = isinstance(reward_shift, numbers.Real) and not isinstance(reward_shift, bool)
        if not real or not math.isfinite(reward_shift):
            raise ValueError(f"Invalid reward_shift: {reward_shift!r} (expected a finite number)")
        if not isinstance(policy, nn.Module):
            raise ValueError(f"Invalid policy: {type(policy).__name__} (expected a "
                             "torch.nn.Module)")
        self.popsize = check_int("popsize", popsize)
        self.episodes_per_member = check_int("episodes_per_member", episodes_per_member)
        self.reward_shift = float(reward_shift)
        self.action_noise = check_positive("action_noise", action_noise, allow_zero=True)
        self.seed = check_int("seed", seed, minimum=0)
        if not isinstance(worst_return, (int, float)) or math.isnan(worst_return):
            raise ValueError(f"Invalid worst_return: {worst_return!r} (expected a number, -inf "
                             "allowed)")
        self.worst_return = float(worst_return)
        if not isinstance(maximize, bool):
            raise ValueError(f"Invalid maximize: {maximize!r} (expected True or False)")
        self.maximize = maximize
        check_choice("vectorization", vectorization, ("auto", "native", "sync"))
        env_kwargs = dict(env_kwargs or {})
        if max_episode_steps is not None:
            check_int("max_episode_steps", max_episode_steps)
        self.max_episode_steps = max_episode_steps
        self.env = env
        self.backend = resolve_backend(env, backend)
        if compile not in (True, False, "auto"):
            raise ValueError(f"Invalid compile: {compile!r} (expected True, False or 'auto')")
        self.compile = compile
        if self.backend == "gymnasium":
            self._init_gymnasium(env, env_kwargs, vectorization)
        else:
            self._init_device(env, policy, env_kwargs, device, common_seeds)
        if self.action_noise > 0 and isinstance(self.action_space, spaces.Discrete):
            raise ValueError(f"Invalid action_noise: {action_noise!r} (only Box action spaces take "
                             "action noise)")
        self.policy = policy
        actor_cls = Actor if self.backend == "gymnasium" else DeviceActor
        self._actor = actor_cls(policy, self.action_space)
        self.update_obs_norm = bool(update_obs_norm)
        self.common_seeds = bool(common_seeds)
        obs_dim = int(np.prod(self.observation_space.shape))
        self.obs_dim = obs_dim
        self.generation = 0
        self.num_evaluations = 0
        self.total_steps = 0
        self.total_episodes = 0
        self.last: RolloutResult | None = None

    def _init_gymnasium(self, env, env_kwargs: dict[str, Any], vectorization: str) -> None:
        """Gymnasium envs in-process: the native vector env or a list of single envs."""
        if isinstance(env, str):
            spec = resolve_env_id(env)
            vector = spec.vector_entry_point
            native_ok = bool(vector) and vector.rsplit(":", 1)[-1] in NATIVE_CLASSES
            default_limit = spec.max_episode_steps
        elif callable(env):
            if env_kwargs:
                raise ValueError("Invalid env_kwargs: only used with an env id (call your "
                                 "constructor with them)")
            native_ok, default_limit = False, None
        else:
            raise ValueError(f"Invalid env: {env!r} (expected a Gymnasium id or a function "
                             "returning an env)")
        if vectorization == "native" and not native_ok:
            raise ValueError(
                "Invalid vectorization: 'native' needs an env id with a seedable native vector "
                "env "
                f"(one of {sorted(NATIVE_CLASSES)}); got {env!r}"
            )
        self.pool = EnvPool(env, env_kwargs, self.max_episode_steps)
        probe = self.pool.singles(1)[0]
        if default_limit is None and probe.spec is not None:
            default_limit = probe.spec.max_episode_steps
        limit = self.max_episode_steps
        self._limit = limit if limit is not None else default_limit
        self.observation_space = probe.observation_space
        self.action_space = probe.action_space
        self.native = native_ok and vectorization != "sync"

    def _init_device(self, env: str, policy: nn.Module, env_kwargs: dict[str, Any], device,
                     common_seeds: bool) -> None:
        """A device env (``rl.envs``) on ``device`` (default: the policy's device)."""
        if common_seeds:
            raise ValueError(f"Invalid common_seeds: True is not supported on backend="
                             f"{self.backend!r} yet (use backend='gymnasium')")
        first = next(policy.parameters(), None)
        here = first.device if first is not None else torch.device("cpu")
        self.device = as_device(here if device is None else device)
        if self.device != as_device(here):
            raise ValueError(
                f"Invalid device: {str(self.device)!r} but the policy is on {here} (move the "
                f"policy with policy.to({str(self.device)!r}) before building the optimizer, or "
                "pass the policy's device: nothing is moved silently)")
        self.pool = None
        self.native = False
        env_kwargs.setdefault("compile", self.compile)
        self._device_envs = DeviceEnvs(env, self.device, self.max_episode_steps, env_kwargs)
        probe = self._device_envs.get(self.popsize * self.episodes_per_member)
        self._limit = probe.max_episode_steps
        self.observation_space = probe.single_observation_space
        self.action_space = probe.single_action_space

    @property
    def obs_norm(self) -> RunningNorm | None:
        return getattr(self.policy, "obs_norm", None)

    # --------------------------------------------------------------- seeds
    def generation_seeds(self, generation: int) -> np.ndarray:
        """[P, K] env seeds of generation ``generation`` (deterministic from ``seed``)."""
        P, K = self.popsize, self.episodes_per_member
        ss = np.random.SeedSequence([self.seed, generation])
        if self.common_seeds:
            return np.tile(ss.generate_state(K).astype(np.int64), (P, 1))
        return ss.generate_state(P * K).astype(np.int64).reshape(P, K)

    # ---------------------------------------------------------------- run
    def run_slots(self, params, seeds, *, reward_shift, action_noise, noise_seed, obs_stats,
                  actor=None, slots=None) -> dict[str, Any]:
        """One episode per slot: ``seeds`` are all slots' seeds; ``slots`` (device backends,
        a Ray chunk) plays only those slots of the batch, from the same initial states.
        Returns the backend's dict (numpy ``returns``, ``shifted``, ``lengths``, ``failed``,
        ``num_steps``, ``errors``; a device backend adds ``obs_stats``). Used by
        :mod:`rl.ray_rollout` to play a chunk of the population."""
        actor = self._actor if actor is None else actor
        if self.backend != "gymnasium":
            env, obs = self._device_reset(seeds, slots)
            return device_rollout(env, actor, params, obs, max_steps=self._limit,
                                  reward_shift=reward_shift, action_noise=action_noise,
                                  noise_seed=noise_seed, group=self.episodes_per_member,
                                  obs_stats=obs_stats is not None, compile=self.compile,
                                  resize=self._device_envs.get)
        gen = None
        if action_noise > 0:
            gen = torch.Generator().manual_seed(int(noise_seed))
        kw = dict(max_episode_steps=self._limit, reward_shift=reward_shift,
                  action_noise=action_noise, noise_gen=gen, obs_stats=obs_stats,
                  group=self.episodes_per_member)
        if self.native:
            try:
                return gym_rollout(self.pool, actor, params, seeds, native=True, **kw)
            except Exception as e:  # noqa: BLE001 - fall back rather than lose the generation
                warnings.warn(f"the native vector env raised ({type(e).__name__}: {e}); "
                              "switching to one env per member", RuntimeWarning, stacklevel=3)
                self.native = False
                if gen is not None:
                    gen.manual_seed(int(noise_seed))
                if obs_stats is not None:
                    obs_stats.reset()
        return gym_rollout(self.pool, actor, params, seeds, native=False, **kw)

    def _device_reset(self, seeds, slots=None):
        """The device env reset for a batch whose slots' seeds are ``seeds``: its generator
        is seeded from them (``SeedSequence(seeds)``). With ``slots``, the batch is reset in
        full and those slots' states are moved into an env of ``len(slots)`` slots, so that a
        slot's initial state does not depend on which other slots are played with it."""
        env_seed = int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0])
        full = self._device_envs.get(len(seeds))
        obs, _ = full.reset(seed=env_seed)
        if slots is None:
            return full, obs
        take = torch.as_tensor(np.asarray(slots), dtype=torch.int64, device=self.device)
        env = self._device_envs.get(len(slots))
        env.reset(seed=0)
        env.set_state({k: v[take] for k, v in full.get_state().items()
                       if k != "rng_state" and v.dim() and v.shape[0] == full.num_envs})
        return env, obs[take]

    def __call__(self, pop) -> Tensor:
        """Roll out every member; returns ``[P]`` float64 losses (negated mean shifted returns,
        ``-worst_return`` for failed members), or the returns themselves when ``maximize``."""
        params = member_params(self.policy, pop)
        P = next(iter(params.values())).shape[0]
        if P != self.popsize:
            raise ValueError(f"Invalid population: {P} members (this rollout has "
                             f"popsize={self.popsize})")
        K = self.episodes_per_member
        seeds = self.generation_seeds(self.generation)
        noise_ss = np.random.SeedSequence([self.seed, self.generation, 1])
        noise_seed = int(noise_ss.generate_state(1)[0])
        norm = self.obs_norm if self.update_obs_norm else None
        stats = RunningNorm(self.obs_dim) if norm is not None else None
        res = self.run_slots(expand_members(params, K), seeds.reshape(-1).tolist(),
                             reward_shift=self.reward_shift,
                        action_noise=self.action_noise, noise_seed=noise_seed, obs_stats=stats)
        if stats is not None:
            norm.merge(stats if self.backend == "gymnasium" else res["obs_stats"])
        failed_slot = res["failed"].reshape(P, K)
        failed = failed_slot.any(1)
        shifted = res["shifted"].reshape(P, K).mean(1)
        shifted[failed] = self.worst_return
        ep_returns = res["returns"].reshape(P, K).copy()
        ep_returns[failed_slot] = np.nan
        self.last = RolloutResult(
            returns=torch.from_numpy(shifted), episode_returns=torch.from_numpy(ep_returns),
            lengths=torch.from_numpy(res["lengths"].reshape(P, K)), failed=torch.from_numpy(failed),
            seeds=torch.from_numpy(seeds), num_steps=int(res["num_steps"]), errors=res["errors"],
        )
        self.generation += 1
        self.total_steps += int(res["num_steps"])
        self.total_episodes += P * K
        if failed.any():
            warnings.warn(
                f"{int(failed.sum())} of {P} members failed (NaN actions or env errors) and get "
                f"return {self.worst_return}; first: {res['errors'][:1]}", RuntimeWarning,
                stacklevel=2)
        out = torch.from_numpy(shifted)
        return out if self.maximize else -out

    # ------------------------------------------------------------ evaluation
    def evaluate_center(self, params=None, num_episodes: int = 10,
                        seed: int | None = None) -> Tensor:
        """The environment's returns of one policy over ``num_episodes`` episodes, run as a
        batch: ``params`` is None (the rollout's policy as it is now, i.e. the optimizer's
        center after a step), a flat ``[D]`` tensor in ``policy.parameters()`` order (with
        the rollout policy's normaliser), or a policy module (evaluated as it is, with its
        own normaliser). Episode j is seeded with ``seed + j``; ``seed=None`` draws seeds
        from a stream separate from training. No reward shift, no action noise, and no
        normaliser is updated. Failed episodes get ``worst_return``."""
        if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
            raise ValueError(f"Invalid num_episodes: {num_episodes!r} (expected an integer >= 1)")
        integer = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
        if seed is not None and (not integer or seed < 0):
            raise ValueError(f"Invalid seed: {seed!r} (expected a non-negative integer or None)")
        module, actor = self.policy, self._actor
        if isinstance(params, nn.Module):
            actor_cls = Actor if self.backend == "gymnasium" else DeviceActor
            actor = actor_cls(params, self.action_space)
            module, params = params, None
        named = list(module.named_parameters())
        D = sum(p.numel() for _, p in named)
        if params is None:
            flat = torch.cat([p.detach().reshape(-1) for _, p in named])
        else:
            flat = torch.as_tensor(params).detach().reshape(-1)
            if flat.numel() != D:
                raise ValueError(f"Invalid params: {flat.numel()} numbers (expected {D}, the "
                                 "policy's parameters)")
        if seed is None:
            ss = np.random.SeedSequence([self.seed, 2**32 - 1, self.num_evaluations])
            seeds = ss.generate_state(num_episodes).astype(np.int64).tolist()
        else:
            seeds = [int(seed) + j for j in range(num_episodes)]
        self.num_evaluations += 1
        batch = max(self.popsize * self.episodes_per_member, MIN_EVAL_SLOTS)  # the envs made
        if self.backend != "gymnasium":
            batch = num_episodes  # one batch: the device env is built for it
        out = torch.empty(num_episodes, dtype=torch.float64)
        for a in range(0, num_episodes, batch):
            part = seeds[a:a + batch]
            members = member_params(module, flat.to(named[0][1]).expand(len(part), D))
            res = self.run_slots(members, part, reward_shift=0.0, action_noise=0.0, noise_seed=0,
                            obs_stats=None, actor=actor)
            returns = torch.from_numpy(res["returns"].copy())
            returns[torch.from_numpy(res["failed"])] = self.worst_return
            out[a:a + len(part)] = returns
        return out

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Counters and the observation normaliser's statistics (tensors and ints only)."""
        norm = self.obs_norm
        return {
            "seed": self.seed, "popsize": self.popsize, "generation": self.generation,
            "num_evaluations": self.num_evaluations, "total_steps": self.total_steps,
            "total_episodes": self.total_episodes,
            "obs_norm": None if norm is None else {k: v.clone() for k, v in norm.stats().items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        keys = {"seed", "popsize", "generation", "num_evaluations", "total_steps",
                "total_episodes", "obs_norm"}
        if not isinstance(state_dict, dict) or not keys <= set(state_dict):
            raise ValueError("Invalid state_dict: expected a PopulationRollout state with keys "
                             f"{sorted(keys)}")
        if state_dict["popsize"] != self.popsize:
            raise ValueError(
                f"Invalid state_dict: saved popsize={state_dict['popsize']}, this rollout has "
                f"{self.popsize}")
        norm = self.obs_norm
        saved = state_dict["obs_norm"]
        if (saved is None) != (norm is None):
            raise ValueError("Invalid state_dict: the saved rollout and this policy differ in "
                             "having an obs_norm")
        if norm is not None:
            if tuple(saved["mean"].shape) != norm.shape:
                raise ValueError("Invalid state_dict: obs_norm shape "
                                 f"{tuple(saved['mean'].shape)}, expected {norm.shape}")
            norm.reset()
            norm.merge(saved)
        self.seed = int(state_dict["seed"])
        self.generation = int(state_dict["generation"])
        self.num_evaluations = int(state_dict["num_evaluations"])
        self.total_steps = int(state_dict["total_steps"])
        self.total_episodes = int(state_dict["total_episodes"])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.backend != "gymnasium":
            self._device_envs.close()
