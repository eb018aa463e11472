r"""Population rollouts on Ray actors: :class:`rl.rollout.PopulationRollout`, distributed.

Public API (stable; needs ``pip install evoopt[ray]``, imported only when built)::

    objective = RayPopulationRollout(env, policy, popsize, *, num_actors=None, address=None,
                                     chunk_size=None, timeout=600.0, startup_timeout=300.0,
                                     max_retries=2, num_cpus_per_actor=1, runtime_env=None,
                                     **rollout_kwargs)          # PopulationRollout's options
    opt.step(objective)          # Tensor[P] float64 losses, as PopulationRollout
    objective.last, objective.evaluate_center(...), objective.state_dict(), ...
    objective.evaluator          # the evoopt.distributed.RayEvaluator (events, actors)
    objective.close()            # or: with RayPopulationRollout(...) as objective: ...

Same numbers as in-process. Each actor holds its own ``PopulationRollout`` (its own env
copies and a copy of the policy). Member ``i``'s ``k``-th episode is slot ``i * K + k``
of the whole population, whichever actor plays it: its env seed is the in-process one
(``SeedSequence([seed, generation])``), its action noise is row ``i * K + k`` of the
in-process noise draw at each step, and the actor's normaliser is the driver's, frozen
for the generation. So every member's return is exactly the in-process return, for any
``num_actors``.

Device backends (``backend="torch" | "warp"``, ``device=``): each actor builds its env
on the rollout's ``device`` (one device per actor) and plays its chunk's slots from the
initial states the in-process batch would have (the whole batch is reset, the chunk's
slots moved out with ``get_state``/``set_state``), so the returns are again the in-process
ones (without action noise: the device noise is drawn per step for the slots in play).

Observation normalisation. The driver sends its normaliser's statistics to the actors
before each generation (``set_stats``); each chunk of members sends back the statistics
(count, mean, m2) of the observations it saw (``get_stats``); the driver merges the
chunks in member order with Chan et al.'s formula (:meth:`rl.normalization.RunningNorm.merge`)
and merges the result into its normaliser, as ``PopulationRollout`` merges its one batch.
With one chunk (``chunk_size >= popsize``) the statistics are bitwise the in-process
ones; with several chunks they agree to rounding (~1e-16 relative), and with a fixed
``chunk_size`` they are bitwise independent of ``num_actors``.

Faults (an actor killed, raising, or hanging past ``timeout``) are handled by the
:class:`~evoopt.distributed.RayEvaluator`: the actor is replaced and the chunk re-run with
the same seeds, so the generation's numbers do not change; a member that keeps failing
gets ``worst_return``, like a member whose env raised in-process.

Traffic per generation: to each chunk, its members' flat policy parameters ([m, D],
the policy's dtype), the generation index and the normaliser's statistics (3 obs-sized
vectors); back, per member its K returns, lengths and failure flags and per chunk one
set of statistics. Envs and policies are built once per actor.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from evoopt.checks import check_int
from evoopt.distributed import RayEvaluator

from .normalization import RunningNorm
from .actor import Actor, expand_members, member_params
from .rollout import PopulationRollout, RolloutResult

__all__ = ["RayPopulationRollout"]


class _SlotNoiseActor(Actor):
    """Action noise for a subset of slots equal to the in-process noise: at each step the
    whole population's noise ``[total, *k]`` is drawn from the generation's generator and
    the rows of this chunk's slots are used."""

    def __init__(
        self, policy, action_space, slots: np.ndarray, total: int, noise_seed: int, scale: float
    ):
        super().__init__(policy, action_space)
        self.scale = scale
        self.slots = torch.from_numpy(slots)
        self.total = total
        self.gen = torch.Generator().manual_seed(int(noise_seed))

    def actions(self, out, out_np, noise):
        if noise is not None:
            full = torch.randn(
                (self.total, *out.shape[1:]), generator=self.gen, dtype=torch.float64
            )
            noise = self.scale * full[self.slots]  # as rl.rollout: action_noise * randn
        return super().actions(out, out_np, noise)


class _RolloutWorker:
    """The objective inside one actor: a PopulationRollout evaluating given member slots."""

    def __init__(self, env, policy: nn.Module, popsize: int, rollout_kwargs: dict[str, Any]):
        self.rollout = PopulationRollout(env, policy, popsize, **rollout_kwargs)
        self._stats = None

    def set_stats(self, state) -> None:
        norm = self.rollout.obs_norm
        if norm is not None and state is not None:
            norm.reset()
            norm.merge(state)  # into empty statistics: exact copy

    def get_stats(self):
        return self._stats

    def evaluate_rows(self, rows: Tensor, members: Tensor, generation: int):
        r = self.rollout
        K, P = r.episodes_per_member, r.popsize
        m = rows.shape[0]
        idx = members.numpy()
        if r.backend != "gymnasium":  # rows travel on the CPU; the actor's env is on r.device
            rows = rows.to(r.device)
        params = member_params(r.policy, rows)
        seeds = r.generation_seeds(generation)[idx]  # [m, K]
        noise_seed = int(np.random.SeedSequence([r.seed, generation, 1]).generate_state(1)[0])
        slots = (idx[:, None] * K + np.arange(K)).reshape(-1)
        device = r.backend != "gymnasium"  # device backends: the whole batch's initial states
        actor = None
        if r.action_noise > 0 and not device:  # device noise: the chunk's own stream
            actor = _SlotNoiseActor(
                r.policy, r.action_space, slots, P * K, noise_seed, r.action_noise
            )
        stats = RunningNorm(r.obs_dim) if (r.obs_norm is not None and r.update_obs_norm) else None
        res = r.run_slots(
            expand_members(params, K),
            (r.generation_seeds(generation) if device else seeds).reshape(-1).tolist(),
            slots=slots if device else None,
            reward_shift=r.reward_shift,
            action_noise=r.action_noise,
            noise_seed=noise_seed,
            obs_stats=stats,
            actor=actor,
        )
        if stats is not None and device:  # the device kernel returns its statistics
            stats = {k: v.cpu() for k, v in res["obs_stats"].items()}
        self._stats = None if stats is None else dict(stats) if device else stats.stats()
        info = {
            "shifted": res["shifted"].reshape(m, K),
            "returns": res["returns"].reshape(m, K),
            "lengths": res["lengths"].reshape(m, K),
            "failed": res["failed"].reshape(m, K),
            "num_steps": int(res["num_steps"]),
            "errors": res["errors"],
        }
        shifted = info["shifted"].mean(1)
        shifted[info["failed"].any(1)] = r.worst_return
        return torch.from_numpy(-shifted), info


