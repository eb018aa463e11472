"""Population algorithms, one per file. Importing this package registers them all in
:data:`evoopt.OPTIMIZERS`. Each module adds its own import line below."""

__all__: list[str] = []

from .openai_es import OpenAIES  # noqa: E402

__all__ += ["OpenAIES"]

from .pgpe import PGPE  # noqa: E402

__all__ += ["PGPE"]

from .snes import SNES  # noqa: E402

__all__ += ["SNES"]

from .xnes import XNES  # noqa: E402

__all__ += ["XNES"]

from .cem import CEM  # noqa: E402

__all__ += ["CEM"]

from .ars import ARS  # noqa: E402

__all__ += ["ARS"]

from .cmaes import CMAES  # noqa: E402

__all__ += ["CMAES"]
