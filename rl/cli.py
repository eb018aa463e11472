"""``evoopt train`` and ``evoopt evaluate``: the command-line edge of :mod:`rl.train`.

``evoopt.cli`` calls :func:`register` lazily (its ``SUBCOMMANDS``); this module imports
only :mod:`evoopt.cliargs` from there. Gymnasium and torch are imported only when one of
these commands runs.

    evoopt train CartPole-v1                      # the env's default optimizer and budget
    evoopt train CartPole-v1 --optimizer ppo --timesteps 100000 --run-dir runs/ppo
    evoopt train CartPole-v1 --optimizer ppo --run-dir runs/ppo --resume
    evoopt evaluate runs/ppo --episodes 20 --gif cartpole.gif

Exit codes: 0 done (budget spent, target reached or the optimizer stopped for good), 1 a
runtime failure, 2 a bad command line, 130 interrupted (Ctrl-C / SIGTERM: the checkpoint is
saved and the message says how to resume).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from evoopt.cliargs import UsageError, non_negative_int, positive_int

__all__ = ["register"]

EPILOG = """Only ENV_ID is required. Every setting left out comes from the task's preset
(rl/defaults.py) or the generic defaults: the optimizer (the env's DEFAULT_OPTIMIZER, else
pgpe) and the budget (the preset's, else 1,000,000 env steps; --timesteps / --iterations
set it, and training stops at whichever comes first). Your arguments always win over the
preset's. K=V values are Python literals (0.05, None, True, (64, 64)); anything else is a
string."""


def _kv(text: str) -> dict:
    """``a=1,b=None,c=(1, 2),d=adam`` -> {"a": 1, "b": None, "c": (1, 2), "d": "adam"}:
    values are Python literals, else strings; commas inside brackets do not split."""
    from evoopt.compare import parse_value

    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = {}
    for part in filter(None, (p.strip() for p in parts)):
        k, eq, v = part.partition("=")
        if not eq or not k.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"expected key=value, got {part!r}")
        out[k.strip()] = parse_value(v.strip())
    return out


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(h) for h in text.split(",") if h)
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected widths >= 1 like 64,64, got {text!r}")
    return widths


def register(subparsers) -> None:
    """Add the ``train`` and ``evaluate`` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "train", help="train a policy on a Gymnasium task (population or PPO/REINFORCE)",
        description="Train a policy with a population optimizer (pgpe, openai_es, ars, cmaes, "
        "...) or a policy gradient (ppo, reinforce) on a Gymnasium task.", epilog=EPILOG)
    p.add_argument("env_id", help="Gymnasium id, e.g. CartPole-v1 (the only required argument)")
    p.add_argument("--optimizer", help="ppo, reinforce, or a population optimizer "
                   "(default: the env's preset optimizer, else pgpe)")
    p.add_argument("--policy", choices=["linear", "mlp"], help="policy network (default: mlp)")
    p.add_argument("--hidden", type=_hidden, help="hidden widths, e.g. 64,64 (default: 64,64)")
    p.add_argument("--timesteps", type=positive_int, metavar="N",
                   help="budget in env steps (default: the preset's, else 1,000,000)")
    p.add_argument("--iterations", type=positive_int, metavar="N",
                   help="budget in iterations (generations / PPO iterations)")
    p.add_argument("--popsize", type=positive_int, help="population size (population optimizers)")
    p.add_argument("--lr", type=float,
                   help="learning rate (the optimizer's, or the torch optimizer's)")
    p.add_argument("--grad-optimizer", metavar="NAME", help="torch optimizer for ppo/reinforce: "
                   "adam, sgd, clipup, kl_adaptive, ... (default: adam)")
    p.add_argument("--num-envs", type=positive_int,
                   help="parallel envs for ppo/reinforce (default: 8)")
    p.add_argument("--obs-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="observation normalisation (default: on for population optimizers)")
    p.add_argument("--obs-norm-rule", choices=["floor", "ars"],
                   help="the normaliser's std: floor (OpenAI-ES, default) or ars (ARS's filter)")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                   help="biases in the policy (default: yes; ARS: --no-bias)")
    p.add_argument("--squash", choices=["clip", "tanh", "none"],
                   help="Box actions into bounds: clip (default), tanh, or none "
                   "(ARS: the raw action)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--eval-every", type=positive_int, default=None, metavar="N",
                   help="evaluate every N iterations (default: the preset's, else 10)")
    p.add_argument("--eval-episodes", type=positive_int, default=None, metavar="N",
                   help="episodes per evaluation (default: the preset's, else 10)")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="default 10 (50 for ppo)")
    p.add_argument("--target-return", type=float,
                   help="stop when an evaluation reaches this mean return (default: the preset's; "
                   "inf: never)")
    p.add_argument("--run-dir", help="output directory (config.json, metrics.csv, checkpoint.pt, "
                   "policy.pt, curve.png); without it nothing is saved")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt "
                   "(with the same settings; a fresh run when there is none)")
    p.add_argument("--optimizer-kwargs", type=_kv, metavar="K=V,...",
                   help="the optimizer's (population) or the torch optimizer's (ppo/reinforce) "
                   "arguments, e.g. sigma=0.05,radius_init=None")
    p.add_argument("--algo-kwargs", type=_kv, metavar="K=V,...", help="PPO/Reinforce settings")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: 1)")
    p.add_argument("--ray-actors", type=positive_int, metavar="N",
                   help="evaluate the population on N Ray actors (population optimizers; "
                   "pip install evoopt[ray])")
    p.add_argument("--backend", choices=("gymnasium", "torch", "warp", "auto"),
                   help="where population rollouts run: gymnasium (numpy envs, default), torch "
                   "(classic control as torch tensors), warp (MuJoCo on MuJoCo Warp, "
                   "pip install evoopt[warp]) or auto")
    p.add_argument("--device", help="the device of the torch/warp backend and of the policy "
                   "(e.g. cuda; default cpu)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the device backend's env step")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("evaluate", help="run a saved policy (and render it to a GIF)")
    p.add_argument("policy_path", help="a run folder of `evoopt train`, or its policy.pt")
    p.add_argument("--episodes", type=positive_int, default=10)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--gif", help="write the first episode to this GIF (rgb_array envs)")
    p.set_defaults(func=_cmd_evaluate)


