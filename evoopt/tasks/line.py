"""Least-squares fit of a noisy line ``y = 2 x + 1`` with ``nn.Linear(1, 1)``: the
comparison of the seed articles (SGD, SGD with momentum, Adam, ...), with every
optimizer on its own fresh model built from the same seed."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_int, check_positive
from ..evaluation import vmap_objective
from .base import Task, build_uninitialized, init_uniform_

__all__ = ["LineRegression"]


class LineRegression(Task):
    """Noisy line y = 2x + 1 (nn.Linear(1, 1), MSE); also reports test_mse to the true line.

    Args:
        num_points: training points, ``x`` uniform in [-1, 1].
        noise: standard deviation of the Gaussian noise added to ``y``.
        data_seed: seed of the data (private generator); the same for every optimizer.
    """

    name = "line"
    default_budget_evals = 500
    metric = None  # rank by the training MSE; metrics() adds test_mse, slope, intercept
    slope, intercept = 2.0, 1.0
    hyperparameters: ClassVar[dict] = {
        "sgd": {"lr": 0.1},
        "sgd-momentum": {"lr": 0.05, "momentum": 0.9},
        "adam": {"lr": 0.05},
        "rmsprop": {"lr": 0.01},
        "lbfgs": {"lr": 1.0, "max_iter": 20},
        "pgpe": {"popsize": 10, "lr": 0.1, "sigma": 0.3},
        "openai_es": {"popsize": 10, "lr": 0.1, "sigma": 0.1},
        "ars": {"popsize": 10, "lr": 0.1, "sigma": 0.1},
        "snes": {"sigma": 0.5},
        "xnes": {"sigma": 0.5},
        "cmaes": {"sigma": 0.5},
        "cem": {"popsize": 20, "sigma": 0.5},
    }

    def __init__(self, num_points: int = 100, noise: float = 0.3, data_seed: int = 0):
        self.num_points = check_int("num_points", num_points, minimum=2)
        self.noise = check_positive("noise", noise, allow_zero=True)
        self.data_seed = check_int("data_seed", data_seed, minimum=0)
        gen = torch.Generator().manual_seed(self.data_seed)
        self.x = torch.rand(self.num_points, 1, generator=gen) * 2 - 1
        self.y = self.slope * self.x + self.intercept + self.noise * torch.randn(
            self.num_points, 1, generator=gen)
        self.x_test = torch.linspace(-1, 1, 201).unsqueeze(1)
        self.y_test = self.slope * self.x_test + self.intercept

    def make_model(self, seed: int) -> nn.Module:
        return init_uniform_(build_uninitialized(lambda: nn.Linear(1, 1)), seed)

    def loss(self, model: nn.Module) -> Tensor:
        return F.mse_loss(model(self.x), self.y)

    def population_objective(self, model: nn.Module):
        return vmap_objective(model, F.mse_loss, self.x, self.y)

    @torch.no_grad()
    def metrics(self, model: nn.Module) -> dict[str, float]:
        return {
            "test_mse": float(F.mse_loss(model(self.x_test), self.y_test)),
            "slope": float(model.weight.reshape(())),
            "intercept": float(model.bias.reshape(())),
        }
