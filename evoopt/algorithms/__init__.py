"""Population algorithms, one per file. Importing this package registers them all in
:data:`evoopt.OPTIMIZERS`."""

from .ars import ARS
from .cem import CEM
from .cmaes import CMAES
from .openai_es import OpenAIES
from .pgpe import PGPE
from .snes import SNES
from .xnes import XNES

__all__ = ["OpenAIES", "PGPE", "SNES", "XNES", "CEM", "ARS", "CMAES"]
