"""An evolution strategy and PPO on CartPole-v1 through the same entry point,
:func:`rl.train.train`, at the same budget in env steps.

Prints, for each method, the env steps and seconds to reach a deterministic evaluation
return of 475 (10 episodes) and the final evaluation; the metrics of each run are in
``runs/es_vs_ppo/<name>/metrics.csv`` with the same columns. Every method first runs one
untimed iteration (:func:`warm_up`), so that one-time costs (imports, first calls into
torch and the envs) are not charged to whichever method happens to run first.

    PYTHONPATH=. python examples/es_vs_ppo.py [--timesteps 200000] [--seed 0] [--tiny]
"""

import argparse
import math
import os
import tempfile

import torch

from rl.train import train

METHODS = {
    "pgpe (linear)": dict(optimizer="pgpe", policy="linear"),
    "openai_es (linear)": dict(optimizer="openai_es", policy="linear", popsize=50,
                               optimizer_kwargs=dict(lr=0.05, sigma=0.1)),
    "ppo (mlp 64-64)": dict(optimizer="ppo", policy="mlp"),
}


def _settings(kw: dict, tiny: bool) -> dict:
    kw = dict(kw)
    if tiny:
        kw.update(iterations=2, popsize=10 if kw["optimizer"] != "ppo" else None)
        if kw["optimizer"] == "ppo":
            kw["algo_kwargs"] = dict(num_steps=16)
    return kw


def warm_up(seed: int, tiny: bool) -> None:
    """One untimed iteration of every method, nothing saved."""
    for kw in METHODS.values():
        kw = {**_settings(kw, tiny), "iterations": 1}
        train("CartPole-v1", seed=seed, eval_episodes=1, progress=False, plot=False, **kw)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timesteps", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default: runs/es_vs_ppo)")
    ap.add_argument("--tiny", action="store_true", help="2 iterations per method (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or (tempfile.mkdtemp() if args.tiny else os.path.join("runs", "es_vs_ppo"))
    results = {}
    warm_up(args.seed, args.tiny)
    for name, kw in METHODS.items():
        kw = _settings(kw, args.tiny)
        res = train("CartPole-v1", total_timesteps=args.timesteps, seed=args.seed,
                    eval_every=1 if args.tiny else 5, target_return=475,
                    run_dir=os.path.join(out, name.split()[0]), progress=not args.tiny, **kw)
        solved = next((r for r in res.history if r["eval_return"] >= 475), None)
        results[name] = {"solved_at": solved["env_steps"] if solved else math.inf,
                         "seconds": solved["time_s"] if solved else math.nan,
                         "final_eval": res.final_eval, "env_steps": res.history[-1]["env_steps"]}
    print(f"{'method':20s} {'steps to 475':>14s} {'seconds':>8s} {'final eval':>10s}")
    for name, r in results.items():
        print(f"{name:20s} {r['solved_at']:>14} {r['seconds']:8.1f} {r['final_eval']:10.1f}")
    return results


if __name__ == "__main__":
    main()
