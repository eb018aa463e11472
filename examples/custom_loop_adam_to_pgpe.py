"""A plain PyTorch training loop in which Adam is swapped for PGPE by changing one line.

The loop is the usual one: a closure that zeroes the gradients, computes the loss and
back-propagates *only when gradients are enabled*. ``torch.optim.Adam`` calls it once per
step with gradients on; ``evoopt.PGPE`` calls it once per population member with gradients
off and the member loaded into the model, and leaves the distribution's center in the
model after the step. Nothing else changes.

    python examples/custom_loop_adam_to_pgpe.py                  # both, 60 steps each
    python examples/custom_loop_adam_to_pgpe.py --optimizer pgpe
    python examples/custom_loop_adam_to_pgpe.py --tiny           # a few seconds, for the tests
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from torch import nn

import evoopt
from evoopt.tasks import load_digits_split


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # a script may seed the global RNG; library code never does
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def train(which: str, steps: int, seed: int) -> dict:
    x, y, x_test, y_test = load_digits_split()
    model = make_model(seed)

    if which == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    else:  # the one-line swap:
        opt = evoopt.PGPE(model.parameters(), popsize=50, lr=0.3, sigma=0.05, seed=seed)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if torch.is_grad_enabled():  # False when a population optimizer evaluates a member
            loss.backward()
        return loss

    for step in range(steps):
        loss = opt.step(closure)  # Adam: the loss before the update; PGPE: the population's mean
        if (step + 1) % max(1, steps // 4) == 0:
            print(f"{which:5s} step {step + 1:4d}  loss {loss.item():.4f}")
    with torch.no_grad():
        train_loss = float(F.cross_entropy(model(x), y))
        test_acc = float((model(x_test).argmax(-1) == y_test).float().mean())
    evals = opt.num_evals if isinstance(opt, evoopt.PopulationOptimizer) else steps
    print(f"{which:5s} final train loss {train_loss:.4f}, test accuracy {test_acc:.3f}, "
          f"{evals} loss evaluations")
    return {"train_loss": train_loss, "test_accuracy": test_acc, "num_evals": evals}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizer", choices=["adam", "pgpe", "both"], default="both")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps (PGPE: generations)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true",
                    default=bool(os.environ.get("EVOOPT_EXAMPLE_TINY")),
                    help="a tiny budget (also with EVOOPT_EXAMPLE_TINY=1)")
    args = ap.parse_args(argv)
    steps = 8 if args.tiny else args.steps
    names = ["adam", "pgpe"] if args.optimizer == "both" else [args.optimizer]
    return {name: train(name, steps, args.seed) for name in names}


if __name__ == "__main__":
    main()
