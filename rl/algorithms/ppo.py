r"""Proximal Policy Optimization with the clipped surrogate objective.

J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov, "Proximal Policy Optimization
Algorithms", 2017, https://arxiv.org/abs/1707.06347; advantages by GAE (Schulman et al.
2016, https://arxiv.org/abs/1506.02438, see :mod:`rl.returns`). Written in the style of
cleanrl's ``ppo.py`` / ``ppo_continuous_action.py`` (S. Huang et al., "The 37
Implementation Details of PPO", ICLR blog track 2022), but the update is handed to ANY
``torch.optim.Optimizer``: Adam, SGD, :class:`evoopt.ClipUp`, :class:`evoopt.KLAdaptive`.

One iteration (``PPO.iterate``)::

    rollout: num_steps steps of the N envs with the current policy pi_old
    A, returns = GAE(rewards, values, gamma, gae_lambda)                 (GAE eq. 16)
    for epoch in range(update_epochs), for each of num_minibatches minibatches:
        ratio    = exp(log pi(a|s) - log pi_old(a|s))
        A        = (A - mean A) / (std A + 1e-8)                             if norm_adv
        pg_loss  = mean(max(-A * ratio, -A * clip(ratio, 1 - clip_coef, 1 + clip_coef)))
                                                                             (PPO eq. 7)
        v_loss   = 0.5 * mean(max((V - R)^2,
                                  (V_old + clip(V - V_old, -clip_coef, clip_coef) - R)^2))
                   (or 0.5 * mean((V - R)^2) without clip_vloss)
        loss     = pg_loss - ent_coef * entropy + vf_coef * v_loss           (PPO eq. 9)
        loss.backward(); clip_grad_norm_(max_grad_norm); optimizer.step()
        optimizer.update_kl(approx_kl)          when the optimizer adapts to the KL (KLAdaptive)
    approx_kl = mean((ratio - 1) - log ratio)   (Schulman's k3 estimator, as cleanrl)

Defaults are the paper's Atari/MuJoCo-style settings as in cleanrl (num_steps=128,
gamma=0.99, gae_lambda=0.95, num_minibatches=4, update_epochs=4, clip_coef=0.2,
ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, Adam lr 2.5e-4, eps 1e-5).
``anneal_lr`` / ``anneal_clip_coef`` decay lr and clip_coef linearly to 0 over
``total_timesteps`` (SB3's ``linear`` schedules).

Vector envs use gymnasium's NEXT_STEP autoreset: after an episode ends at step ``t``
the observation at ``t + 1`` is the final one and the step after only resets. That reset
step is stored with ``valid = 0`` and left out of every loss, and the value of the final
observation bootstraps a truncated episode (:func:`rl.returns.next_values_from`).
``global_step`` counts every vector step (N per step), reset steps included.

Observation normalisation: if the agent has an ``obs_norm`` (:class:`rl.normalization.
RunningNorm`), it is frozen during a rollout and its update, then updated with the
rollout's observations, so the old and new log-probabilities use the same statistics.

Determinism: actions and minibatch order come from a private ``torch.Generator``
(``seed``); the envs are reset with ``seed + iteration`` at iteration 0 and every
``reset_every`` iterations. ``state_dict()`` holds the agent, the optimizer, the
generator and the counters; loading it at such a reset boundary continues exactly as
the uninterrupted run.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from evoopt.checks import check_int, check_positive, check_range
from evoopt.protocols import KLAware

from ..returns import compute_gae, next_values_from
from .common import (
    EpisodeTracker,
    build_optimizer,
    check_vector_env,
    run_until,
    sample_action,
    to_env_action,
)

__all__ = ["PPO", "PPO_METRICS"]

#: The metric names of every iteration, in this order (CSV columns in rl.train).
PPO_METRICS = (
    "iteration", "global_step", "episodic_return", "episodic_length", "num_episodes",
    "learning_rate", "clip_coef", "policy_loss", "value_loss", "entropy", "old_approx_kl",
    "approx_kl", "clipfrac", "explained_variance", "sps",
)


class PPO:
    """PPO-clip on a gymnasium vector env with any torch optimizer.

    Args:
        envs: a ``gymnasium.vector.VectorEnv`` (NEXT_STEP autoreset).
        agent: an ``nn.Module`` with ``distribution(obs)`` and ``value(obs)``
            (e.g. :class:`rl.policies.ActorCritic`).
        optimizer: an optimizer over ``agent.parameters()``, a factory ``params -> Optimizer``,
            or None for ``Adam(lr=2.5e-4, eps=1e-5)``.
        num_steps: steps per env per rollout.  Other names as in the paper / cleanrl.
        total_timesteps: the budget the annealing schedules run over (also set by :meth:`learn`).
        target_kl: stop the epochs of an iteration early when approx_kl exceeds it (None: never).
        reset_every: reset (and reseed) the envs every this many iterations (None: only once).
        seed: seed of the private generator and of the env resets.
    """

    def __init__(
        self,
        envs,
        agent: nn.Module,
        optimizer=None,
        *,
        num_steps: int = 128,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        num_minibatches: int = 4,
        update_epochs: int = 4,
        norm_adv: bool = True,
        clip_coef: float = 0.2,
        clip_vloss: bool = True,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = None,
        anneal_lr: bool = False,
        anneal_clip_coef: bool = False,
        total_timesteps: int | None = None,
        reset_every: int | None = None,
        seed: int = 0,
    ):
        # ---- arguments
        check_vector_env(envs)
        self.num_steps = check_int("num_steps", num_steps)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0)
        self.gae_lambda = check_range("gae_lambda", gae_lambda, 0.0, 1.0)
        self.num_minibatches = check_int("num_minibatches", num_minibatches)
        self.update_epochs = check_int("update_epochs", update_epochs)
        self.clip_coef = check_positive("clip_coef", clip_coef)
        self.ent_coef = check_positive("ent_coef", ent_coef, allow_zero=True)
        self.vf_coef = check_positive("vf_coef", vf_coef, allow_zero=True)
        self.max_grad_norm = (None if max_grad_norm is None
                              else check_positive("max_grad_norm", max_grad_norm))
        self.target_kl = None if target_kl is None else check_positive("target_kl", target_kl)
        self.norm_adv, self.clip_vloss = bool(norm_adv), bool(clip_vloss)
        self.anneal_lr, self.anneal_clip_coef = bool(anneal_lr), bool(anneal_clip_coef)
        self.total_timesteps = (None if total_timesteps is None
                                else check_int("total_timesteps", total_timesteps))
        self.reset_every = None if reset_every is None else check_int("reset_every", reset_every)
        self.seed = check_int("seed", seed, minimum=0)
        self.num_envs = envs.num_envs
        self.batch_size = self.num_envs * self.num_steps
        if self.batch_size < self.num_minibatches:
            raise ValueError(f"Invalid num_minibatches: {num_minibatches} (expected <= num_envs * "
                             "num_steps "
                             f"= {self.batch_size})")
        for name in ("distribution", "value"):
            if not callable(getattr(agent, name, None)):
                raise ValueError(f"Invalid agent: {type(agent).__name__} has no {name}(obs) method")

        # ---- environment, agent, optimizer
        self.envs, self.agent = envs, agent
        self.params = [p for p in agent.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(
            optimizer, self.params, functools.partial(torch.optim.Adam, lr=2.5e-4, eps=1e-5))
        self.initial_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.obs_norm = getattr(agent, "obs_norm", None)

        # ---- seeding: one private generator; envs reset with seed + iteration
        self.generator = torch.Generator().manual_seed(self.seed)
        self.iteration = 0
        self.global_step = 0
        self._obs = None  # current observations; None: reset before the next rollout
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self.episodes = EpisodeTracker(self.num_envs)
        self.dtype = next(iter(agent.parameters())).dtype

    # ------------------------------------------------------------------ rollout
    def _reset_envs(self) -> None:
        obs, _ = self.envs.reset(seed=self.seed + self.iteration)
        self._obs = obs
        self._autoreset[:] = False
        self.episodes.reset()

    def _collect(self) -> dict[str, torch.Tensor]:
        T, N = self.num_steps, self.num_envs
        obs_l, act_l, logp_l, val_l, rew_l, term_l, trunc_l, valid_l = ([] for _ in range(8))
        space = self.envs.single_action_space
        with torch.no_grad():
            for _ in range(T):
                obs = torch.as_tensor(self._obs, dtype=self.dtype)
                dist = self.agent.distribution(obs)
                action = sample_action(dist, self.generator)
                valid = ~self._autoreset
                obs_l.append(obs)
                act_l.append(action)
                valid_l.append(torch.as_tensor(valid))
                logp_l.append(dist.log_prob(action))
                val_l.append(self.agent.value(obs))
                env_action = to_env_action(self.agent, action, space)
                next_obs, reward, term, trunc, _ = self.envs.step(env_action)
                self.global_step += N
                done = np.logical_or(term, trunc)
                self.episodes.add(reward, valid, done)
                rew_l.append(torch.as_tensor(reward, dtype=torch.float64))
                term_l.append(torch.as_tensor(term))
                trunc_l.append(torch.as_tensor(trunc))
                self._obs, self._autoreset = next_obs, done
            last_value = self.agent.value(torch.as_tensor(self._obs, dtype=self.dtype))
        b = {"obs": torch.stack(obs_l), "actions": torch.stack(act_l),
             "logprobs": torch.stack(logp_l), "values": torch.stack(val_l),
             "valid": torch.stack(valid_l)}
        values64 = b["values"].to(torch.float64)
        next_values = next_values_from(values64, last_value.to(torch.float64))
        adv, ret = compute_gae(torch.stack(rew_l), values64, next_values, torch.stack(term_l),
                               torch.stack(trunc_l), gamma=self.gamma, gae_lambda=self.gae_lambda)
        b["advantages"], b["returns"] = adv.to(self.dtype), ret.to(self.dtype)
        return b

    # ------------------------------------------------------------------ update
    def iterate(self) -> dict[str, float]:
        """One rollout and one PPO update; returns the metrics named in :data:`PPO_METRICS`."""
        t0 = time.perf_counter()
        if self._obs is None or (self.reset_every and self.iteration % self.reset_every == 0):
            self._reset_envs()
        frac = 1.0
        if self.total_timesteps and (self.anneal_lr or self.anneal_clip_coef):
            frac = max(0.0, 1.0 - self.global_step / self.total_timesteps)
        if self.anneal_lr:
            for g, lr0 in zip(self.optimizer.param_groups, self.initial_lrs):
                g["lr"] = frac * lr0
        clip_coef = self.clip_coef * frac if self.anneal_clip_coef else self.clip_coef

        self.agent.train()
        b = self._collect()
        valid = b["valid"].reshape(-1)
        flat = {k: v.reshape(-1, *v.shape[2:])[valid] for k, v in b.items() if k != "valid"}
        n = int(valid.sum())
        clipfracs, stop = [], False
        mb = {}
        for _epoch in range(self.update_epochs):
            perm = torch.randperm(n, generator=self.generator)
            for idx in torch.tensor_split(perm, self.num_minibatches):
                mb = {k: v[idx] for k, v in flat.items()}
                dist = self.agent.distribution(mb["obs"])
                newlogprob, entropy = dist.log_prob(mb["actions"]), dist.entropy()
                newvalue = self.agent.value(mb["obs"])
                logratio = newlogprob - mb["logprobs"]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(float(((ratio - 1.0).abs() > clip_coef).float().mean()))

                adv = mb["advantages"]
                if self.norm_adv and adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                clipped_ratio = ratio.clamp(1 - clip_coef, 1 + clip_coef)
                pg_loss = torch.max(-adv * ratio, -adv * clipped_ratio).mean()
                if self.clip_vloss:
                    v_unclipped = (newvalue - mb["returns"]) ** 2
                    v_clipped = mb["values"] + (newvalue - mb["values"]).clamp(-clip_coef,
                                                                               clip_coef)
                    v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - mb["returns"]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((newvalue - mb["returns"]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - self.ent_coef * entropy_loss + self.vf_coef * v_loss

                self.optimizer.zero_grad()
                loss.backward()
                if self.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
                self.optimizer.step()
                if isinstance(self.optimizer, KLAware):
                    self.optimizer.update_kl(float(approx_kl))
            if self.target_kl is not None and float(approx_kl) > self.target_kl:
                stop = True
            if stop:
                break
        if self.obs_norm is not None:
            self.obs_norm.update(flat["obs"])

        y_pred, y_true = flat["values"].to(torch.float64), flat["returns"].to(torch.float64)
        var_y = float(y_true.var()) if n > 1 else math.nan
        explained_var = (math.nan if not var_y or math.isnan(var_y)
                         else 1.0 - float((y_true - y_pred).var()) / var_y)
        self.iteration += 1
        ep_ret, ep_len, n_ep = self.episodes.pop()
        return {
            "iteration": self.iteration, "global_step": self.global_step,
            "episodic_return": ep_ret, "episodic_length": ep_len, "num_episodes": n_ep,
            "learning_rate": float(self.optimizer.param_groups[0]["lr"]), "clip_coef": clip_coef,
            "policy_loss": float(pg_loss.detach()), "value_loss": float(v_loss.detach()),
            "entropy": float(entropy_loss.detach()),
            "old_approx_kl": float(old_approx_kl), "approx_kl": float(approx_kl),
            "clipfrac": float(np.mean(clipfracs)), "explained_variance": explained_var,
            "sps": self.batch_size / max(time.perf_counter() - t0, 1e-9),
        }

    def learn(self, total_timesteps: int, callback=None) -> list[dict[str, float]]:
        """Iterate until ``global_step >= total_timesteps``; ``callback(metrics)`` after each
        iteration may return True to stop. Returns the list of metrics."""
        self.total_timesteps = check_int("total_timesteps", total_timesteps)
        return run_until(self, self.total_timesteps, callback)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Agent, optimizer, generator and counters (``torch.load(weights_only=True)``-safe)."""
        return {
            "algorithm": "PPO", "agent": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "iteration": self.iteration, "global_step": self.global_step,
            "initial_lrs": list(self.initial_lrs), "seed": self.seed,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not isinstance(sd, dict) or sd.get("algorithm") != "PPO":
            what = sd.get("algorithm") if isinstance(sd, dict) else type(sd).__name__
            raise ValueError("PPO.load_state_dict: not a PPO state_dict (its 'algorithm' entry is "
                             f"{what!r})")
        self.agent.load_state_dict(sd["agent"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.generator.set_state(sd["generator"])
        self.iteration, self.global_step = int(sd["iteration"]), int(sd["global_step"])
        self.initial_lrs = [float(x) for x in sd["initial_lrs"]]
        self.seed = int(sd["seed"])
        self._obs = None  # the envs are reset (seed + iteration) before the next rollout