def _config(args):
    from .config import make_config

    policy_kwargs = {k: v for k, v in (("bias", args.bias), ("squash", args.squash))
                     if v is not None}
    return make_config(
        args.env_id, optimizer=args.optimizer, policy=args.policy, total_timesteps=args.timesteps,
        iterations=args.iterations, hidden=args.hidden, obs_norm=args.obs_norm,
        obs_std_rule=args.obs_norm_rule, policy_kwargs=policy_kwargs, popsize=args.popsize,
        lr=args.lr, grad_optimizer=args.grad_optimizer, num_envs=args.num_envs, seed=args.seed,
        eval_every=args.eval_every, eval_episodes=args.eval_episodes,
        checkpoint_every=args.checkpoint_every, target_return=args.target_return,
        optimizer_kwargs=args.optimizer_kwargs, algo_kwargs=args.algo_kwargs,
        rollout_kwargs=_rollout_kwargs(args))


def _rollout_kwargs(args) -> dict | None:
    """The rollout flags the user gave (Ray actors, device backend), as rollout_kwargs."""
    kw = {"num_actors": args.ray_actors, "backend": args.backend, "device": args.device,
          "compile": True if args.compile else None}
    return {k: v for k, v in kw.items() if v is not None} or None


def _budget_text(cfg) -> str:
    parts = []
    if cfg.iterations is not None:
        parts.append(f"{cfg.iterations:,} iterations")
    if cfg.total_timesteps is not None:
        parts.append(f"{cfg.total_timesteps:,} env steps")
    text = " or ".join(parts) + f" ({cfg.sources['budget']})"
    if cfg.target_return is not None and cfg.target_return < float("inf"):
        text += f", or until an evaluation reaches {cfg.target_return:g}"
    return text


def _resume_command(args) -> str:
    argv = list(getattr(args, "argv", None) or ["train", args.env_id, "--run-dir", args.run_dir])
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["evoopt", *argv])


