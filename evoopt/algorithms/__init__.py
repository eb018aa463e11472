"""Population algorithms, one per file. Importing this package registers them all in
:data:`evoopt.OPTIMIZERS`."""

from .ars import ARS
from .cem import CEM
from .cmaes import CMAES
from .cr_fm_nes import CRFMNES
from .de import DE
from .ga import GA
from .guided_es import GuidedES
from .lm_ma_es import LMMAES
from .map_elites import MAPElites
from .openai_es import OpenAIES
from .pgpe import PGPE
from .pso import PSO
from .sep_cma import SepCMAES
from .snes import SNES
from .xnes import XNES

__all__ = ["OpenAIES", "PGPE", "SNES", "XNES", "CEM", "ARS", "CMAES", "DE", "PSO", "GA",
           "GuidedES", "SepCMAES", "LMMAES", "CRFMNES", "MAPElites"]
