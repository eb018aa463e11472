"""``evoopt train`` and ``evoopt evaluate``: the command-line edge of :mod:`rl.train`.

``evoopt.cli`` calls :func:`register` lazily; gymnasium and torch are imported only when one
of these commands runs.

    evoopt train CartPole-v1 --optimizer ppo --timesteps 100000 --run-dir runs/ppo
    evoopt train CartPole-v1 --optimizer pgpe --policy linear --iterations 30
    evoopt train CartPole-v1 --optimizer ppo --run-dir runs/ppo --resume
    evoopt evaluate runs/ppo/policy.pt --episodes 20 --gif cartpole.gif
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def _kv(text: str) -> dict:
    """``a=1,b=0.5,c=true`` -> {"a": 1, "b": 0.5, "c": True} (JSON values, else strings)."""
    out = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(",") if h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 64,64, got {text!r}") from None


def register(subparsers) -> None:
    """Add the ``train`` and ``evaluate`` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser("train", help="train a policy on a Gymnasium task (population or PPO/REINFORCE)",
                              description="Train a policy with a population optimizer (pgpe, openai_es, ars, "
                              "cmaes, ...) or a policy gradient (ppo, reinforce) on a Gymnasium task.")
    p.add_argument("env_id", help="Gymnasium id, e.g. CartPole-v1")
    p.add_argument("--optimizer", default="pgpe", help="ppo, reinforce, or a population optimizer (default: pgpe)")
    p.add_argument("--policy", default="mlp", choices=["linear", "mlp"], help="policy network (default: mlp)")
    p.add_argument("--hidden", type=_hidden, help="hidden widths, e.g. 64,64")
    p.add_argument("--timesteps", type=int, help="budget in env steps")
    p.add_argument("--iterations", type=int, help="budget in iterations (generations / PPO iterations)")
    p.add_argument("--popsize", type=int, help="population size (population optimizers)")
    p.add_argument("--lr", type=float, help="learning rate (the optimizer's, or the torch optimizer's)")
    p.add_argument("--grad-optimizer", default="adam",
                   help="torch optimizer for ppo/reinforce: adam, sgd, clipup, kl_adaptive, ... (default: adam)")
    p.add_argument("--num-envs", type=int, help="parallel envs for ppo/reinforce (default: 8)")
    p.add_argument("--obs-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="observation normalisation (default: on for population optimizers)")
    p.add_argument("--obs-norm-rule", choices=["floor", "ars"], default="floor",
                   help="the normaliser's std: floor (OpenAI-ES, default) or ars (ARS's filter)")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                   help="biases in the policy (default: yes; ARS: --no-bias)")
    p.add_argument("--squash", choices=["clip", "tanh", "none"],
                   help="Box actions into bounds: clip (default), tanh, or none (ARS: the raw action)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=10, metavar="N", help="evaluate every N iterations")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="default 10 (50 for ppo)")
    p.add_argument("--target-return", type=float, help="stop when an evaluation reaches this mean return")
    p.add_argument("--run-dir", help="output directory (metrics.csv, checkpoint.pt, policy.pt, curve.png)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--optimizer-kwargs", type=_kv, default={}, metavar="K=V,...")
    p.add_argument("--algo-kwargs", type=_kv, default={}, metavar="K=V,...", help="PPO/Reinforce settings")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--ray-actors", type=int, metavar="N",
                   help="evaluate the population on N Ray actors (population optimizers; pip install evoopt[ray])")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("evaluate", help="run a saved policy (and render it to a GIF)")
    p.add_argument("policy_path", help="a policy.pt written by `evoopt train`")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gif", help="write the first episode to this GIF (rgb_array envs)")
    p.set_defaults(func=_cmd_evaluate)


def _usage(e: Exception):
    try:
        from evoopt.cli import UsageError
    except ImportError:  # pragma: no cover
        return e
    return UsageError(str(e))


def _cmd_train(args) -> int:
    import torch

    from .train import train

    torch.set_num_threads(max(1, args.threads))
    if args.timesteps is None and args.iterations is None:
        raise _usage(ValueError("give --timesteps or --iterations"))
    if args.resume and not args.run_dir:
        raise _usage(ValueError("--resume needs --run-dir"))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        result = train(
            args.env_id, policy=args.policy, optimizer=args.optimizer, total_timesteps=args.timesteps,
            iterations=args.iterations, hidden=args.hidden, obs_norm=args.obs_norm, popsize=args.popsize,
            obs_std_rule=args.obs_norm_rule,
            policy_kwargs={k: v for k, v in (("bias", args.bias), ("squash", args.squash)) if v is not None},
            lr=args.lr, grad_optimizer=args.grad_optimizer, num_envs=args.num_envs, seed=args.seed,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
            run_dir=args.run_dir, resume=args.resume, progress=progress, target_return=args.target_return,
            optimizer_kwargs=args.optimizer_kwargs, algo_kwargs=args.algo_kwargs,
            rollout_kwargs={"num_actors": args.ray_actors} if args.ray_actors else None)
    except ValueError as e:
        if str(e).startswith("Invalid"):
            raise _usage(e) from None
        raise
    last = result.history[-1] if result.history else {}
    print(f"{args.optimizer} on {args.env_id}: {len(result.history)} iterations, "
          f"{int(last.get('env_steps', 0))} env steps, eval return {result.final_eval:.1f}")
    if args.run_dir:
        print(f"outputs in {args.run_dir} (metrics.csv, checkpoint.pt, policy.pt)")
    return 0


def _cmd_evaluate(args) -> int:
    from .train import evaluate

    try:
        returns = evaluate(args.policy_path, episodes=args.episodes, seed=args.seed, gif=args.gif)
    except (ValueError, FileNotFoundError) as e:
        raise _usage(e) from None
    print(f"return over {len(returns)} episodes: mean {returns.mean():.2f}, std {returns.std():.2f}, "
          f"min {returns.min():.2f}, max {returns.max():.2f}")
    if args.gif:
        print(f"wrote {args.gif}")
    return 0
