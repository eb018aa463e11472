r"""REINFORCE: the Monte Carlo policy gradient, with an optional baseline.

R. J. Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist
Reinforcement Learning", Machine Learning 8, 1992,
https://doi.org/10.1007/BF00992696 (the likelihood-ratio gradient, eq. 10/11, with a
reinforcement baseline b). The update is handed to ANY ``torch.optim.Optimizer``.

One iteration (``Reinforce.iterate``): the N envs are reset (seed ``seed + iteration``)
and each plays one full episode with the current policy (at most ``max_steps`` steps;
steps after an env's episode ended are masked out). Then::

    G_t      = sum_k gamma^k r_{t+k}                      (rl.returns.discounted_returns)
    A_t      = G_t - b_t,   b_t = baseline:
                 "none":  0
                 "mean":  the batch mean of G, and A is divided by the batch std of G
                 "value": V(s_t) from agent.value (the critic also bootstraps truncations)
    loss     = -mean_t(log pi(a_t|s_t) * A_t) - ent_coef * mean_t(entropy)
               (+ vf_coef * 0.5 * mean_t((V(s_t) - G_t)^2) with the value baseline)
    loss.backward(); clip_grad_norm_(max_grad_norm); optimizer.step()
    optimizer.update_kl(approx_kl)   when the optimizer adapts to the KL (KLAdaptive);
                                     approx_kl = mean((ratio - 1) - log ratio) after the step

``global_step`` counts the valid transitions (the agent's actual env interactions).
Actions come from a private ``torch.Generator`` (``seed``), so a run resumed from
``state_dict()`` continues exactly.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from evoopt.checks import check_choice, check_int, check_positive, check_range
from evoopt.protocols import KLAware

from ..returns import discounted_returns
from .common import (
    EpisodeTracker,
    build_optimizer,
    check_vector_env,
    run_until,
    sample_action,
    to_env_action,
)

__all__ = ["Reinforce", "REINFORCE_METRICS"]

#: The metric names of every iteration, in this order.
REINFORCE_METRICS = (
    "iteration", "global_step", "episodic_return", "episodic_length", "num_episodes",
    "learning_rate", "policy_loss", "value_loss", "entropy", "approx_kl", "sps",
)


class Reinforce:
    """REINFORCE on a gymnasium vector env (NEXT_STEP autoreset) with any torch optimizer.

    Args:
        envs: a ``gymnasium.vector.VectorEnv``; each iteration plays ``envs.num_envs`` episodes.
        agent: an ``nn.Module`` with ``distribution(obs)`` (and ``value(obs)`` for
            ``baseline="value"``), e.g. a stochastic :class:`rl.policies.Policy`.
        optimizer: an optimizer over ``agent.parameters()``, a factory, or None (Adam, lr 1e-3).
        gamma, ent_coef, vf_coef, max_grad_norm: as in the maths above.
        baseline: ``"none"``, ``"mean"`` or ``"value"``.
        max_steps: cap on the steps of one iteration (episodes still running are truncated).
        seed: seed of the private generator and of the env resets.
    """

    def __init__(
        self,
        envs,
        agent: nn.Module,
        optimizer=None,
        *,
        gamma: float = 0.99,
        baseline: str = "mean",
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = None,
        max_steps: int = 10_000,
        seed: int = 0,
    ):
        check_vector_env(envs)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0)
        self.baseline = check_choice("baseline", baseline, {"none", "mean", "value"})
        self.ent_coef = check_positive("ent_coef", ent_coef, allow_zero=True)
        self.vf_coef = check_positive("vf_coef", vf_coef, allow_zero=True)
        self.max_grad_norm = (None if max_grad_norm is None
                              else check_positive("max_grad_norm", max_grad_norm))
        self.max_steps = check_int("max_steps", max_steps)
        self.seed = check_int("seed", seed, minimum=0)
        if not callable(getattr(agent, "distribution", None)):
            raise ValueError(f"Invalid agent: {type(agent).__name__} has no distribution(obs) "
                             "method")
        if baseline == "value" and not callable(getattr(agent, "value", None)):
            raise ValueError(f"Invalid baseline: 'value' needs agent.value(obs), which "
                             f"{type(agent).__name__} does not have")

        self.envs, self.agent = envs, agent
        self.num_envs = envs.num_envs
        self.params = [p for p in agent.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(optimizer, self.params,
                                         functools.partial(torch.optim.Adam, lr=1e-3))
        self.obs_norm = getattr(agent, "obs_norm", None)
        self.dtype = next(iter(agent.parameters())).dtype

        self.generator = torch.Generator().manual_seed(self.seed)
        self.iteration = 0
        self.global_step = 0
        self.episodes = EpisodeTracker(self.num_envs)

    def _collect(self) -> dict[str, torch.Tensor]:
        """One episode per env, from a reset with seed ``seed + iteration``."""
        obs, _ = self.envs.reset(seed=self.seed + self.iteration)
        self.episodes.reset()
        alive = np.ones(self.num_envs, dtype=bool)
        space = self.envs.single_action_space
        cols = {k: [] for k in ("obs", "actions", "logprobs", "rewards", "term", "trunc", "valid",
                                "next_obs")}
        t = 0
        with torch.no_grad():
            while alive.any():
                o = torch.as_tensor(obs, dtype=self.dtype)
                dist = self.agent.distribution(o)
                action = sample_action(dist, self.generator)
                env_action = to_env_action(self.agent, action, space)
                next_obs, reward, term, trunc, _ = self.envs.step(env_action)
                t += 1
                trunc = np.logical_or(trunc, t >= self.max_steps)
                done = np.logical_or(term, trunc)
                self.episodes.add(reward, alive, done)
                for k, v in (("obs", o), ("actions", action), ("logprobs", dist.log_prob(action)),
                             ("rewards", torch.as_tensor(reward, dtype=torch.float64)),
                             ("term", torch.as_tensor(term)), ("trunc", torch.as_tensor(trunc)),
                             ("valid", torch.as_tensor(alive.copy())),
                             ("next_obs", torch.as_tensor(next_obs, dtype=self.dtype))):
                    cols[k].append(v)
                self.global_step += int(alive.sum())
                alive &= ~done
                obs = next_obs
        return {k: torch.stack(v) for k, v in cols.items()}

    def iterate(self) -> dict[str, float]:
        """Play one episode per env and take one policy-gradient step; returns the metrics
        named in :data:`REINFORCE_METRICS`."""
        t0 = time.perf_counter()
        b = self._collect()
        valid = b["valid"]
        next_values = None
        if self.baseline == "value":
            with torch.no_grad():
                next_values = self.agent.value(b["next_obs"]).to(torch.float64)
        G = discounted_returns(b["rewards"], b["term"], b["trunc"], gamma=self.gamma,
                               next_values=next_values)
        obs, actions, G_v = b["obs"][valid], b["actions"][valid], G[valid].to(self.dtype)

        dist = self.agent.distribution(obs)
        logprob = dist.log_prob(actions)
        entropy = dist.entropy().mean()
        value_loss = torch.zeros((), dtype=self.dtype)
        if self.baseline == "value":
            v = self.agent.value(obs)
            adv = G_v - v.detach()
            value_loss = 0.5 * ((v - G_v) ** 2).mean()
        elif self.baseline == "mean" and G_v.numel() > 1:
            adv = (G_v - G_v.mean()) / (G_v.std() + 1e-8)
        else:
            adv = G_v
        policy_loss = -(logprob * adv).mean()
        loss = policy_loss - self.ent_coef * entropy + self.vf_coef * value_loss

        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            logratio = self.agent.distribution(obs).log_prob(actions) - b["logprobs"][valid]
            approx_kl = float(((logratio.exp() - 1) - logratio).mean())
        if isinstance(self.optimizer, KLAware):
            self.optimizer.update_kl(approx_kl)
        if self.obs_norm is not None:
            self.obs_norm.update(obs)

        self.iteration += 1
        ep_ret, ep_len, n_ep = self.episodes.pop()
        return {
            "iteration": self.iteration, "global_step": self.global_step,
            "episodic_return": ep_ret, "episodic_length": ep_len, "num_episodes": n_ep,
            "learning_rate": float(self.optimizer.param_groups[0]["lr"]),
            "policy_loss": float(policy_loss.detach()), "value_loss": float(value_loss.detach()),
            "entropy": float(entropy.detach()), "approx_kl": approx_kl,
            "sps": int(valid.sum()) / max(time.perf_counter() - t0, 1e-9),
        }

    def learn(self, total_timesteps: int, callback=None) -> list[dict[str, float]]:
        """Iterate until ``global_step >= total_timesteps`` (or ``callback(metrics)`` is True)."""
        return run_until(self, check_int("total_timesteps", total_timesteps), callback)

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": "Reinforce", "agent": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "iteration": self.iteration, "global_step": self.global_step, "seed": self.seed,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not isinstance(sd, dict) or sd.get("algorithm") != "Reinforce":
            what = sd.get("algorithm") if isinstance(sd, dict) else type(sd).__name__
            raise ValueError("Reinforce.load_state_dict: not a Reinforce state_dict (its "
                             f"'algorithm' entry is {what!r})")
        self.agent.load_state_dict(sd["agent"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.generator.set_state(sd["generator"])
        self.iteration, self.global_step = int(sd["iteration"]), int(sd["global_step"])
        self.seed = int(sd["seed"])

