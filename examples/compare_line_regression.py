"""Fit a noisy line y = 2x + 1 with nn.Linear(1, 1): SGD, SGD with momentum, Adam, RMSprop
and LBFGS against PGPE and CMA-ES, with a loss-curve plot.

Every optimizer gets its OWN model built from the same seed, so all start from the same
parameters. (Building all optimizers from one ``model.parameters()`` generator is a
classic bug: the generator is exhausted after the first optimizer, and the others get an
empty parameter list -- or, with a list, they all train the same model in turn.)

Budgets are equal in loss evaluations on the whole data set: a gradient step costs 1
(LBFGS: one per internal closure call), a generation of a population optimizer costs
``popsize``.

    python examples/compare_line_regression.py            # 300 evaluations each
    python examples/compare_line_regression.py --tiny     # a few seconds, for the tests
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

import evoopt
from evoopt.tasks import LineRegression

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
    "lbfgs": lambda p: torch.optim.LBFGS(p, lr=1.0, max_iter=1),  # 1 evaluation per step
    "pgpe": lambda p: evoopt.PGPE(p, popsize=10, lr=0.1, sigma=0.3, seed=0),
    "cmaes": lambda p: evoopt.CMAES(p, sigma=0.5, seed=0),
}


def train(name: str, task: LineRegression, budget: int, seed: int) -> dict:
    model = task.make_model(seed)  # a fresh model per optimizer: same init for all
    opt = OPTIMIZERS[name](model.parameters())

    def closure():
        opt.zero_grad()
        loss = F.mse_loss(model(task.x), task.y)
        if torch.is_grad_enabled():  # population optimizers call it under no_grad
            loss.backward()
        return loss

    population = isinstance(opt, evoopt.PopulationOptimizer)
    objective = task.population_objective(model) if population else closure
    cost = opt.popsize if population else 1
    evals, curve = 0, [(0, float(task.loss(model).detach()))]
    while evals + cost <= budget:
        opt.step(objective)
        evals += cost
        with torch.no_grad():
            curve.append((evals, float(task.loss(model))))
    return {"curve": curve, "final_loss": curve[-1][1], "init_loss": curve[0][1],
            "slope": float(model.weight.detach().reshape(())),
            "intercept": float(model.bias.detach().reshape(()))}


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        if "curve" not in r:
            continue
        xs, ys = zip(*r["curve"])
        ax.plot(xs, ys, label=name, ls="--" if name in ("pgpe", "cmaes") else "-")
    ax.set_yscale("log")
    ax.set_xlabel("loss evaluations")
    ax.set_ylabel("training MSE")
    ax.set_title("y = 2x + 1: every optimizer from the same initial parameters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=300, help="loss evaluations per optimizer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/examples", help="directory for the plot")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--tiny", action="store_true",
                    default=bool(os.environ.get("EVOOPT_EXAMPLE_TINY")),
                    help="a tiny budget (also with EVOOPT_EXAMPLE_TINY=1)")
    args = ap.parse_args(argv)
    budget = 60 if args.tiny else args.budget
    task = LineRegression()
    results = {name: train(name, task, budget, args.seed) for name in OPTIMIZERS}
    print(f"{'optimizer':<14}{'initial':>10}{'final MSE':>12}{'slope':>9}{'intercept':>11}")
    for name, r in results.items():
        print(f"{name:<14}{r['init_loss']:>10.4f}{r['final_loss']:>12.5f}{r['slope']:>9.3f}{r['intercept']:>11.3f}")
    A = torch.cat([task.x, torch.ones_like(task.x)], 1)
    w, b = torch.linalg.lstsq(A, task.y).solution.flatten().tolist()
    best = float(F.mse_loss(task.x * w + b, task.y))
    print(f"{'least squares':<14}{'':>10}{best:>12.5f}{w:>9.3f}{b:>11.3f}")
    results["least_squares"] = {"final_loss": best, "slope": w, "intercept": b}
    if not args.no_plot:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "line_loss_curves.png")
        plot(results, path)
        print(f"plot: {path}")
        results["plot"] = path
    return results


if __name__ == "__main__":
    main()
