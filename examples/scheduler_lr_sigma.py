"""torch.optim.lr_scheduler driving an evolution strategy: the step size ``lr`` of
OpenAI-ES follows a cosine schedule, and its noise width ``sigma`` decays exponentially.

Every evoopt optimizer keeps its hyperparameters in ``param_groups`` and reads them at
each generation, so any torch scheduler works on ``lr`` unchanged. torch's schedulers only
write the key ``"lr"``; for ``sigma`` a few lines do the same job (``SigmaExponential``
below mirrors ``ExponentialLR``), and they compose with the lr scheduler.

Objective: the 10-dimensional Rastrigin function (multimodal; minimum 0 at x = 0),
evaluated for the whole population in one batched call.

    python examples/scheduler_lr_sigma.py           # 300 generations
    python examples/scheduler_lr_sigma.py --tiny    # a second, for the tests
"""

from __future__ import annotations

import argparse
import os

import torch

import evoopt
from evoopt.tasks import FunctionTask


class SigmaExponential:
    """``sigma = initial_sigma * gamma ** epoch`` in every param group, like ExponentialLR."""

    def __init__(self, optimizer: torch.optim.Optimizer, gamma: float):
        self.optimizer, self.gamma, self.epoch = optimizer, gamma, 0
        for g in optimizer.param_groups:
            g.setdefault("initial_sigma", g["sigma"])

    def step(self) -> None:
        self.epoch += 1
        for g in self.optimizer.param_groups:
            g["sigma"] = g["initial_sigma"] * self.gamma**self.epoch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true",
                    default=bool(os.environ.get("EVOOPT_EXAMPLE_TINY")),
                    help="a tiny budget (also with EVOOPT_EXAMPLE_TINY=1)")
    args = ap.parse_args(argv)
    generations = 30 if args.tiny else args.generations

    task = FunctionTask("rastrigin", dim=10)
    model = task.make_model(args.seed)  # one parameter: the search point x, drawn in [-5.12, 5.12]
    opt = evoopt.OpenAIES(model.parameters(), popsize=50, lr=0.3, sigma=0.5, seed=args.seed)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=generations, eta_min=0.003)
    sigma_schedule = SigmaExponential(opt, gamma=0.01 ** (1 / generations))  # 0.5 -> 0.005
    objective = task.population_objective(model)

    f0 = float(task.loss(model).detach())
    for g in range(generations):
        opt.step(objective)
        lr_schedule.step()
        sigma_schedule.step()
        if (g + 1) % max(1, generations // 5) == 0:
            group = opt.param_groups[0]
            print(f"generation {g + 1:4d}  f(mean) {float(task.loss(model).detach()):9.4f}  "
                  f"lr {group['lr']:.4f}  sigma {group['sigma']:.4f}")
    f = float(task.loss(model).detach())
    group = opt.param_groups[0]
    print(f"f: {f0:.3f} -> {f:.4f} after {opt.num_evals} evaluations; "
          f"final lr {group['lr']:.4g}, sigma {group['sigma']:.4g}")
    return {"initial_f": f0, "final_f": f, "lr": group["lr"], "sigma": group["sigma"],
            "generations": generations, "num_evals": opt.num_evals}


if __name__ == "__main__":
    main()