def _cmd_train(args) -> int:
    import torch

    from .train import train_config

    torch.set_num_threads(args.threads)
    if args.resume and not args.run_dir:
        raise UsageError("--resume needs --run-dir")
    try:
        cfg = _config(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"evoopt train: {cfg.optimizer} on {cfg.env_id}, budget {_budget_text(cfg)}", flush=True)
    if not args.run_dir:
        print("no --run-dir: nothing will be saved (no checkpoint, metrics or policy)", flush=True)
    elif args.resume and not any(os.path.exists(os.path.join(args.run_dir, f))
                                 for f in ("checkpoint.pt", "checkpoint.pt.prev")):
        print(f"--resume: no checkpoint in {args.run_dir}: starting a fresh run", flush=True)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        result = train_config(cfg, run_dir=args.run_dir, resume=args.resume, progress=progress)
    except ValueError as e:
        if str(e).startswith("Invalid"):
            raise UsageError(str(e)) from None
        raise
    return _summary(args, result)


def _summary(args, result) -> int:
    """Print what the run did and where its files are; the exit code."""
    last = result.history[-1] if result.history else {}
    print(f"{result.config.optimizer} on {result.config.env_id}: {len(result.history)} iterations, "
          f"{int(last.get('env_steps', 0))} env steps, eval return {result.final_eval:.1f}")
    if result.resumed_from:
        print(f"resumed from the checkpoint of iteration {result.resumed_from}")
    if result.stop_reason == "optimizer stopped":
        why = ", ".join(f"{k}={v}" for k, v in result.stopped.items())
        print(f"stopped early: the optimizer has stopped for good ({why}); the rest of the "
              "budget was not spent")
    elif result.stop_reason == "target_return":
        print("stopped early: an evaluation reached the target return "
              f"{result.config.target_return:g}")
    if result.files:
        print("files: " + ", ".join(result.files))
    if not result.interrupted:
        return 0
    if not args.run_dir:
        print(f"interrupted at iteration {len(result.history)}: nothing was saved (no --run-dir)",
              file=sys.stderr)
    elif result.checkpoint_iteration is None:  # PPO checkpoints where it resets its envs only
        print(f"interrupted at iteration {len(result.history)}, before the first checkpoint "
              f"(every {result.config.checkpoint_every} iterations): --resume would start afresh",
              file=sys.stderr)
    else:
        print(f"interrupted at iteration {len(result.history)}; the checkpoint in {args.run_dir} "
              f"holds {result.checkpoint_iteration} iterations. Resume with:\n  "
              f"{_resume_command(args)}", file=sys.stderr)
    return 130


def _policy_file(path: str) -> str:
    """A run folder stands for its policy.pt."""
    if os.path.isdir(path):
        inner = os.path.join(path, "policy.pt")
        if not os.path.exists(inner):
            raise UsageError(f"{path!r} is a folder without a policy.pt (expected a run folder of "
                             "`evoopt train` or the path of its policy.pt)")
        return inner
    if not os.path.exists(path):
        raise UsageError(f"{path!r} does not exist (expected a run folder of `evoopt train` or its "
                         "policy.pt)")
    return path


def _cmd_evaluate(args) -> int:
    from .train import evaluate, load_policy, render_gif

    path = _policy_file(args.policy_path)
    try:
        returns = evaluate(path, episodes=args.episodes, seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"return over {len(returns)} episodes: mean {returns.mean():.2f}, "
          f"std {returns.std():.2f}, min {returns.min():.2f}, max {returns.max():.2f}", flush=True)
    if args.gif:
        policy, spec = load_policy(path)
        try:
            render_gif(policy, spec["env_id"], args.gif, seed=args.seed)
        except Exception as e:  # noqa: BLE001 - the returns are printed; say why the GIF is not
            hint = _gl_hint(spec["env_id"])
            print(f"evoopt evaluate: no GIF written: {type(e).__name__}: {e}{hint}",
                  file=sys.stderr)
            return 1
        print(f"wrote {args.gif}")
    return 0


def _gl_hint(env_id: str) -> str:
    """MuJoCo renders through OpenGL: without a display it needs a headless backend."""
    from .gym_envs import resolve_env_id

    entry = str(resolve_env_id(env_id).entry_point)
    if "mujoco" not in entry or os.environ.get("MUJOCO_GL"):
        return ""
    return ("\nMuJoCo needs an OpenGL context to render; on a machine without a display run "
            "with MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa (CPU), "
            "e.g. MUJOCO_GL=egl evoopt evaluate ...")
