"""One training loop for both families on Gymnasium tasks.

``train(env_id, policy="mlp", optimizer="pgpe" | "ppo" | "reinforce" | <any population
optimizer in evoopt.OPTIMIZERS>, total_timesteps=... or iterations=...)``

- population optimizers (PGPE, OpenAI-ES, ARS, CMA-ES, ...) search a deterministic policy;
  one iteration is one generation, evaluated by :class:`rl.rollout.PopulationRollout`;
- ``"ppo"`` / ``"reinforce"`` train a stochastic policy (an :class:`rl.policies.ActorCritic`
  for PPO) with :class:`rl.algorithms.PPO` / :class:`rl.algorithms.Reinforce`, whose updates
  go to the torch optimizer ``grad_optimizer`` (any name in ``evoopt.OPTIMIZERS``: adam,
  sgd, clipup, kl_adaptive, ...).

At the edge, not in the algorithms: a tqdm progress bar, periodic evaluation of the
center / deterministic policy (``eval_every`` iterations, ``eval_episodes`` episodes with
fixed seeds), metrics in ``run_dir/metrics.csv`` with the fixed columns :data:`COLUMNS`
(TensorBoard scalars in ``run_dir/tb`` when ``tensorboard`` is installed), a checkpoint
``run_dir/checkpoint.pt`` every ``checkpoint_every`` iterations (default 10; 50 for PPO)
and at the end, the final policy in ``run_dir/policy.pt`` (:func:`save_policy` /
:func:`load_policy`) and the learning curve ``run_dir/curve.png`` (when matplotlib is
installed).

Exact resume: ``train(..., resume=True)`` with the same arguments continues from
``run_dir/checkpoint.pt`` and reproduces the uninterrupted run: the checkpoint holds the
optimizer's state (with its RNG), the policy (with its observation normaliser), the
rollout counters or the PPO/REINFORCE generator, and the metrics so far. PPO re-seeds
and resets its envs every ``checkpoint_every`` iterations so that a checkpoint needs no
env state; a PPO run stopped between checkpoints resumes from the last one (population
runs and REINFORCE, which resets its envs every iteration, checkpoint whenever stopped).
Checkpoints load with ``torch.load(weights_only=True)``.

Crash safety (:mod:`rl.checkpoint`): checkpoints are written atomically (temporary file,
fsync, rename) and the previous one is kept as ``checkpoint.pt.prev``; a corrupted newest
file is refused and the previous good one is loaded (with a warning); a checkpoint saved
for another optimizer, policy, env or spec is refused with the differences listed.
SIGTERM or Ctrl-C finishes the current iteration, checkpoints and stops (a second signal
stops at once); a process killed outright resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import evoopt
from evoopt._validation import check_choice, check_int

from .algorithms import PPO, Reinforce
from .checkpoint import GracefulExit, describe, load_checkpoint, save_checkpoint
from .defaults import DEFAULT_OPTIMIZER, PRESETS  # noqa: F401 (re-exported)
from .normalization import STD_RULES
from .policies import make_policy
from .rollout import PopulationRollout, resolve_env_id

__all__ = ["train", "evaluate", "render_gif", "read_csv", "save_policy", "load_policy", "plot_curve",
           "COLUMNS", "TrainResult", "GRADIENT_METHODS", "PRESETS"]

#: CSV columns, the same for every optimizer (empty where an optimizer has no such number).
COLUMNS = (
    "iteration", "env_steps", "train_return", "train_return_max", "eval_return", "eval_return_std",
    "learning_rate", "sigma", "policy_loss", "value_loss", "entropy", "approx_kl", "time_s",
)
GRADIENT_METHODS = ("ppo", "reinforce")
#: The Policy settings ``train(policy_kwargs=...)`` passes on (saved with the policy).
POLICY_KWARGS = ("bias", "squash", "activation")


@dataclass
class TrainResult:
    policy: torch.nn.Module
    history: list[dict[str, float]]
    run_dir: str | None
    final_eval: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ runners
class _PopulationRunner:
    """One generation of a population optimizer on a PopulationRollout."""

    def __init__(self, env_id, policy, name, popsize, lr, seed, optimizer_kwargs, rollout_kwargs):
        kw = dict(optimizer_kwargs)
        kw = {k: v for k, v in kw.items() if v is not None}
        if lr is not None:
            kw["lr"] = lr
        self.policy = policy
        self.opt = evoopt.get_optimizer(name)(policy.parameters(), popsize=popsize, seed=seed, **kw)
        if rollout_kwargs.get("num_actors"):  # opt-in: the same rollout on Ray actors (same numbers)
            from .ray_rollout import RayPopulationRollout

            self.objective = RayPopulationRollout(env_id, policy, self.opt.popsize, seed=seed, **rollout_kwargs)
        else:
            self.objective = PopulationRollout(env_id, policy, self.opt.popsize, seed=seed,
                                               **{k: v for k, v in rollout_kwargs.items() if k != "num_actors"})

    @property
    def env_steps(self) -> int:
        return self.objective.total_steps

    def iterate(self) -> dict[str, float]:
        self.opt.step(self.objective)
        ret = self.objective.last.episode_returns
        ret = ret[torch.isfinite(ret)]
        g = self.opt.param_groups[0]
        return {"train_return": float(ret.mean()) if ret.numel() else math.nan,
                "train_return_max": float(ret.max()) if ret.numel() else math.nan,
                "learning_rate": float(g.get("lr", math.nan)), "sigma": float(g.get("sigma") or math.nan)}

    def evaluate(self, episodes: int, seed: int) -> torch.Tensor:
        return self.objective.evaluate_center(num_episodes=episodes, seed=seed)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "policy": self.policy.state_dict(),
                "rollout": self.objective.state_dict()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.policy.load_state_dict(sd["policy"])
        self.opt.load_state_dict(sd["optimizer"])
        self.objective.load_state_dict(sd["rollout"])


class _GradientRunner:
    """One iteration of PPO or REINFORCE."""

    def __init__(self, env_id, policy, algo, num_envs, seed, algo_kwargs, evaluator_kwargs):
        self.policy = policy
        spec = resolve_env_id(env_id)
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
        self.envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
        self.algo = algo(self.envs, policy, **algo_kwargs, seed=seed)
        self.evaluator = PopulationRollout(env_id, policy, 1, seed=seed, update_obs_norm=False,
                                           **evaluator_kwargs)

    @property
    def env_steps(self) -> int:
        return self.algo.global_step

    def iterate(self) -> dict[str, float]:
        m = self.algo.iterate()
        return {"train_return": m["episodic_return"], "train_return_max": math.nan,
                "learning_rate": m["learning_rate"], "policy_loss": m["policy_loss"],
                "value_loss": m["value_loss"], "entropy": m["entropy"], "approx_kl": m["approx_kl"]}

    def evaluate(self, episodes: int, seed: int) -> torch.Tensor:
        return self.evaluator.evaluate_center(num_episodes=episodes, seed=seed)

    def state_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algo.state_dict()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.algo.load_state_dict(sd["algorithm"])


# ------------------------------------------------------------------ policies on disk
def save_policy(path: str, policy: torch.nn.Module, spec: dict[str, Any]) -> None:
    """Save a policy's weights (and normaliser) with the ``spec`` that rebuilds it:
    ``{"env_id", "kind", "hidden", "obs_norm", "actor_critic", "stochastic"}`` (and
    ``"obs_std_rule"``, ``"policy_kwargs"`` where they are not the defaults)."""
    torch.save({"format": "evoopt.policy/1", "spec": dict(spec, hidden=list(spec.get("hidden", ()))),
                "state_dict": policy.state_dict()}, path)


def load_policy(path: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a policy saved by :func:`save_policy`; returns ``(policy, spec)``."""
    ck = torch.load(path, weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != "evoopt.policy/1":
        raise ValueError(f"Invalid policy file: {path!r} (not saved by rl.train.save_policy)")
    spec = ck["spec"]
    policy = _build_policy(spec)
    policy.load_state_dict(ck["state_dict"])
    return policy, spec


def _build_policy(spec: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    env = gym.make(spec["env_id"])
    try:
        with torch.random.fork_rng():  # the policy's initialisation draws from torch's global RNG
            torch.manual_seed(seed)
            return make_policy(env, kind=spec["kind"], hidden=tuple(spec["hidden"]), obs_norm=spec["obs_norm"],
                               actor_critic=spec["actor_critic"], stochastic=spec["stochastic"],
                               obs_std_rule=spec.get("obs_std_rule", "floor"), **spec.get("policy_kwargs", {}))
    finally:
        env.close()


# ------------------------------------------------------------------ the loop
def train(
    env_id: str,
    *,
    policy: str = "mlp",
    optimizer: str = "pgpe",
    total_timesteps: int | None = None,
    iterations: int | None = None,
    hidden: tuple[int, ...] | None = None,
    obs_norm: bool | None = None,
    obs_std_rule: str = "floor",
    policy_kwargs: dict[str, Any] | None = None,
    popsize: int | None = None,
    lr: float | None = None,
    grad_optimizer: str = "adam",
    num_envs: int | None = None,
    seed: int = 0,
    eval_every: int = 10,
    eval_episodes: int = 10,
    eval_seed: int = 1_000_000,
    checkpoint_every: int | None = None,
    run_dir: str | None = None,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    plot: bool = True,
    target_return: float | None = None,
    callback: Callable[[dict[str, float]], bool] | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    algo_kwargs: dict[str, Any] | None = None,
    rollout_kwargs: dict[str, Any] | None = None,
    use_presets: bool = True,
) -> TrainResult:
    """Train a policy on ``env_id``; see the module docstring.

    Args:
        policy: ``"linear"`` or ``"mlp"`` (hidden widths ``hidden``, default (64, 64)).
        optimizer: ``"ppo"``, ``"reinforce"`` or a population optimizer's registry name.
        total_timesteps / iterations: the budget in env steps and/or iterations (generations
            or PPO/REINFORCE iterations); training stops at whichever comes first.
        obs_norm: observation normalisation (default: on for population optimizers);
            ``obs_std_rule``: its std, ``"floor"`` (OpenAI-ES) or ``"ars"`` (ARS's filter).
        policy_kwargs: ``bias``, ``squash`` (``"clip"``, ``"tanh"``, ``"none"``) and
            ``activation`` of the policy (ARS's: ``{"bias": False, "squash": "none"}``).
        popsize, lr, optimizer_kwargs: the population optimizer's settings.
        lr, grad_optimizer, num_envs, algo_kwargs: the gradient side (``lr`` of the torch
            optimizer ``grad_optimizer``; ``algo_kwargs`` go to PPO / Reinforce).
        eval_every, eval_episodes, eval_seed: evaluation of the deterministic policy (episode
            j of every evaluation uses seed ``eval_seed + j``).
        target_return: stop when an evaluation's mean return reaches it.
        callback: ``callback(row)`` after each iteration; True stops (after a checkpoint).
        use_presets: apply :data:`PRESETS` for (env_id, optimizer) under the given arguments.
    """
    t_start = time.perf_counter()
    if total_timesteps is None and iterations is None:
        raise ValueError("Invalid budget: give total_timesteps or iterations (or both)")
    total_timesteps = None if total_timesteps is None else check_int("total_timesteps", total_timesteps)
    iterations = None if iterations is None else check_int("iterations", iterations)
    eval_every = check_int("eval_every", eval_every)
    eval_episodes = check_int("eval_episodes", eval_episodes)
    if checkpoint_every is None:  # PPO resets its envs at checkpoints: not too often
        checkpoint_every = 50 if optimizer.lower() == "ppo" else 10
    checkpoint_every = check_int("checkpoint_every", checkpoint_every)
    if policy not in ("linear", "mlp"):
        raise ValueError(f"Invalid policy: {policy!r} (expected 'linear' or 'mlp')")
    resolve_env_id(env_id)
    optimizer = optimizer.lower()
    gradient = optimizer in GRADIENT_METHODS
    if not gradient and optimizer not in evoopt.population_optimizers():
        names = sorted([*GRADIENT_METHODS, *evoopt.population_optimizers()])
        raise ValueError(f"Invalid optimizer: {optimizer!r} (expected one of {names})")
    if gradient and (rollout_kwargs or {}).get("num_actors"):
        raise ValueError(f"Invalid num_actors for {optimizer!r}: Ray actors evaluate populations "
                         "(expected a population optimizer, or no num_actors)")
    if resume and run_dir is None:
        raise ValueError("Invalid resume: True needs run_dir (where the checkpoint is)")

    # ---- settings: presets under the user's arguments
    preset = PRESETS.get((env_id, optimizer), {}) if use_presets else {}
    hidden = tuple(hidden if hidden is not None else preset.get("hidden", (64, 64)))
    obs_norm = (not gradient) if obs_norm is None else bool(obs_norm)
    lr = lr if lr is not None else preset.get("lr")
    num_envs = num_envs or preset.get("num_envs", 8)
    popsize = popsize or preset.get("popsize", 50)
    opt_kw = {**preset.get("optimizer_kwargs", {}), **(optimizer_kwargs or {})}
    alg_kw = {**preset.get("algo_kwargs", {}), **(algo_kwargs or {})}
    obs_std_rule = check_choice("obs_std_rule", obs_std_rule, STD_RULES)
    policy_kwargs = dict(policy_kwargs or {})
    unknown = sorted(set(policy_kwargs) - set(POLICY_KWARGS))
    if unknown:
        raise ValueError(f"Invalid policy_kwargs: {unknown} (expected keys among {list(POLICY_KWARGS)})")
    spec = {"env_id": env_id, "kind": policy, "hidden": list(hidden), "obs_norm": obs_norm,
            "actor_critic": optimizer == "ppo", "stochastic": gradient}
    if obs_std_rule != "floor" or policy_kwargs:  # (older policy files have neither key)
        spec.update(obs_std_rule=obs_std_rule, policy_kwargs=policy_kwargs)

    # ---- seeding: the policy's initialisation; optimizers and rollouts take `seed` themselves
    net = _build_policy(spec, seed)
    if gradient:
        opt_cls = evoopt.get_optimizer(grad_optimizer)
        opt_args = {"lr": lr} if lr is not None else {}
        opt_args.update(opt_kw)
        alg_kw["optimizer"] = functools.partial(opt_cls, **opt_args)
        algo = PPO if optimizer == "ppo" else Reinforce
        if hasattr(opt_cls, "update_kl") and algo is PPO:  # the KL sets the lr: no annealing on top
            alg_kw["anneal_lr"] = False
        if algo is PPO:
            alg_kw.setdefault("reset_every", checkpoint_every)
            if total_timesteps is not None:
                alg_kw.setdefault("total_timesteps", total_timesteps)
        runner = _GradientRunner(env_id, net, algo, num_envs, seed, alg_kw, rollout_kwargs or {})
    else:
        runner = _PopulationRunner(env_id, net, optimizer, popsize, lr, seed, opt_kw, rollout_kwargs or {})

    # ---- outputs and resume
    opt_obj = runner.algo.optimizer if gradient else runner.opt
    header = describe(optimizer=opt_obj, policy=net, env_id=env_id, algorithm=optimizer,
                      spec=json.dumps(spec, sort_keys=True))
    history: list[dict[str, float]] = []
    ck_path = csv_path = None
    if run_dir is not None:
        os.makedirs(run_dir, exist_ok=True)
        ck_path, csv_path = os.path.join(run_dir, "checkpoint.pt"), os.path.join(run_dir, "metrics.csv")
        if resume and (os.path.exists(ck_path) or os.path.exists(ck_path + ".prev")):
            # refuses a corrupted file (falling back to the previous good one, with a
            # warning) and one saved for another optimizer, policy, env or spec
            ck = load_checkpoint(ck_path, expected=header)
            runner.load_state_dict(ck["runner"])
            history = [dict(r) for r in ck["history"]]
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump({"spec": spec, "optimizer": optimizer, "seed": seed, "total_timesteps": total_timesteps,
                       "iterations": iterations, "lr": lr, "popsize": popsize, "grad_optimizer": grad_optimizer},
                      f, indent=1, default=str)
        _write_csv(csv_path, history)
    writer = _tensorboard(run_dir) if (tensorboard and run_dir) else None

    def checkpoint():  # atomic: a crash mid-write keeps the previous good checkpoint
        if ck_path is not None:
            save_checkpoint({"runner": runner.state_dict(), "history": history}, ck_path, header=header)

    # ---- the loop
    from tqdm.auto import tqdm

    done_iters = len(history)
    bar_total = iterations if iterations is not None else total_timesteps
    bar = tqdm(total=bar_total, initial=done_iters if iterations is not None else runner.env_steps,
               disable=not progress, desc=f"{optimizer} {env_id}", unit="it" if iterations else "step")

    def budget_left() -> bool:
        if iterations is not None and done_iters >= iterations:
            return False
        if total_timesteps is not None and runner.env_steps >= total_timesteps:
            return False
        reached = history and history[-1].get("eval_return", -math.inf) >= (target_return or math.inf)
        return not (target_return is not None and reached)

    elapsed0 = history[-1]["time_s"] if history else 0.0
    # SIGTERM / Ctrl-C: finish the iteration, checkpoint, stop (a second signal stops at once)
    graceful = GracefulExit() if threading.current_thread() is threading.main_thread() else None
    try:
        if graceful is not None:
            graceful.__enter__()
        while budget_left():
            before = runner.env_steps
            row = dict.fromkeys(COLUMNS, math.nan)
            row.update(runner.iterate())
            done_iters += 1
            row["iteration"], row["env_steps"] = done_iters, runner.env_steps
            last = iterations is not None and done_iters >= iterations or (
                total_timesteps is not None and runner.env_steps >= total_timesteps)
            if done_iters % eval_every == 0 or last:
                r = runner.evaluate(eval_episodes, eval_seed)
                row["eval_return"], row["eval_return_std"] = float(r.mean()), float(r.std(unbiased=False))
            row["time_s"] = elapsed0 + time.perf_counter() - t_start
            history.append(row)
            if csv_path:
                _append_csv(csv_path, row)
            if writer is not None:
                for k in COLUMNS[2:]:
                    if not math.isnan(row[k]):
                        writer.add_scalar(k, row[k], row["env_steps"])
            bar.update(1 if iterations is not None else runner.env_steps - before)
            bar.set_postfix(ret=f"{row['train_return']:.1f}", eval=f"{row['eval_return']:.1f}", refresh=False)
            stop = callback is not None and bool(callback(row))
            interrupted = graceful is not None and graceful.requested
            # PPO checkpoints only where it resets its envs (every checkpoint_every iterations)
            if done_iters % checkpoint_every == 0 or ((stop or interrupted) and optimizer != "ppo"):
                checkpoint()
            if stop or interrupted:
                break
        else:
            checkpoint()  # the budget is spent
    finally:
        if graceful is not None:
            graceful.__exit__(None, None, None)
        bar.close()
        if isinstance(runner, _PopulationRunner):
            runner.objective.close()  # its envs (and Ray actors)
        if writer is not None:
            writer.close()

    final = next((r["eval_return"] for r in reversed(history) if not math.isnan(r["eval_return"])), math.nan)
    if run_dir is not None:
        save_policy(os.path.join(run_dir, "policy.pt"), net, spec)
        if plot:
            plot_curve(csv_path, os.path.join(run_dir, "curve.png"))
    return TrainResult(policy=net, history=history, run_dir=run_dir, final_eval=final,
                       extra={"optimizer_obj": opt_obj})


# ------------------------------------------------------------------ outputs
def _fmt(v) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def _write_csv(path: str, rows: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_fmt(r[c]) for c in COLUMNS])


def _append_csv(path: str, row: dict[str, float]) -> None:
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow([_fmt(row[c]) for c in COLUMNS])


def read_csv(path: str) -> list[dict[str, float]]:
    """The rows of a metrics CSV as floats (NaN for empty cells)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v != "" else math.nan) for k, v in r.items()} for r in csv.DictReader(f)]


def _tensorboard(run_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional dependency
        return None
    return SummaryWriter(os.path.join(run_dir, "tb"))


def plot_curve(csv_path: str, out_png: str) -> str | None:
    """Plot train and eval return against env steps; returns the PNG path, or None when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_csv(csv_path)
    train_pts = [(r["env_steps"], r["train_return"]) for r in rows if not math.isnan(r["train_return"])]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train_pts:
        ax.plot(*zip(*train_pts), lw=1, alpha=0.6, label="train return (episodes ended in the iteration)")
    ev = [(r["env_steps"], r["eval_return"]) for r in rows if not math.isnan(r["eval_return"])]
    if ev:
        ax.plot(*zip(*ev), "o-", ms=3, label="eval return (deterministic)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


# ------------------------------------------------------------------ evaluation
def evaluate(policy_path: str, *, episodes: int = 10, seed: int = 0, gif: str | None = None,
             max_frames: int = 1000) -> np.ndarray:
    """Run a saved policy deterministically for ``episodes`` episodes (seeds ``seed + j``);
    returns the returns. With ``gif``, also render the first episode to a GIF (needs an env
    with ``rgb_array`` rendering and imageio or pillow)."""
    episodes = check_int("episodes", episodes)
    policy, spec = load_policy(policy_path)
    policy.eval()
    returns = PopulationRollout(spec["env_id"], policy, 1, update_obs_norm=False).evaluate_center(
        num_episodes=episodes, seed=seed).numpy()
    if gif is not None:
        render_gif(policy, spec["env_id"], gif, seed=seed, max_frames=max_frames)
    return returns


@torch.no_grad()
def render_gif(policy, env_id: str, path: str, *, seed: int = 0, max_frames: int = 1000) -> int:
    """Render one deterministic episode to ``path``; returns the number of frames."""
    env = gym.make(env_id, render_mode="rgb_array")
    if "rgb_array" not in env.metadata.get("render_modes", []):
        env.close()
        raise ValueError(f"Invalid gif: {env_id} does not render rgb_array frames")
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    for _ in range(max_frames - 1):
        obs, _, term, trunc, _ = env.step(policy.predict(obs))
        frames.append(env.render())
        if term or trunc:
            break
    env.close()
    fps = env.metadata.get("render_fps", 30)
    try:
        import imageio.v2 as imageio

        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    except ImportError:
        try:
            from PIL import Image
        except ImportError:
            raise ValueError("Invalid gif: writing a GIF needs imageio or pillow") from None
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return len(frames)
