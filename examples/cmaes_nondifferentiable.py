"""CMA-ES on an objective with no useful gradient: the 0-1 error (1 - accuracy) of a
linear classifier on scikit-learn's 8x8 digits.

The 0-1 error is piecewise constant in the weights: its gradient is zero almost
everywhere (and torch has none through ``argmax``), so Adam cannot start. CMA-ES only
ranks the losses of its samples. With D = 650 weights we use the diagonal (sep-CMA)
variant; the whole population is evaluated in one batched call with vmap_objective.

    python examples/cmaes_nondifferentiable.py           # 150 generations
    python examples/cmaes_nondifferentiable.py --tiny    # a few seconds, for the tests
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import evoopt
from evoopt.tasks import load_digits_split
from evoopt.tasks.digits import zero_one_error  # (logits.argmax(-1) != y).float().mean()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true",
                    default=bool(os.environ.get("EVOOPT_EXAMPLE_TINY")),
                    help="a tiny budget (also with EVOOPT_EXAMPLE_TINY=1)")
    args = ap.parse_args(argv)
    generations = 15 if args.tiny else args.generations

    x, y, x_test, y_test = load_digits_split()
    gen = torch.Generator().manual_seed(args.seed)
    model = nn.Linear(64, 10)
    # a seeded generator of our own: the run does not depend on the global seed
    with torch.no_grad():
        model.weight.copy_(0.1 * torch.randn(10, 64, generator=gen))
        model.bias.zero_()

    # Adam's view: no graph through argmax, i.e. a zero gradient everywhere that matters.
    loss = zero_one_error(model(x), y)
    print(f"initial 0-1 error {float(loss):.3f}; differentiable: {loss.requires_grad}")

    opt = evoopt.CMAES(model.parameters(), sigma=0.1, diagonal=True, seed=args.seed)
    objective = evoopt.vmap_objective(model, zero_one_error, x, y)
    history = [float(loss)]
    for g in range(generations):
        opt.step(objective)  # popsize members, one batched call; the model holds the mean
        history.append(float(zero_one_error(model(x), y)))
        if (g + 1) % max(1, generations // 5) == 0:
            print(f"generation {g + 1:4d}  evaluations {opt.num_evals:6d}  "
                  f"0-1 error of the mean {history[-1]:.3f}  best member {opt.best_loss:.3f}")
    with torch.no_grad():
        test_acc = float((model(x_test).argmax(-1) == y_test).float().mean())
    print(f"final 0-1 train error {history[-1]:.3f}, test accuracy {test_acc:.3f} "
          f"after {opt.num_evals} evaluations")
    return {"initial_error": history[0], "final_error": history[-1], "test_accuracy": test_acc,
            "num_evals": opt.num_evals, "history": history}


if __name__ == "__main__":
    main()