class RayPopulationRollout(PopulationRollout):
    """:class:`rl.rollout.PopulationRollout` with the members' episodes played on Ray
    actors; see the module docstring.

    Args:
        env, policy, popsize, **rollout_kwargs: as :class:`~rl.rollout.PopulationRollout`
            (the env id or constructor and a copy of the policy are sent to every actor).
        num_actors, address, chunk_size, timeout, startup_timeout, max_retries,
            num_cpus_per_actor, runtime_env: as :class:`evoopt.distributed.RayEvaluator`.
    """

    def __init__(
        self,
        env,
        policy: nn.Module,
        popsize: int,
        *,
        num_actors: int | None = None,
        address: str | None = None,
        chunk_size: int | None = None,
        timeout: float | None = 600.0,
        startup_timeout: float = 300.0,
        max_retries: int = 2,
        num_cpus_per_actor: float = 1,
        runtime_env: dict | None = None,
        **rollout_kwargs,
    ):
        super().__init__(env, policy, popsize, **rollout_kwargs)
        if chunk_size is not None:
            check_int("chunk_size", chunk_size)
        # the gymnasium backend's actors run on the CPU; a device backend's on its device
        worker_policy = copy.deepcopy(policy).cpu()
        if self.backend != "gymnasium":
            worker_policy.to(self.device)
        factory = functools.partial(
            _RolloutWorker, env, worker_policy, self.popsize, dict(rollout_kwargs)
        )
        self.evaluator = RayEvaluator(
            factory,
            num_actors,
            address,
            num_cpus_per_actor=num_cpus_per_actor,
            chunk_size=chunk_size,
            timeout=timeout,
            startup_timeout=startup_timeout,
            max_retries=max_retries,
            worst=-self.worst_return,
            runtime_env=runtime_env,
        )

    def __call__(self, pop) -> Tensor:
        params = member_params(self.policy, pop)
        P = next(iter(params.values())).shape[0]
        if P != self.popsize:
            raise ValueError(
                f"Invalid population: {P} members (this rollout has popsize={self.popsize})"
            )
        K = self.episodes_per_member
        rows = torch.cat([t.detach().reshape(P, -1) for t in params.values()], 1).cpu()
        seeds = self.generation_seeds(self.generation)
        norm = self.obs_norm
        if norm is not None:
            self.evaluator.set_stats({k: v.cpu() for k, v in norm.stats().items()})
        self.evaluator.evaluate(rows, generation=self.generation)

        shifted_slot = np.zeros((P, K))
        returns = np.full((P, K), np.nan)
        lengths = np.zeros((P, K), dtype=np.int64)
        failed_slot = np.ones((P, K), dtype=bool)  # members without a result failed
        num_steps, errors = 0, []
        for members, info in self.evaluator.last_info:
            shifted_slot[members] = info["shifted"]
            returns[members] = info["returns"]
            lengths[members] = info["lengths"]
            failed_slot[members] = info["failed"]
            num_steps += info["num_steps"]
            errors += info["errors"]
        given_up = sorted(set(range(P)) - {int(i) for m, _ in self.evaluator.last_info for i in m})
        errors += [f"member {i}: its evaluation kept failing on Ray actors" for i in given_up]
        if norm is not None and self.update_obs_norm:
            combined = RunningNorm(self.obs_dim)
            for delta in self.evaluator.last_stats:
                if delta is not None:
                    combined.merge(delta)
            norm.merge(combined)

        failed = failed_slot.any(1)
        shifted = shifted_slot.mean(1)
        shifted[failed] = self.worst_return
        returns[failed_slot] = np.nan
        self.last = RolloutResult(
            returns=torch.from_numpy(shifted),
            episode_returns=torch.from_numpy(returns),
            lengths=torch.from_numpy(lengths),
            failed=torch.from_numpy(failed),
            seeds=torch.from_numpy(seeds),
            num_steps=num_steps,
            errors=errors[:5],
        )
        self.generation += 1
        self.total_steps += num_steps
        self.total_episodes += P * K
        if failed.any():
            warnings.warn(
                f"{int(failed.sum())} of {P} members failed (NaN actions, env errors or failing "
                f"actors) and get return {self.worst_return}; first: {errors[:1]}",
                RuntimeWarning,
                stacklevel=2,
            )
        out = torch.from_numpy(shifted)
        return out if self.maximize else -out

    def close(self) -> None:
        """Stop the actors (and a Ray runtime this rollout started), close the driver's env."""
        self.evaluator.close()
        super().close()

    def __enter__(self) -> RayPopulationRollout:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
