"""evoopt: evolution strategies, CMA-ES and policy-gradient-aware optimizers that are all
``torch.optim.Optimizer``s, with batched population evaluation.

Swap ``torch.optim.Adam(model.parameters())`` for ``evoopt.PGPE(model.parameters(),
popsize=64)`` and the same training loop runs an evolution strategy.
"""

from . import shaping
from .algorithms import *  # noqa: F401,F403 - re-exported, see algorithms.__all__
from .algorithms import __all__ as _algorithms_all
from .gradient import *  # noqa: F401,F403
from .gradient import __all__ as _gradient_all
from .evaluation import PopulationObjective, batched_forward, loop_objective, vmap_objective
from .population import Generation, ParamLayout, Population, PopulationOptimizer, is_population_objective
from .registry import OPTIMIZERS, get_optimizer, population_optimizers, register

__version__ = "0.1.0"

__all__ = [
    "PopulationOptimizer",
    "Population",
    "ParamLayout",
    "Generation",
    "is_population_objective",
    "OPTIMIZERS",
    "register",
    "population_optimizers",
    "get_optimizer",
    "shaping",
    "vmap_objective",
    "loop_objective",
    "batched_forward",
    "PopulationObjective",
    *_algorithms_all,
    *_gradient_all,
]
