"""One training loop for both families on Gymnasium tasks.

``train(env_id, optimizer="pgpe" | "ppo" | "reinforce" | <any population optimizer in
evoopt.OPTIMIZERS>, policy="linear" | "mlp", total_timesteps=..., iterations=...)``

Every setting left out comes from the task's preset (``rl.defaults.PRESETS``) or the generic
defaults, the optimizer included (``rl.defaults.DEFAULT_OPTIMIZER``, else PGPE), and so does
the budget (the preset's, else :data:`rl.config.DEFAULT_BUDGET`, one million env steps);
:func:`rl.config.make_config` resolves and validates them once into a
:class:`~rl.config.TrainConfig`, which :func:`train_config` runs.

- population optimizers (PGPE, OpenAI-ES, ARS, CMA-ES, ...) search a deterministic policy;
  one iteration is one generation, evaluated by :class:`rl.rollout.PopulationRollout`;
- ``"ppo"`` / ``"reinforce"`` train a stochastic policy (an :class:`rl.policies.ActorCritic`
  for PPO) with :class:`rl.algorithms.PPO` / :class:`rl.algorithms.Reinforce`, whose updates
  go to the torch optimizer ``grad_optimizer`` (any name in ``evoopt.OPTIMIZERS``: adam,
  sgd, clipup, kl_adaptive, ...).

At the edge, not in the algorithms: a tqdm progress bar, periodic evaluation of the
center / deterministic policy (``eval_every`` iterations, ``eval_episodes`` episodes with
fixed seeds), and the files of :class:`rl.outputs.RunOutputs`: the settings that ran in
``run_dir/config.json``, metrics in ``run_dir/metrics.csv`` with the fixed columns
:data:`COLUMNS` (``sigma``: the adapted search width ``opt.current_sigma`` where the
optimizer has one; TensorBoard scalars in ``run_dir/tb`` when ``tensorboard`` is
installed), a checkpoint
``run_dir/checkpoint.pt`` every ``checkpoint_every`` iterations (default 10; 50 for PPO)
and at the end, the final policy in ``run_dir/policy.pt`` (:func:`save_policy` /
:func:`load_policy`) and the learning curve ``run_dir/curve.png`` (when matplotlib is
installed).

Exact resume: ``train(..., resume=True)`` with the same settings continues from
``run_dir/checkpoint.pt`` and reproduces the uninterrupted run (other settings are refused
with the differences listed, :meth:`rl.config.TrainConfig.identity`; the budget, the
evaluation schedule and the number of Ray actors may change): the checkpoint holds the
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
SIGTERM or Ctrl-C finishes the current iteration, checkpoints and stops with
``TrainResult.stop_reason == "interrupted"`` (a second signal stops at once); a process
killed outright resumes from its last checkpoint. A population optimizer that has stopped for good
(a non-empty ``opt.stopped``, e.g. CMA-ES after pycma's termination criteria) ends the run
(``stop_reason == "optimizer stopped"``, the reasons in ``TrainResult.stopped``).
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import evoopt
from evoopt.checks import check_int
from evoopt.compare import stop_reasons

from .algorithms import PPO, Reinforce
from .checkpoint import GracefulExit, describe
from .config import GRADIENT_METHODS, POLICY_KWARGS, TrainConfig, make_config  # noqa: F401
from .defaults import DEFAULT_OPTIMIZER, PRESETS  # noqa: F401 (re-exported)
from .gym_envs import make_env, resolve_env_id
from .outputs import COLUMNS, RunOutputs, plot_curve, read_csv
from .policies import make_policy
from .rollout import PopulationRollout

__all__ = ["train", "train_config", "evaluate", "render_gif", "read_csv", "save_policy",
           "load_policy", "plot_curve", "COLUMNS", "TrainResult", "GRADIENT_METHODS", "PRESETS"]


@dataclass
class TrainResult:
    """What :func:`train` returns. ``stop_reason``: ``"budget"``, ``"target_return"``,
    ``"optimizer stopped"`` (the optimizer's reasons in ``stopped``), ``"callback"`` or
    ``"interrupted"`` (SIGTERM / Ctrl-C). ``files``: every file written into ``run_dir``;
    ``checkpoint_iteration``: the iterations held by the last checkpoint saved (a resume
    continues from there); ``resumed_from``: the iterations loaded from a checkpoint."""

    policy: torch.nn.Module
    history: list[dict[str, float]]
    run_dir: str | None
    final_eval: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig | None = None
    stop_reason: str = "budget"
    stopped: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    checkpoint_iteration: int | None = None
    resumed_from: int = 0

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"


# ------------------------------------------------------------------ runners
class _PopulationRunner:
    """One generation of a population optimizer on a PopulationRollout."""

    def __init__(self, cfg: TrainConfig, policy: torch.nn.Module):
        kw = dict(cfg.optimizer_kwargs)
        if cfg.lr is not None:
            kw["lr"] = cfg.lr
        if cfg.rollout_kwargs.get("device") is not None:  # the device backend's device
            policy.to(cfg.rollout_kwargs["device"])
        self.policy = policy
        self.opt = evoopt.get_optimizer(cfg.optimizer)(policy.parameters(), popsize=cfg.popsize,
                                                       seed=cfg.seed, **kw)
        roll = dict(cfg.rollout_kwargs)
        if roll.get("num_actors") is not None:  # opt-in: the same rollout on Ray actors
            from .ray_rollout import RayPopulationRollout  # (the same numbers)

            self.objective = RayPopulationRollout(cfg.env_id, policy, self.opt.popsize,
                                                  seed=cfg.seed, **roll)
        else:
            roll.pop("num_actors", None)
            self.objective = PopulationRollout(cfg.env_id, policy, self.opt.popsize, seed=cfg.seed,
                                               **roll)

    @property
    def env_steps(self) -> int:
        return self.objective.total_steps

    def iterate(self) -> dict[str, float]:
        self.opt.step(self.objective)
        ret = self.objective.last.episode_returns
        ret = ret[torch.isfinite(ret)]
        g = self.opt.param_groups[0]
        sigma = getattr(self.opt, "current_sigma", None)  # the adapted width, where there is one
        sigma = sigma() if callable(sigma) else sigma
        sigma = g.get("sigma") if sigma is None else sigma
        return {"train_return": float(ret.mean()) if ret.numel() else math.nan,
                "train_return_max": float(ret.max()) if ret.numel() else math.nan,
                "learning_rate": float(g.get("lr", math.nan)),
                "sigma": math.nan if sigma is None else float(sigma)}

    def evaluate(self, episodes: int, seed: int) -> torch.Tensor:
        return self.objective.evaluate_center(num_episodes=episodes, seed=seed)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "policy": self.policy.state_dict(),
                "rollout": self.objective.state_dict()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.policy.load_state_dict(sd["policy"])
        self.opt.load_state_dict(sd["optimizer"])
        self.objective.load_state_dict(sd["rollout"])

    def close(self) -> None:
        self.objective.close()  # its envs (and Ray actors)


class _GradientRunner:
    """One iteration of PPO or REINFORCE."""

    def __init__(self, cfg: TrainConfig, policy: torch.nn.Module):
        self.policy = policy
        spec = resolve_env_id(cfg.env_id)
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
        self.envs = gym.make_vec(cfg.env_id, num_envs=cfg.num_envs, vectorization_mode=mode)
        opt_args = {"lr": cfg.lr} if cfg.lr is not None else {}
        opt_args.update(cfg.optimizer_kwargs)
        factory = functools.partial(evoopt.get_optimizer(cfg.grad_optimizer), **opt_args)
        algo = PPO if cfg.optimizer == "ppo" else Reinforce
        self.algo = algo(self.envs, policy, optimizer=factory, **cfg.algo_kwargs, seed=cfg.seed)
        self.opt = self.algo.optimizer
        self.evaluator = PopulationRollout(cfg.env_id, policy, 1, seed=cfg.seed,
                                           update_obs_norm=False, **cfg.rollout_kwargs)

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

    def close(self) -> None:
        self.envs.close()
        self.evaluator.close()


# ------------------------------------------------------------------ policies on disk
def save_policy(path: str, policy: torch.nn.Module, spec: dict[str, Any]) -> None:
    """Save a policy's weights (and normaliser) with the ``spec`` that rebuilds it:
    ``{"env_id", "kind", "hidden", "obs_norm", "actor_critic", "stochastic"}`` (and
    ``"obs_std_rule"``, ``"policy_kwargs"`` where they are not the defaults)."""
    torch.save({"format": "evoopt.policy/1",
                "spec": dict(spec, hidden=list(spec.get("hidden", ()))),
                "state_dict": policy.state_dict()}, path)


def load_policy(path: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a policy saved by :func:`save_policy`; returns ``(policy, spec)``."""
    what = "expected a policy.pt written by `evoopt train` or rl.train.save_policy"
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Exception as e:  # noqa: BLE001 - garbage, truncated, or pickled objects
        # (torch's own message advises weights_only=False: loading untrusted pickles is unsafe)
        raise ValueError(f"Invalid policy file: {path!r} cannot be read as plain tensors "
                         f"({type(e).__name__}; {what})") from None
    if not isinstance(ck, dict) or ck.get("format") != "evoopt.policy/1":
        raise ValueError(f"Invalid policy file: {path!r} is not an evoopt policy ({what})")
    spec = ck["spec"]
    policy = _build_policy(spec)
    policy.load_state_dict(ck["state_dict"])
    return policy, spec


def _build_policy(spec: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    env = make_env(spec["env_id"])  # MuJoCo's compiler warnings: once per process
    try:
        with torch.random.fork_rng():  # the policy's initialisation draws from torch's global RNG
            torch.manual_seed(seed)
            return make_policy(env, kind=spec["kind"], hidden=tuple(spec["hidden"]),
                               obs_norm=spec["obs_norm"], actor_critic=spec["actor_critic"],
                               stochastic=spec["stochastic"],
                               obs_std_rule=spec.get("obs_std_rule", "floor"),
                               **spec.get("policy_kwargs", {}))
    finally:
        env.close()


# ------------------------------------------------------------------ the loop
def train(
    env_id: str,
    *,
    policy: str | None = None,
    optimizer: str | None = None,
    total_timesteps: int | None = None,
    iterations: int | None = None,
    hidden: tuple[int, ...] | None = None,
    obs_norm: bool | None = None,
    obs_std_rule: str | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    popsize: int | None = None,
    lr: float | None = None,
    grad_optimizer: str | None = None,
    num_envs: int | None = None,
    seed: int = 0,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
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
    """Train a policy on ``env_id``; see the module docstring. ``None`` means "not given":
    the preset's value, else the generic default (:func:`rl.config.make_config`).

    Args:
        policy: ``"linear"`` or ``"mlp"`` (hidden widths ``hidden``, default (64, 64)).
        optimizer: ``"ppo"``, ``"reinforce"`` or a population optimizer's registry name
            (default: ``DEFAULT_OPTIMIZER[env_id]``, else ``"pgpe"``).
        total_timesteps / iterations: the budget in env steps and/or iterations (generations
            or PPO/REINFORCE iterations); training stops at whichever comes first. Neither:
            the preset's budget, else one million env steps.
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
    config = make_config(
        env_id, optimizer=optimizer, policy=policy, total_timesteps=total_timesteps,
        iterations=iterations, hidden=hidden, obs_norm=obs_norm, obs_std_rule=obs_std_rule,
        policy_kwargs=policy_kwargs, popsize=popsize, lr=lr, grad_optimizer=grad_optimizer,
        num_envs=num_envs, seed=seed, eval_every=eval_every, eval_episodes=eval_episodes,
        eval_seed=eval_seed, checkpoint_every=checkpoint_every, target_return=target_return,
        optimizer_kwargs=optimizer_kwargs, algo_kwargs=algo_kwargs, rollout_kwargs=rollout_kwargs,
        use_presets=use_presets)
    return train_config(config, run_dir=run_dir, resume=resume, progress=progress,
                        tensorboard=tensorboard, plot=plot, callback=callback)


def train_config(
    config: TrainConfig,
    *,
    run_dir: str | None = None,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    plot: bool = True,
    callback: Callable[[dict[str, float]], bool] | None = None,
) -> TrainResult:
    """Run a resolved :class:`~rl.config.TrainConfig` (what :func:`train` does after
    :func:`~rl.config.make_config`)."""
    if resume and run_dir is None:
        raise ValueError("Invalid resume: True needs run_dir (where the checkpoint is)")
    net = _build_policy(config.spec, config.seed)  # the policy's initialisation draws from `seed`
    runner = _GradientRunner(config, net) if config.gradient else _PopulationRunner(config, net)
    out = RunOutputs(run_dir, tensorboard=tensorboard)
    try:
        result = _loop(config, runner, out, resume, progress, callback)
    finally:
        runner.close()
        out.close()
    out.finish(lambda path: save_policy(path, net, config.spec), plot)
    result.files = list(out.files)
    result.checkpoint_iteration = out.checkpoint_iteration
    return result


def _stop_reason(cfg: TrainConfig, runner, history: list[dict[str, float]]) -> str | None:
    """Why the run must not start another iteration, or None."""
    if cfg.iterations is not None and len(history) >= cfg.iterations:
        return "budget"
    if cfg.total_timesteps is not None and runner.env_steps >= cfg.total_timesteps:
        return "budget"
    if stop_reasons(runner.opt):
        return "optimizer stopped"
    if cfg.target_return is not None and history:
        if history[-1].get("eval_return", -math.inf) >= cfg.target_return:
            return "target_return"
    return None


def _loop(cfg: TrainConfig, runner, out: RunOutputs, resume: bool, progress: bool,
          callback) -> TrainResult:
    t_start = time.perf_counter()
    header = describe(optimizer=runner.opt, policy=runner.policy, env_id=cfg.env_id,
                      algorithm=cfg.optimizer, spec=json.dumps(cfg.spec, sort_keys=True),
                      **cfg.identity())
    history: list[dict[str, float]] = []
    if resume and out.has_checkpoint():
        # refuses a corrupted file (falling back to the previous good one, with a warning)
        # and one saved for another optimizer, policy, env or setting (all listed)
        ck = out.load_checkpoint(header)
        runner.load_state_dict(ck["runner"])
        history = [dict(r) for r in ck["history"]]
    resumed_from = len(history)
    out.start(cfg.to_json(), history)  # after the checks: config.json says what runs

    def checkpoint():  # atomic: a crash mid-write keeps the previous good checkpoint
        out.save_checkpoint({"runner": runner.state_dict(), "history": history}, header,
                            len(history))

    from tqdm.auto import tqdm

    by_iter = cfg.iterations is not None
    bar = tqdm(total=cfg.iterations if by_iter else cfg.total_timesteps,
               initial=len(history) if by_iter else runner.env_steps, disable=not progress,
               desc=f"{cfg.optimizer} {cfg.env_id}", unit="it" if by_iter else "step")
    elapsed0 = history[-1]["time_s"] if history else 0.0
    last_eval = next((r["eval_return"] for r in reversed(history)
                      if not math.isnan(r["eval_return"])), math.nan)
    # SIGTERM / Ctrl-C: finish the iteration, checkpoint, stop (a second signal stops at once)
    graceful = GracefulExit() if threading.current_thread() is threading.main_thread() else None
    reason = None
    try:
        if graceful is not None:
            graceful.__enter__()
        while (reason := _stop_reason(cfg, runner, history)) is None:
            before = runner.env_steps
            row = dict.fromkeys(COLUMNS, math.nan)
            row.update(runner.iterate())
            row["iteration"], row["env_steps"] = len(history) + 1, runner.env_steps
            final = _stop_reason(cfg, runner, [*history, row]) is not None  # budget or stopped
            if row["iteration"] % cfg.eval_every == 0 or final:
                r = runner.evaluate(cfg.eval_episodes, cfg.eval_seed)
                row["eval_return"] = float(r.mean())
                row["eval_return_std"] = float(r.std(unbiased=False))
                last_eval = row["eval_return"]
            row["time_s"] = elapsed0 + time.perf_counter() - t_start
            history.append(row)
            out.add_row(row)
            bar.update(1 if by_iter else runner.env_steps - before)
            bar.set_postfix(_postfix(row["train_return"], last_eval), refresh=False)
            if callback is not None and bool(callback(row)):
                reason = "callback"
            elif graceful is not None and graceful.requested:
                reason = "interrupted"
            # PPO checkpoints only where it resets its envs (every checkpoint_every iterations)
            if row["iteration"] % cfg.checkpoint_every == 0 or (reason and cfg.optimizer != "ppo"):
                checkpoint()
            if reason:
                break
        else:
            checkpoint()  # the budget is spent, the target reached or the optimizer stopped
    finally:
        if graceful is not None:
            graceful.__exit__(None, None, None)
        bar.close()

    final_eval = next((r["eval_return"] for r in reversed(history)
                       if not math.isnan(r["eval_return"])), math.nan)
    return TrainResult(policy=runner.policy, history=history, run_dir=out.run_dir,
                       final_eval=final_eval, extra={"optimizer_obj": runner.opt}, config=cfg,
                       stop_reason=reason, stopped=stop_reasons(runner.opt),
                       resumed_from=resumed_from)


def _postfix(train_return: float, eval_return: float) -> dict[str, str]:
    """The progress bar's numbers: 4 significant digits, no NaN."""
    post = {}
    if math.isfinite(train_return):
        post["ret"] = f"{train_return:.4g}"
    if math.isfinite(eval_return):
        post["eval"] = f"{eval_return:.4g}"
    return post

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
