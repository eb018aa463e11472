r"""Black-box test functions at any dimension, batched over ``[..., D]`` inputs, and the
task wrapping one of them (the "model" is a single parameter vector ``x``).

Each function maps ``x`` of shape ``[..., D]`` to ``[...]`` and has its global minimum
0 (Styblinski-Tang is shifted so that it does too). Definitions follow Surjanovic &
Bingham, *Virtual Library of Simulation Experiments* (https://www.sfu.ca/~ssurjano/):

- sphere: :math:`\sum_i x_i^2`, minimum at 0;
- ellipsoid: :math:`\sum_i 10^{6 (i-1)/(D-1)} x_i^2` (condition number 1e6), minimum at 0;
- rosenbrock: :math:`\sum_{i<D} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`, minimum at 1;
- rastrigin: :math:`10 D + \sum_i x_i^2 - 10 \cos(2 \pi x_i)`, minimum at 0;
- ackley: :math:`-20 e^{-0.2 \sqrt{\mathrm{mean}(x^2)}} - e^{\mathrm{mean}\cos(2\pi x)} + 20 + e`,
  minimum at 0;
- styblinski_tang: :math:`\frac12 \sum_i (x_i^4 - 16 x_i^2 + 5 x_i) + 39.16616570377142\, D`,
  minimum at :math:`x_i = -2.903534...`;
- levy: with :math:`w = 1 + (x - 1)/4`,
  :math:`\sin^2(\pi w_1) + \sum_{i<D} (w_i - 1)^2 (1 + 10 \sin^2(\pi w_i + 1))
  + (w_D - 1)^2 (1 + \sin^2(2 \pi w_D))`,
  minimum at 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..checks import check_choice, check_int
from .base import Task

__all__ = ["FUNCTIONS", "Function", "FunctionTask", "VectorModel"] + [
    "sphere", "ellipsoid", "rosenbrock", "rastrigin", "ackley", "styblinski_tang", "levy"]


def sphere(x: Tensor) -> Tensor:
    return (x * x).sum(-1)


def ellipsoid(x: Tensor) -> Tensor:
    d = x.shape[-1]
    expo = torch.arange(d, dtype=x.dtype, device=x.device) * (6.0 / max(d - 1, 1))
    return (10.0**expo * x * x).sum(-1)


def rosenbrock(x: Tensor) -> Tensor:
    a, b = x[..., :-1], x[..., 1:]
    return (100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2).sum(-1)


def rastrigin(x: Tensor) -> Tensor:
    return 10.0 * x.shape[-1] + (x * x - 10.0 * torch.cos(2 * math.pi * x)).sum(-1)


def ackley(x: Tensor) -> Tensor:
    r = torch.sqrt((x * x).mean(-1))
    c = torch.cos(2 * math.pi * x).mean(-1)
    return -20.0 * torch.exp(-0.2 * r) - torch.exp(c) + 20.0 + math.e


STYBLINSKI_TANG_MIN = 39.16616570377142  # -min per coordinate, at x = -2.903534027771177
STYBLINSKI_TANG_ARGMIN = -2.903534027771177


def styblinski_tang(x: Tensor) -> Tensor:
    return 0.5 * (x**4 - 16.0 * x * x + 5.0 * x).sum(-1) + STYBLINSKI_TANG_MIN * x.shape[-1]


def levy(x: Tensor) -> Tensor:
    w = 1.0 + (x - 1.0) / 4.0
    first = torch.sin(math.pi * w[..., 0]) ** 2
    mid = ((w[..., :-1] - 1) ** 2 * (1 + 10 * torch.sin(math.pi * w[..., :-1] + 1) ** 2)).sum(-1)
    last = (w[..., -1] - 1) ** 2 * (1 + torch.sin(2 * math.pi * w[..., -1]) ** 2)
    return first + mid + last


@dataclass(frozen=True)
class Function:
    """A test function with its usual initialisation box ``[low, high]^D`` and minimiser."""

    fn: Callable[[Tensor], Tensor]
    low: float
    high: float
    argmin: float  # every coordinate of the global minimiser


FUNCTIONS: dict[str, Function] = {
    "sphere": Function(sphere, -5.12, 5.12, 0.0),
    "ellipsoid": Function(ellipsoid, -5.12, 5.12, 0.0),
    "rosenbrock": Function(rosenbrock, -2.048, 2.048, 1.0),
    "rastrigin": Function(rastrigin, -5.12, 5.12, 0.0),
    "ackley": Function(ackley, -32.768, 32.768, 0.0),
    "styblinski_tang": Function(styblinski_tang, -5.0, 5.0, STYBLINSKI_TANG_ARGMIN),
    "levy": Function(levy, -10.0, 10.0, 1.0),
}


class VectorModel(nn.Module):
    """A module whose only parameter is the search point ``x`` (``forward()`` returns it)."""

    def __init__(self, x: Tensor):
        super().__init__()
        self.x = nn.Parameter(x)

    def forward(self) -> Tensor:
        return self.x


class FunctionTask(Task):
    """A black-box test function f(x), x in R^D (sphere, rastrigin, ...), minimised.

    ``make_model(seed)`` draws ``x`` uniformly in the function's initialisation box with a
    private generator. One evaluation is one value ``f(x)``; the population objective
    evaluates ``f`` on the whole ``[P, D]`` population at once.

    Args:
        function: a key of :data:`FUNCTIONS`.
        dim: the dimension ``D``.
        dtype: float32 or float64 (default) for the search point.
    """

    differentiable = True
    metric = None  # the training loss is f itself; metrics() adds distance_to_optimum
    evaluation_unit = "one value f(x)"
    gradient_hyperparameters: ClassVar[dict] = {
        "sgd": {"lr": 1e-3},
        "sgd-momentum": {"lr": 1e-4, "momentum": 0.9},
        "adam": {"lr": 0.05},
        "rmsprop": {"lr": 0.01},
        "lbfgs": {"lr": 1.0, "max_iter": 20, "line_search_fn": "strong_wolfe"},
    }

    def __init__(self, function: str = "sphere", dim: int = 10, dtype: torch.dtype = torch.float64):
        self.function = check_choice("function", function, FUNCTIONS)
        self.dim = check_int("dim", dim, minimum=2)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Invalid dtype: {dtype} (expected torch.float32 or torch.float64)")
        self.dtype = dtype
        self.name = function
        self.default_budget_evals = 1000 * self.dim
        self.spec = FUNCTIONS[function]
        # Search widths scale with the initialisation box (width w): CMA-ES, its native
        # variants, NES, CEM and the population methods (DE, PSO, GA) start with
        # sigma = w / 5; the gradient-estimating ES take small steps in it.
        w = self.spec.high - self.spec.low
        self.hyperparameters = {
            **self.gradient_hyperparameters,
            "cmaes": {"sigma": w / 5},
            "snes": {"sigma": w / 5},
            "xnes": {"sigma": w / 5},
            "cem": {"sigma": w / 5, "popsize": 50},
            "sep_cma": {"sigma": w / 5},
            "lm_ma_es": {"sigma": w / 5},
            "cr_fm_nes": {"sigma": w / 5},
            "de": {"sigma": w / 5},
            "pso": {"sigma": w / 5},
            "ga": {"sigma": w / 5, "popsize": 50, "num_elite": 2},
            "openai_es": {"popsize": 20, "lr": w / 100, "sigma": w / 30},
            "ars": {"popsize": 20, "lr": w / 30, "sigma": w / 30},
            "pgpe": {"popsize": 20, "lr": w / 100, "sigma": w / 10},
        }

    def describe(self) -> str:
        return f"black-box {self.function} function f(x), x in R^D (default D=10; option dim)"

    def make_model(self, seed: int) -> nn.Module:
        gen = torch.Generator().manual_seed(int(seed))
        lo, hi = self.spec.low, self.spec.high
        x = torch.rand(self.dim, generator=gen, dtype=self.dtype) * (hi - lo) + lo
        return VectorModel(x)

    def loss(self, model: nn.Module) -> Tensor:
        return self.spec.fn(model())

    def population_objective(self, model: nn.Module):
        fn = self.spec.fn

        def objective(pop) -> Tensor:
            return fn(pop.flat)

        objective.is_population_objective = True
        return objective

    @torch.no_grad()
    def metrics(self, model: nn.Module) -> dict[str, float]:
        x = model()
        return {"f": float(self.spec.fn(x)),
                "distance_to_optimum": float(torch.linalg.vector_norm(x - self.spec.argmin))}
