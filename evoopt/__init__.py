"""evoopt: evolution strategies, CMA-ES and policy-gradient-aware optimizers that are all
``torch.optim.Optimizer``s, with batched population evaluation.

Swap ``torch.optim.Adam(model.parameters())`` for ``evoopt.PGPE(model.parameters(),
popsize=64)`` and the same training loop runs an evolution strategy.
"""

from . import checks, lowrank, protocols, schedulers, shaping, tasks
from .algorithms import (
    ARS,
    CEM,
    CMAES,
    CRFMNES,
    DE,
    GA,
    LMMAES,
    PGPE,
    PSO,
    SNES,
    XNES,
    GuidedES,
    MAPElites,
    OpenAIES,
    SepCMAES,
)
from .evaluation import PopulationObjective, batched_forward, loop_objective, vmap_objective
from .gradient import ClipUp, KLAdaptive, NaturalGradient, conjugate_gradient
from .lowrank import FactoredPopulation
from .population import (
    Generation,
    ParamLayout,
    Population,
    PopulationOptimizer,
    is_population_objective,
)
from .registry import OPTIMIZERS, get_optimizer, population_optimizers, register
from .schedulers import (
    CosineAnnealingSigma,
    ExponentialSigma,
    LambdaSigma,
    SigmaScheduler,
    StepSigma,
)

__version__ = "0.1.0"

__all__ = [
    # the contract
    "PopulationOptimizer",
    "Population",
    "ParamLayout",
    "Generation",
    "is_population_objective",
    # population algorithms
    "OpenAIES",
    "PGPE",
    "SNES",
    "XNES",
    "CEM",
    "ARS",
    "CMAES",
    "DE",
    "PSO",
    "GA",
    "GuidedES",
    "SepCMAES",
    "LMMAES",
    "CRFMNES",
    "MAPElites",
    # gradient-side optimizers
    "ClipUp",
    "KLAdaptive",
    "NaturalGradient",
    "conjugate_gradient",
    # batched evaluation
    "vmap_objective",
    "loop_objective",
    "batched_forward",
    "PopulationObjective",
    "FactoredPopulation",
    # sigma schedulers (evoopt.schedulers)
    "SigmaScheduler",
    "LambdaSigma",
    "StepSigma",
    "ExponentialSigma",
    "CosineAnnealingSigma",
    # registry and modules
    "OPTIMIZERS",
    "register",
    "population_optimizers",
    "get_optimizer",
    "checks",
    "lowrank",
    "protocols",
    "schedulers",
    "shaping",
    "tasks",
]
